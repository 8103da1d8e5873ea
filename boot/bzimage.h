// bzImage (Linux x86 boot protocol) parsing and loading: the setup header is validated and
// kept for the zero page; the protected-mode kernel is loaded at layout::kBzImageLoadAddr and
// entered at its 64-bit entry (load address + 0x200).
#pragma once

#include <asm/bootparam.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "memory/guest_memory.h"

namespace embervm::boot {

// Offsets into a bzImage file (Documentation/arch/x86/boot.rst).
inline constexpr size_t kSetupHeaderOffset = 0x1f1;
inline constexpr size_t kBootFlagOffset = 0x1fe;
inline constexpr size_t kJumpOffset = 0x200;     // 2-byte short jump; its second byte gives the header end
inline constexpr size_t kHeaderMagicOffset = 0x202;
inline constexpr uint16_t kBootFlag = 0xaa55;
inline constexpr uint32_t kHeaderMagic = 0x53726448;  // "HdrS"
inline constexpr uint16_t kMinBootProtocol = 0x206;   // cmdline_size
inline constexpr uint16_t kBootProtocol64 = 0x20c;    // xloadflags, XLF_KERNEL_64
inline constexpr uint64_t kEntry64Offset = 0x200;     // 64-bit entry from the protected-mode start
// The boot protocol fields read here end with init_size (0x260..0x264); the setup_header
// structure (protocol 2.15) goes on to 0x26c.
inline constexpr size_t kSetupHeaderEnd = kSetupHeaderOffset + sizeof(setup_header);
inline constexpr size_t kRequiredHeaderEnd = 0x264;

static_assert(kSetupHeaderEnd == 0x26c);
static_assert(offsetof(setup_header, boot_flag) == kBootFlagOffset - kSetupHeaderOffset);
static_assert(offsetof(setup_header, header) == kHeaderMagicOffset - kSetupHeaderOffset);
static_assert(offsetof(setup_header, init_size) == 0x260 - kSetupHeaderOffset);

struct BzImage {
    setup_header header{};                  // as found in the image (zero past its end)
    std::vector<uint8_t> header_bytes;      // image bytes [0x1f1, end of header): copied to the zero page
    uint64_t setup_size = 0;                // real-mode part: (setup_sects + 1) * 512
    uint64_t kernel_size = 0;               // protected-mode part: the rest of the file
    uint64_t load_addr = 0;                 // where the protected-mode part goes
    uint64_t runtime_end = 0;               // end of the memory the kernel uses while decompressing
};

// True if the image has the boot flag and the "HdrS" magic of a Linux boot-protocol image.
bool has_bzimage_magic(std::span<const uint8_t> image);

// Validates the setup header and sizes (for the 64-bit boot protocol) and computes where the
// kernel goes. Throws Error saying why the image is rejected.
BzImage parse_bzimage(std::span<const uint8_t> image);

// Throws Error unless [load_addr, runtime_end) lies in guest memory.
void check_bzimage_placement(const BzImage& bz, const memory::GuestMemory& mem);

// Copies the protected-mode kernel to load_addr.
// With fd >= 0 the protected-mode part is read from that file (the one `image` maps) with pread.
void load_bzimage(const BzImage& bz, std::span<const uint8_t> image, const memory::GuestMemory& mem, int fd = -1);

}  // namespace embervm::boot
