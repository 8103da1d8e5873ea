// Kernel command line checks and placement.
#include "boot/cmdline.h"

#include <array>
#include <span>

#include <fmt/format.h>

#include "boot/layout.h"
#include "vmm/sys/error.h"

namespace embervm::boot {

void check_cmdline(std::string_view cmdline, uint64_t kernel_max, std::string_view limit_source) {
    if (const auto nul = cmdline.find('\0'); nul != std::string_view::npos) {
        throw Error(fmt::format("kernel command line contains a NUL byte at offset {}", nul));
    }
    if (cmdline.size() > kernel_max) {
        throw Error(fmt::format("kernel command line is {} bytes, longer than the kernel accepts ({} bytes, {})",
                                cmdline.size(), kernel_max, limit_source));
    }
    if (cmdline.size() > layout::kCmdlineMax - 1) {
        throw Error(fmt::format("kernel command line is {} bytes, longer than the {} bytes the VMM reserves for it",
                                cmdline.size(), layout::kCmdlineMax - 1));
    }
}

uint64_t write_cmdline(const memory::GuestMemory& mem, std::string_view cmdline) {
    const memory::GuestAddress addr(layout::kCmdlineAddr);
    mem.write(addr, std::span(reinterpret_cast<const uint8_t*>(cmdline.data()), cmdline.size()));
    const std::array<uint8_t, 1> nul{0};
    mem.write(addr.unchecked_add(cmdline.size()), nul);
    return cmdline.size() + 1;
}

}  // namespace embervm::boot
