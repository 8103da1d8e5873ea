// Debug-exit port: hands the guest's chosen exit status to the VMM.
#include "devices/debug_exit.h"

#include <algorithm>

#include "vmm/sys/log.h"

namespace embervm::devices {

DebugExit::DebugExit(std::function<void(uint8_t status)> on_exit) : on_exit_(std::move(on_exit)) {}

void DebugExit::read(uint64_t /*offset*/, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), uint8_t{0});
}

void DebugExit::write(uint64_t offset, std::span<const uint8_t> data) {
    // Only an access that starts at the port counts; its low byte (little-endian) is the status.
    if (offset != 0 || data.empty()) {
        return;
    }
    const uint8_t status = data[0];
    log::info("debug exit: guest requested exit status {}", status);
    if (on_exit_) {
        on_exit_(status);
    }
}

}  // namespace embervm::devices
