// Kernel image detection and dispatch to the ELF and bzImage loaders.
#include "boot/kernel_image.h"

#include <fmt/format.h>

#include "vmm/sys/error.h"

namespace embervm::boot {

KernelImage parse_kernel_image(std::span<const uint8_t> image) {
    KernelImage k;
    if (image.empty()) {
        throw Error("kernel image: file is empty");
    }
    if (has_elf_magic(image)) {
        k.kind = KernelKind::Elf;
        k.elf = parse_elf_kernel(image);
        k.entry64 = k.elf->entry;
        k.pvh_entry = k.elf->pvh_entry;
        k.start = k.elf->start();
        k.end = k.elf->end();
        k.cmdline_max = kElfCmdlineMax;
        k.initrd_addr_max = kDefaultInitrdAddrMax;
        return k;
    }
    // Either the boot flag or the "HdrS" magic makes it look like a bzImage; parse_bzimage()
    // then says precisely what is wrong with it.
    const bool boot_flag = image.size() >= kBootFlagOffset + 2 && image[kBootFlagOffset] == (kBootFlag & 0xff) &&
                           image[kBootFlagOffset + 1] == (kBootFlag >> 8);
    const bool hdrs = image.size() >= kHeaderMagicOffset + 4 && image[kHeaderMagicOffset] == 'H' &&
                      image[kHeaderMagicOffset + 1] == 'd' && image[kHeaderMagicOffset + 2] == 'r' &&
                      image[kHeaderMagicOffset + 3] == 'S';
    if (!boot_flag && !hdrs) {
        throw Error(fmt::format("kernel image: unrecognized format ({} bytes): neither an ELF file (\\x7fELF "
                                "magic) nor a bzImage (boot flag 0xaa55 at 0x1fe and \"HdrS\" at 0x202)",
                                image.size()));
    }
    k.kind = KernelKind::BzImage;
    k.bzimage = parse_bzimage(image);
    k.entry64 = k.bzimage->load_addr + kEntry64Offset;
    k.start = k.bzimage->load_addr;
    k.end = k.bzimage->runtime_end;
    k.cmdline_max = k.bzimage->header.cmdline_size;
    k.initrd_addr_max = k.bzimage->header.initrd_addr_max;
    return k;
}

void check_kernel_placement(const KernelImage& kernel, const memory::GuestMemory& mem) {
    if (kernel.elf) {
        check_elf_placement(*kernel.elf, mem);
    } else {
        check_bzimage_placement(*kernel.bzimage, mem);
    }
}

void load_kernel_image(const KernelImage& kernel, std::span<const uint8_t> image, const memory::GuestMemory& mem,
                       int fd) {
    if (kernel.elf) {
        load_elf_segments(*kernel.elf, image, mem, fd);
    } else {
        load_bzimage(*kernel.bzimage, image, mem, fd);
    }
}

}  // namespace embervm::boot
