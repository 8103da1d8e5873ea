// The kernel command line: length checks against the kernel's and the VMM's limits, and its
// NUL-terminated copy at layout::kCmdlineAddr.
#pragma once

#include <cstdint>
#include <string_view>

#include "memory/guest_memory.h"

namespace embervm::boot {

// Throws Error if `cmdline` contains a NUL byte or is longer than `kernel_max` bytes (the
// kernel's limit without the NUL; `limit_source` says where that limit comes from) or than
// the layout::kCmdlineMax bytes the VMM reserves for it.
void check_cmdline(std::string_view cmdline, uint64_t kernel_max, std::string_view limit_source);

// Writes `cmdline` and a NUL at layout::kCmdlineAddr; returns the bytes written (with the NUL).
uint64_t write_cmdline(const memory::GuestMemory& mem, std::string_view cmdline);

}  // namespace embervm::boot
