// Initial ramdisk placement: page aligned, as high as the kernel allows.
#pragma once

#include <cstdint>

namespace embervm::boot {

// The guest address for an initrd of `size` bytes: page aligned, as high as possible so that
// it ends at or below both initrd_addr_max + 1 (the kernel's limit; initrd_addr_max is the
// highest byte address it may occupy) and `ram_end` (end of RAM below the MMIO hole), and
// starts at or above `kernel_end` rounded up to a page. Throws Error if it does not fit
// (or is empty), naming the sizes and limits.
uint64_t place_initrd(uint64_t size, uint64_t kernel_end, uint64_t initrd_addr_max, uint64_t ram_end);

}  // namespace embervm::boot
