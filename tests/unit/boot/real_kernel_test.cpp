// Tests of the boot loaders against real kernels: the guest kernel built by
// scripts/build-guest-kernel (vmlinux and bzImage in $EMBERVM_TEST_KERNEL_DIR) and a stock
// Debian bzImage fetched by scripts/fetch-debian-kernel ($EMBERVM_TEST_DEBIAN_BZIMAGE).
// Without those variables these tests FAIL (they never skip): scripts/test sets them.
#include <catch2/catch.hpp>

#include <asm/bootparam.h>
#include <elf.h>

#include <cstdlib>
#include <cstring>

#include "boot/boot.h"
#include "boot/bzimage.h"
#include "boot/kernel_image.h"
#include "tests/unit/boot/test_images.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_real_kernel_test {

using namespace embervm::boot;
using namespace embervm::boot::test;
using embervm::memory::GuestAddress;

namespace {

std::string required_env(const char* name, const char* how) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') {
        FAIL("environment variable " << name << " is not set: this test needs a real kernel. Set it to " << how
                                     << " (scripts/test does this).");
    }
    return v;
}

std::vector<uint8_t> guest_kernel_file(const char* file) {
    const std::string dir = required_env("EMBERVM_TEST_KERNEL_DIR",
                                         "the directory printed by scripts/build-guest-kernel (holds vmlinux and "
                                         "bzImage)");
    return read_file(dir + "/" + file, "test kernel");
}

std::vector<uint8_t> debian_bzimage() {
    const std::string path = required_env("EMBERVM_TEST_DEBIAN_BZIMAGE",
                                          "the vmlinuz path printed by scripts/fetch-debian-kernel");
    return read_file(path, "Debian kernel");
}

BootOptions options_for(const std::vector<uint8_t>& kernel, const std::vector<uint8_t>& initrd, bool prefer_pvh) {
    BootOptions o;
    o.kernel = kernel;
    o.initrd = std::span<const uint8_t>(initrd);
    o.cmdline = "console=ttyS0 reboot=k panic=1";
    o.vcpu_count = 2;
    o.prefer_pvh = prefer_pvh;
    return o;
}

std::vector<uint8_t> read_guest(const embervm::memory::GuestMemory& mem, uint64_t addr, size_t len) {
    std::vector<uint8_t> out(len);
    mem.read(GuestAddress(addr), out);
    return out;
}

// Every cut must be rejected with an embervm::Error, never crash or load garbage.
void check_truncations_rejected(const std::vector<uint8_t>& image, const std::vector<size_t>& cuts) {
    auto mem = make_guest_memory(256 * kMiB);
    for (const size_t cut : cuts) {
        REQUIRE(cut < image.size());
        INFO("image cut to " << cut << " of " << image.size() << " bytes");
        BootOptions o;
        o.kernel = std::span<const uint8_t>(image.data(), cut);
        o.vcpu_count = 1;
        try {
            setup_boot(mem, o);
            FAIL("a truncated image was accepted");
        } catch (const embervm::Error& e) {
            SUCCEED(e.what());
        }
    }
}

// Checks a bzImage booted through setup_boot(): kernel bytes at 1 MiB, header in the zero page.
void check_bzimage_boot(const std::vector<uint8_t>& image) {
    const BzImage bz = parse_bzimage(image);
    auto mem = make_guest_memory(256 * kMiB);
    const auto initrd = pattern(0x20000, 3);
    const BootSetup s = setup_boot(mem, options_for(image, initrd, true));
    CHECK(s.kernel_kind == KernelKind::BzImage);
    CHECK(s.protocol == EntryProtocol::Linux64);
    CHECK(s.entry == layout::kBzImageLoadAddr + 0x200);
    CHECK(s.kernel_end == bz.runtime_end);
    CHECK(s.initrd_addr >= s.kernel_end);
    CHECK(read_guest(mem, layout::kBzImageLoadAddr, bz.kernel_size) ==
          std::vector<uint8_t>(image.begin() + static_cast<ptrdiff_t>(bz.setup_size), image.end()));

    const auto bp = mem.read_obj<boot_params>(GuestAddress(layout::kZeroPageAddr));
    CHECK(val(bp.hdr.boot_flag) == 0xaa55);
    CHECK(val(bp.hdr.header) == kHeaderMagic);
    CHECK(val(bp.hdr.version) == val(bz.header.version));
    CHECK(val(bp.hdr.init_size) == val(bz.header.init_size));
    CHECK(val(bp.hdr.setup_sects) == image[0x1f1]);
    CHECK(val(bp.hdr.type_of_loader) == 0xff);
    CHECK(val(bp.hdr.cmd_line_ptr) == layout::kCmdlineAddr);
    CHECK(val(bp.hdr.ramdisk_image) == s.initrd_addr);
    CHECK(val(bp.hdr.ramdisk_size) == 0x20000);
    CHECK(bp.e820_entries == 3);

    const size_t setup_size = bz.setup_size;
    const size_t full = setup_size + uint64_t{bz.header.syssize} * 16;
    check_truncations_rejected(image, {0, 1, 0x1ff, 0x205, 0x250, setup_size - 1, setup_size, setup_size + 1,
                                       setup_size + 0x1000, full / 2, full - 16, full - 1});
}

}  // namespace

