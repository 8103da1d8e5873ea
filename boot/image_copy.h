// Copying part of a kernel or initrd file into guest memory, from wherever the loader has it.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "memory/guest_memory.h"

namespace embervm::boot {

// Puts `len` bytes of the file at `offset` into guest memory at `addr`: read from `fd` straight
// into guest memory when it is >= 0 (BootOptions::kernel_fd / initrd_fd), else copied from
// `image`, the file's bytes. The caller has checked the range against the file's size.
inline void copy_image(const memory::GuestMemory& mem, memory::GuestAddress addr, std::span<const uint8_t> image,
                       uint64_t offset, uint64_t len, int fd, std::string_view what) {
    if (fd >= 0) {
        mem.read_from_file(addr, len, fd, offset, what);
    } else {
        mem.write(addr, image.subspan(offset, len));
    }
}

}  // namespace embervm::boot
