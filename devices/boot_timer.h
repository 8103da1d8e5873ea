// Boot-timer MMIO device (layout::kBootTimerAddr): the guest writes the magic value 123 at
// offset 0 when it has booted (e.g. from its init), and the VMM learns how long that took.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>

#include "devices/bus.h"

namespace embervm::devices {

class BootTimer : public vmm::BusDevice {
public:
    static constexpr uint64_t kSize = 0x1000;
    static constexpr uint64_t kMagic = 123;

    // `start` is when the VMM started; measurements are relative to it.
    explicit BootTimer(std::chrono::steady_clock::time_point start);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Time from `start` to the guest's last magic write; nullopt until there was one.
    std::optional<std::chrono::microseconds> boot_time() const;

private:
    const std::chrono::steady_clock::time_point start_;
    mutable std::mutex mutex_;
    std::optional<std::chrono::microseconds> last_;
};

}  // namespace embervm::devices
