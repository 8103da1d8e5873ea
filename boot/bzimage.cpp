// bzImage setup-header validation and loading of the protected-mode kernel.
#include "boot/bzimage.h"

#include <algorithm>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "boot/image_copy.h"
#include "boot/layout.h"
#include "boot/memory_map.h"
#include "vmm/sys/error.h"

namespace embervm::boot {

namespace {

[[noreturn]] void fail(const std::string& why) { throw Error("kernel image: bzImage " + why); }

template <typename T>
T read_at(std::span<const uint8_t> bytes, uint64_t off) {
    T v;
    std::memcpy(&v, bytes.data() + off, sizeof(T));
    return v;
}

std::string version_string(uint16_t v) { return fmt::format("{}.{:02}", v >> 8, v & 0xff); }

}  // namespace

bool has_bzimage_magic(std::span<const uint8_t> image) {
    return image.size() >= kHeaderMagicOffset + 4 && read_at<uint16_t>(image, kBootFlagOffset) == kBootFlag &&
           read_at<uint32_t>(image, kHeaderMagicOffset) == kHeaderMagic;
}

BzImage parse_bzimage(std::span<const uint8_t> image) {
    if (image.size() < kHeaderMagicOffset + 4) {
        fail(fmt::format("truncated: image is {:#x} bytes, the setup header magic is at {:#x}", image.size(),
                         kHeaderMagicOffset));
    }
    if (const auto flag = read_at<uint16_t>(image, kBootFlagOffset); flag != kBootFlag) {
        fail(fmt::format("boot flag at {:#x} is {:#06x}, expected {:#06x}", kBootFlagOffset, flag, kBootFlag));
    }
    if (const auto magic = read_at<uint32_t>(image, kHeaderMagicOffset); magic != kHeaderMagic) {
        fail(fmt::format("setup header magic at {:#x} is {:#010x}, expected {:#010x} (\"HdrS\"): boot protocol "
                         "older than 2.00 or not a Linux kernel",
                         kHeaderMagicOffset, magic, kHeaderMagic));
    }
    if (image.size() < kSetupHeaderEnd) {
        fail(fmt::format("truncated: image is {:#x} bytes, the setup header ends at {:#x}", image.size(),
                         kSetupHeaderEnd));
    }

    BzImage bz;
    // The header ends where the jump at 0x200 lands; bytes past it are not the header's.
    const size_t header_end = kHeaderMagicOffset + image[kJumpOffset + 1];
    const size_t copy_end = std::min(header_end, kSetupHeaderEnd);
    std::memcpy(&bz.header, image.data() + kSetupHeaderOffset, copy_end - kSetupHeaderOffset);
    bz.header_bytes.assign(image.begin() + kSetupHeaderOffset, image.begin() + static_cast<ptrdiff_t>(copy_end));
    if (header_end < kRequiredHeaderEnd) {
        fail(fmt::format("setup header ends at {:#x} (the jump at {:#x} lands there), before the boot protocol "
                         "{} fields (need {:#x})",
                         header_end, kJumpOffset, version_string(kBootProtocol64), kRequiredHeaderEnd));
    }
    // Copies of the packed fields used below (a packed field cannot bind to a reference).
    const uint16_t version = bz.header.version;
    const uint16_t xloadflags = bz.header.xloadflags;
    const uint8_t loadflags = bz.header.loadflags;
    const uint8_t raw_setup_sects = bz.header.setup_sects;
    const uint32_t syssize = bz.header.syssize;
    const uint32_t init_size = bz.header.init_size;
    const uint64_t pref_address = bz.header.pref_address;
    const uint64_t align = bz.header.kernel_alignment;
    const bool relocatable = bz.header.relocatable_kernel != 0;
    if (version < kMinBootProtocol) {
        fail(fmt::format("boot protocol {} is too old: need at least {}", version_string(version),
                         version_string(kMinBootProtocol)));
    }
    if (version < kBootProtocol64) {
        fail(fmt::format("boot protocol {} has no 64-bit entry point: the 64-bit boot protocol needs {}",
                         version_string(version), version_string(kBootProtocol64)));
    }
    if ((xloadflags & XLF_KERNEL_64) == 0) {
        fail(fmt::format("has no 64-bit entry point (XLF_KERNEL_64 not set in xloadflags {:#x})", xloadflags));
    }
    if ((loadflags & LOADED_HIGH) == 0) {
        fail(fmt::format("is a zImage (LOADED_HIGH not set in loadflags {:#x}): only kernels loaded at 1 MiB are "
                         "supported",
                         loadflags));
    }
    const uint64_t setup_sects = raw_setup_sects == 0 ? 4 : raw_setup_sects;  // 0 means 4 (boot.rst)
    bz.setup_size = (setup_sects + 1) * 512;
    if (image.size() <= bz.setup_size) {
        fail(fmt::format("truncated: image is {:#x} bytes but the real-mode setup part alone is {:#x} bytes "
                         "(setup_sects {}); no protected-mode kernel",
                         image.size(), bz.setup_size, raw_setup_sects));
    }
    bz.kernel_size = image.size() - bz.setup_size;
    if (bz.kernel_size <= kEntry64Offset) {
        fail(fmt::format("truncated: protected-mode kernel is {:#x} bytes, too short to hold the 64-bit entry at "
                         "offset {:#x}",
                         bz.kernel_size, kEntry64Offset));
    }
    const uint64_t declared = uint64_t{syssize} * 16;
    if (bz.kernel_size < declared) {
        fail(fmt::format("truncated: protected-mode kernel is {:#x} bytes but the header's syssize says {:#x}",
                         bz.kernel_size, declared));
    }
    if (init_size == 0) {
        fail("setup header has init_size 0");
    }
    if (align == 0 || (align & (align - 1)) != 0) {
        fail(fmt::format("kernel_alignment {:#x} is not a power of two", align));
    }

    // Where the kernel lives while it decompresses itself (arch/x86/boot/compressed/head_64.S):
    // a relocatable kernel decompresses at its load address aligned up to kernel_alignment,
    // but never below LOAD_PHYSICAL_ADDR (== pref_address); a non-relocatable one at
    // LOAD_PHYSICAL_ADDR. Either way it uses init_size bytes from there.
    bz.load_addr = layout::kBzImageLoadAddr;
    const uint64_t aligned_load = (bz.load_addr + align - 1) & ~(align - 1);
    const uint64_t decompress_at =
        relocatable ? std::max(aligned_load, pref_address) : std::max(bz.load_addr, pref_address);
    if (decompress_at + init_size < decompress_at) {
        fail(fmt::format("pref_address {:#x} + init_size {:#x} overflows", pref_address, init_size));
    }
    bz.runtime_end = std::max(bz.load_addr + bz.kernel_size, decompress_at + init_size);
    return bz;
}

void check_bzimage_placement(const BzImage& bz, const memory::GuestMemory& mem) {
    if (!mem.check_range(memory::GuestAddress(bz.load_addr), bz.runtime_end - bz.load_addr)) {
        throw Error(fmt::format("kernel image: bzImage needs guest RAM [{:#x}, {:#x}) (protected-mode kernel of "
                                "{:#x} bytes, init_size {:#x} at pref_address {:#x}), outside guest RAM ({})",
                                bz.load_addr, bz.runtime_end, bz.kernel_size, uint32_t{bz.header.init_size},
                                uint64_t{bz.header.pref_address}, describe_guest_ram(mem)));
    }
}

void load_bzimage(const BzImage& bz, std::span<const uint8_t> image, const memory::GuestMemory& mem, int fd) {
    copy_image(mem, memory::GuestAddress(bz.load_addr), image, bz.setup_size, bz.kernel_size, fd, "kernel image");
}

}  // namespace embervm::boot
