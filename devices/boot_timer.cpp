// Boot-timer device: measures the time from VMM start to the guest's "booted" write.
#include "devices/boot_timer.h"

#include <algorithm>

#include "vmm/sys/log.h"

namespace embervm::devices {

BootTimer::BootTimer(std::chrono::steady_clock::time_point start) : start_(start) {}

void BootTimer::read(uint64_t /*offset*/, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), uint8_t{0});
}

void BootTimer::write(uint64_t offset, std::span<const uint8_t> data) {
    if (offset != 0 || data.empty() || data.size() > 8) {
        return;
    }
    uint64_t value = 0;  // little-endian, any width
    for (size_t i = 0; i < data.size(); ++i) {
        value |= uint64_t{data[i]} << (8 * i);
    }
    if (value != kMagic) {
        return;
    }
    const auto elapsed =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start_);
    {
        std::lock_guard lock(mutex_);
        last_ = elapsed;
    }
    log::info("guest boot time: {} us since VMM start", elapsed.count());
}

std::optional<std::chrono::microseconds> BootTimer::boot_time() const {
    std::lock_guard lock(mutex_);
    return last_;
}

}  // namespace embervm::devices
