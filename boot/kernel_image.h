// Kernel image detection (ELF vmlinux or bzImage) and the facts about a kernel that the rest
// of the boot set-up needs: entry points, memory footprint, command line and initrd limits.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "boot/boot.h"
#include "boot/bzimage.h"
#include "boot/elf_loader.h"
#include "memory/guest_memory.h"

namespace embervm::boot {

// x86 COMMAND_LINE_SIZE is 2048 including the NUL; an ELF vmlinux has no header saying so.
inline constexpr uint64_t kElfCmdlineMax = 2047;
// The boot protocol's initrd_addr_max for kernels that do not state one (boot.rst).
inline constexpr uint64_t kDefaultInitrdAddrMax = 0x37ffffff;

struct KernelImage {
    KernelKind kind = KernelKind::Elf;
    uint64_t entry64 = 0;                // 64-bit boot protocol entry
    std::optional<uint64_t> pvh_entry;   // PVH entry (ELF kernels with the Xen note)
    uint64_t start = 0;                  // guest physical range used by the kernel at run time
    uint64_t end = 0;
    uint64_t cmdline_max = 0;            // longest command line it accepts, without the NUL
    uint64_t initrd_addr_max = 0;        // highest address the initrd may occupy (inclusive)
    std::optional<ElfKernel> elf;        // set for KernelKind::Elf
    std::optional<BzImage> bzimage;      // set for KernelKind::BzImage
};

// Detects the format and validates the image. Throws Error for anything that is not a valid
// ELF64 x86-64 kernel or 64-bit capable bzImage.
KernelImage parse_kernel_image(std::span<const uint8_t> image);

// Throws Error unless the kernel's run-time footprint fits in guest memory above 1 MiB.
void check_kernel_placement(const KernelImage& kernel, const memory::GuestMemory& mem);

// Copies the kernel into guest memory (after check_kernel_placement()): from `image`, or, if
// `fd` >= 0, read from that file (the one `image` maps) straight into guest memory.
void load_kernel_image(const KernelImage& kernel, std::span<const uint8_t> image, const memory::GuestMemory& mem,
                       int fd = -1);

}  // namespace embervm::boot
