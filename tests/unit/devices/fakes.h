// Test doubles shared by the device tests: an IrqLine that counts edges and byte-wide
// register access helpers over the BusDevice interface.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "devices/irq.h"
#include "devices/bus.h"

namespace embervm::devices::testing {

class CountingIrq : public IrqLine {
public:
    void trigger() override { ++count_; }
    int count() const { return count_.load(); }
    // Returns the number of edges since the last call.
    int take() { return count_.exchange(0); }

private:
    std::atomic<int> count_{0};
};

inline uint8_t read8(vmm::BusDevice& dev, uint64_t offset) {
    std::array<uint8_t, 1> b{};
    dev.read(offset, b);
    return b[0];
}

inline void write8(vmm::BusDevice& dev, uint64_t offset, uint8_t value) {
    const std::array<uint8_t, 1> b{value};
    dev.write(offset, b);
}

}  // namespace embervm::devices::testing
