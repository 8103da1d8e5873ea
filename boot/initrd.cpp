// Initial ramdisk placement.
#include "boot/initrd.h"

#include <algorithm>

#include <fmt/format.h>

#include "vmm/sys/error.h"

namespace embervm::boot {

namespace {
constexpr uint64_t kInitrdAlign = 0x1000;
}

uint64_t place_initrd(uint64_t size, uint64_t kernel_end, uint64_t initrd_addr_max, uint64_t ram_end) {
    if (size == 0) {
        throw Error("initrd is empty");
    }
    const uint64_t limit = initrd_addr_max == UINT64_MAX ? ram_end : std::min(ram_end, initrd_addr_max + 1);
    const uint64_t lowest = (kernel_end + kInitrdAlign - 1) & ~(kInitrdAlign - 1);
    if (size > limit || ((limit - size) & ~(kInitrdAlign - 1)) < lowest) {
        throw Error(fmt::format("initrd of {:#x} bytes ({} MiB) does not fit between the kernel's end {:#x} and "
                                "{:#x} (the lower of the kernel's initrd_addr_max + 1 = {:#x} and the end of low "
                                "guest RAM {:#x}); give the VM more memory or use a smaller initrd",
                                size, (size + (1 << 20) - 1) >> 20, lowest, limit, initrd_addr_max + 1, ram_end));
    }
    return (limit - size) & ~(kInitrdAlign - 1);
}

}  // namespace embervm::boot
