// Tests for boot/initrd: placement below the kernel's limit and the top of low RAM.
#include <catch2/catch.hpp>

#include "boot/boot.h"
#include "boot/initrd.h"
#include "tests/unit/boot/test_images.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_initrd_test {

using namespace embervm::boot;
using namespace embervm::boot::test;
using Catch::Matchers::Contains;
using embervm::memory::GuestAddress;

TEST_CASE("place_initrd: page aligned, as high as allowed", "[boot][initrd]") {
    // Limited by RAM.
    CHECK(place_initrd(0x1000, 0x2000000, 0x37ffffff, 128 * kMiB) == 128 * kMiB - 0x1000);
    CHECK(place_initrd(0x1001, 0x2000000, 0x37ffffff, 128 * kMiB) == 128 * kMiB - 0x2000);
    // Limited by initrd_addr_max (inclusive: the last byte may be at 0x37ffffff).
    CHECK(place_initrd(0x1000, 0x2000000, 0x37ffffff, 3 * kGiB) == 0x38000000 - 0x1000);
    CHECK(place_initrd(0x1000, 0x2000000, 0x37fffffe, 3 * kGiB) == 0x38000000 - 0x2000);
    // Just fits above the kernel (kernel end rounded up to a page).
    CHECK(place_initrd(0x2000, 0x1ffe001, 0x37ffffff, 0x2002000) == 0x1fff000 + 0x1000);
}

TEST_CASE("place_initrd: errors when it does not fit", "[boot][initrd]") {
    CHECK_THROWS_WITH(place_initrd(0x4000, 0x1ffe001, 0x37ffffff, 0x2002000),
                      Contains("initrd of 0x4000 bytes (1 MiB) does not fit between the kernel's end 0x1fff000 and "
                               "0x2002000"));
    CHECK_THROWS_WITH(place_initrd(256 * kMiB, 0x2000000, 0x37ffffff, 128 * kMiB), Contains("does not fit"));
    CHECK_THROWS_WITH(place_initrd(0, 0x2000000, 0x37ffffff, 128 * kMiB), Contains("initrd is empty"));
}

TEST_CASE("setup_boot places and copies the initrd", "[boot][initrd]") {
    const auto kernel = elf_kernel(false).build();
    const auto initrd = pattern(0x100123, 8);
    BootOptions o;
    o.kernel = kernel;
    o.initrd = std::span<const uint8_t>(initrd);

    SECTION("small guest: at the top of RAM") {
        auto mem = make_guest_memory(64 * kMiB);
        const BootSetup s = setup_boot(mem, o);
        CHECK(s.initrd_addr == ((64 * kMiB - initrd.size()) & ~uint64_t{0xfff}));
        CHECK(s.initrd_size == initrd.size());
        std::vector<uint8_t> got(initrd.size());
        mem.read(GuestAddress(s.initrd_addr), got);
        CHECK(got == initrd);
    }
    SECTION("large guest: below an ELF kernel's default initrd_addr_max") {
        auto mem = make_guest_memory(2 * kGiB);
        const BootSetup s = setup_boot(mem, o);
        CHECK(s.initrd_addr + s.initrd_size <= 0x38000000);
        CHECK(s.initrd_addr == ((0x38000000 - initrd.size()) & ~uint64_t{0xfff}));
        CHECK(s.initrd_addr % 0x1000 == 0);
        CHECK(s.initrd_addr >= s.kernel_end);
    }
    SECTION("bzImage: below its initrd_addr_max, above its run-time footprint") {
        BzImageSpec spec;
        spec.initrd_addr_max = 0x3fffffff;
        const auto bz = make_bzimage(spec);
        o.kernel = bz;
        auto mem = make_guest_memory(4 * kGiB);
        const BootSetup s = setup_boot(mem, o);
        CHECK(s.initrd_addr == ((0x40000000 - initrd.size()) & ~uint64_t{0xfff}));
    }
    SECTION("too little memory above the kernel") {
        auto mem = make_guest_memory(3 * kMiB);
        CHECK_THROWS_WITH(setup_boot(mem, o), Contains("initrd of 0x100123 bytes (2 MiB) does not fit"));
    }
}

}  // namespace unit_initrd_test