TEST_CASE("Real guest vmlinux: PVH and 64-bit entries, segments loaded", "[boot][real-kernel]") {
    const auto image = guest_kernel_file("vmlinux");
    const KernelImage k = parse_kernel_image(image);
    REQUIRE(k.kind == KernelKind::Elf);
    REQUIRE(k.pvh_entry.has_value());  // the guest kernel is built with CONFIG_PVH=y

    // Compare against the program headers read independently of the loader.
    Elf64_Ehdr eh;
    std::memcpy(&eh, image.data(), sizeof(eh));
    CHECK(k.entry64 == eh.e_entry);
    std::vector<Elf64_Phdr> loads;
    uint64_t max_file_end = 0;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        std::memcpy(&ph, image.data() + eh.e_phoff + i * sizeof(ph), sizeof(ph));
        if (ph.p_type == PT_LOAD) {
            loads.push_back(ph);
        }
        max_file_end = std::max<uint64_t>(max_file_end, ph.p_offset + ph.p_filesz);
    }
    REQUIRE(loads.size() == k.elf->segments.size());
    CHECK(*k.pvh_entry >= k.start);
    CHECK(*k.pvh_entry < k.end);

    auto mem = make_guest_memory(256 * kMiB);
    const auto initrd = pattern(0x10000, 7);
    BootSetup s = setup_boot(mem, options_for(image, initrd, true));
    CHECK(s.protocol == EntryProtocol::Pvh);
    CHECK(s.entry == *k.pvh_entry);
    for (const auto& ph : loads) {
        INFO("segment at " << std::hex << ph.p_paddr);
        CHECK(read_guest(mem, ph.p_paddr, ph.p_filesz) ==
              std::vector<uint8_t>(image.begin() + static_cast<ptrdiff_t>(ph.p_offset),
                                   image.begin() + static_cast<ptrdiff_t>(ph.p_offset + ph.p_filesz)));
        if (ph.p_memsz > ph.p_filesz) {
            CHECK(read_guest(mem, ph.p_paddr + ph.p_filesz, ph.p_memsz - ph.p_filesz) ==
                  std::vector<uint8_t>(ph.p_memsz - ph.p_filesz, 0));
        }
    }
    CHECK(s.initrd_addr >= s.kernel_end);

    s = setup_boot(mem, options_for(image, initrd, false));
    CHECK(s.protocol == EntryProtocol::Linux64);
    CHECK(s.entry == eh.e_entry);

    // Cuts inside the ELF header, the program headers and the segment data; the section
    // headers at the end of a vmlinux are not needed, so cuts must land before max_file_end.
    check_truncations_rejected(image, {0, 3, 10, 63, 64, 64 + size_t{56} * eh.e_phnum - 1, loads[0].p_offset + 1,
                                       max_file_end / 2, max_file_end - 1});
}

TEST_CASE("Real guest bzImage loads through the 64-bit boot protocol", "[boot][real-kernel]") {
    const auto image = guest_kernel_file("bzImage");
    check_bzimage_boot(image);
}

TEST_CASE("Stock Debian bzImage loads through the 64-bit boot protocol", "[boot][real-kernel]") {
    const auto image = debian_bzimage();
    const BzImage bz = parse_bzimage(image);
    CHECK(val(bz.header.version) >= 0x20c);
    CHECK(val(bz.header.relocatable_kernel) == 1);
    check_bzimage_boot(image);
}

}  // namespace unit_real_kernel_test
