// Debug-exit port (layout::kDebugExitPort): a test guest writes a status byte and the VMM
// ends with that exit status. Reads return 0.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "devices/bus.h"

namespace embervm::devices {

class DebugExit : public vmm::BusDevice {
public:
    // Insert with this length so that outb, outw and outl at the port all reach the device.
    static constexpr uint64_t kSize = 4;

    // `on_exit` runs on the writing vCPU's thread with the low byte of the value written at
    // offset 0, whatever the access width.
    explicit DebugExit(std::function<void(uint8_t status)> on_exit);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    const std::function<void(uint8_t)> on_exit_;
};

}  // namespace embervm::devices
