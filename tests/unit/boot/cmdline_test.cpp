// Tests for boot/cmdline: length limits and the NUL-terminated copy in guest memory.
#include <catch2/catch.hpp>

#include "boot/boot.h"
#include "boot/cmdline.h"
#include "boot/kernel_image.h"
#include "tests/unit/boot/test_images.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_cmdline_test {

using namespace embervm::boot;
using namespace embervm::boot::test;
using Catch::Matchers::Contains;
using embervm::memory::GuestAddress;

TEST_CASE("The command line is written NUL-terminated at kCmdlineAddr", "[boot][cmdline]") {
    auto mem = make_guest_memory(16 * kMiB);
    mem.fill(GuestAddress(layout::kCmdlineAddr), 64, 0xee);
    CHECK(write_cmdline(mem, "root=/dev/vda") == 14);
    std::vector<uint8_t> got(15);
    mem.read(GuestAddress(layout::kCmdlineAddr), got);
    CHECK(std::string(got.begin(), got.end()) == std::string("root=/dev/vda\0\xee", 15));

    CHECK(write_cmdline(mem, "") == 1);
    CHECK(mem.read_obj<uint8_t>(GuestAddress(layout::kCmdlineAddr)) == 0);
}

TEST_CASE("Command lines longer than the kernel or the VMM allow are rejected", "[boot][cmdline]") {
    CHECK_NOTHROW(check_cmdline(std::string(2047, 'x'), kElfCmdlineMax, "limit"));
    CHECK_THROWS_WITH(check_cmdline(std::string(2048, 'x'), kElfCmdlineMax, "COMMAND_LINE_SIZE"),
                      Contains("kernel command line is 2048 bytes, longer than the kernel accepts (2047 bytes, "
                               "COMMAND_LINE_SIZE)"));
    // The kernel may accept more than the VMM reserves.
    CHECK_NOTHROW(check_cmdline(std::string(layout::kCmdlineMax - 1, 'x'), UINT32_MAX, "limit"));
    CHECK_THROWS_WITH(check_cmdline(std::string(layout::kCmdlineMax, 'x'), UINT32_MAX, "limit"),
                      Contains("longer than the 65535 bytes the VMM reserves for it"));
    CHECK_THROWS_WITH(check_cmdline(std::string("a\0b", 3), 100, "limit"),
                      Contains("contains a NUL byte at offset 1"));
}

TEST_CASE("setup_boot rejects a too long command line before touching guest memory", "[boot][cmdline]") {
    auto mem = make_guest_memory(16 * kMiB);
    const auto kernel = elf_kernel(false).build();
    BootOptions o;
    o.kernel = kernel;
    o.cmdline = std::string(2048, 'x');
    CHECK_THROWS_WITH(setup_boot(mem, o), Contains("COMMAND_LINE_SIZE - 1 for an ELF vmlinux"));
    CHECK(mem.read_obj<uint64_t>(GuestAddress(kElfCodeAddr)) == 0);  // kernel not loaded
    o.cmdline = std::string(2047, 'x');
    CHECK(setup_boot(mem, o).cmdline_size == 2048);
}

}  // namespace unit_cmdline_test
