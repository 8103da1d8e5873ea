// Tests for boot/bzimage: setup header validation, loading and the run-time footprint.
#include <catch2/catch.hpp>

#include "boot/boot.h"
#include "boot/bzimage.h"
#include "boot/kernel_image.h"
#include "tests/unit/boot/test_images.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_bzimage_test {

using namespace embervm::boot;
using namespace embervm::boot::test;
using Catch::Matchers::Contains;
using embervm::memory::GuestAddress;

namespace {

BootOptions options_for(const std::vector<uint8_t>& kernel) {
    BootOptions o;
    o.kernel = kernel;
    o.cmdline = "console=ttyS0";
    o.vcpu_count = 2;
    o.prefer_pvh = true;  // ignored for a bzImage
    return o;
}

void check_rejected(const std::vector<uint8_t>& image, const std::string& what) {
    INFO("expected rejection: " << what);
    CHECK_THROWS_WITH(parse_kernel_image(image), Contains(what));
    CHECK_THROWS_AS(parse_kernel_image(image), embervm::Error);
}

}  // namespace

TEST_CASE("A valid bzImage is loaded at 1 MiB and entered at +0x200 through the 64-bit protocol",
          "[boot][bzimage]") {
    const auto image = make_bzimage();
    const BzImage bz = parse_bzimage(image);
    CHECK(bz.setup_size == 5 * 512);
    CHECK(bz.kernel_size == 0x4000);
    CHECK(bz.load_addr == layout::kBzImageLoadAddr);
    // Relocatable: decompresses at max(align_up(1 MiB, 2 MiB), pref_address) = 16 MiB, uses init_size.
    CHECK(bz.runtime_end == 0x1000000 + 0x800000);
    CHECK(bz.header_bytes.size() == 0x26c - 0x1f1);

    auto mem = make_guest_memory(128 * kMiB);
    const BootSetup setup = setup_boot(mem, options_for(image));
    CHECK(setup.kernel_kind == KernelKind::BzImage);
    CHECK(setup.protocol == EntryProtocol::Linux64);
    CHECK(setup.entry == layout::kBzImageLoadAddr + 0x200);
    CHECK(setup.boot_info_addr == layout::kZeroPageAddr);
    CHECK(setup.kernel_start == layout::kBzImageLoadAddr);
    CHECK(setup.kernel_end == 0x1800000);

    std::vector<uint8_t> loaded(0x4000);
    mem.read(GuestAddress(layout::kBzImageLoadAddr), loaded);
    CHECK(loaded == std::vector<uint8_t>(image.begin() + 5 * 512, image.end()));
}

TEST_CASE("bzImage run-time footprint follows the decompressor's placement rules", "[boot][bzimage]") {
    BzImageSpec spec;
    SECTION("non-relocatable: decompresses at pref_address") {
        spec.relocatable = 0;
        spec.pref_address = 0x2000000;
        CHECK(parse_bzimage(make_bzimage(spec)).runtime_end == 0x2000000 + 0x800000);
    }
    SECTION("relocatable with a low pref_address: load address aligned up to kernel_alignment") {
        spec.pref_address = 0x100000;
        spec.kernel_alignment = 0x400000;
        CHECK(parse_bzimage(make_bzimage(spec)).runtime_end == 0x400000 + 0x800000);
    }
    SECTION("a protected-mode part larger than the decompression area") {
        spec.pref_address = 0x100000;
        spec.init_size = 0x1000;
        spec.kernel_size = 0x8000;
        CHECK(parse_bzimage(make_bzimage(spec)).runtime_end == 0x200000 + 0x1000);
        spec.kernel_alignment = 0x1000;
        CHECK(parse_bzimage(make_bzimage(spec)).runtime_end == 0x100000 + 0x8000);
    }
}

TEST_CASE("setup_sects 0 means 4", "[boot][bzimage]") {
    BzImageSpec spec;
    spec.setup_sects = 0;
    const auto image = make_bzimage(spec);
    const BzImage bz = parse_bzimage(image);
    CHECK(bz.setup_size == 5 * 512);
    CHECK(bz.kernel_size == image.size() - 5 * 512);
}

TEST_CASE("bzImage error messages say precisely what is wrong", "[boot][bzimage]") {
    const auto good = make_bzimage();
    SECTION("bad boot flag") {
        auto img = good;
        poke<uint16_t>(img, 0x1fe, 0x1234);
        check_rejected(img, "kernel image: bzImage boot flag at 0x1fe is 0x1234, expected 0xaa55");
    }
    SECTION("bad HdrS magic") {
        auto img = good;
        img[0x203] = 'X';
        check_rejected(img, "setup header magic at 0x202 is 0x53725848, expected 0x53726448 (\"HdrS\")");
    }
    SECTION("neither magic: not recognized at all") {
        auto img = good;
        poke<uint16_t>(img, 0x1fe, 0);
        img[0x202] = 0;
        check_rejected(img, "unrecognized format");
    }
    SECTION("old protocol") {
        BzImageSpec spec;
        spec.version = 0x205;
        check_rejected(make_bzimage(spec), "boot protocol 2.05 is too old: need at least 2.06");
        spec.version = 0x20b;
        check_rejected(make_bzimage(spec), "boot protocol 2.11 has no 64-bit entry point");
    }
    SECTION("no 64-bit support") {
        BzImageSpec spec;
        spec.xloadflags = 0x02;
        check_rejected(make_bzimage(spec), "has no 64-bit entry point (XLF_KERNEL_64 not set in xloadflags 0x2)");
    }
    SECTION("zImage") {
        BzImageSpec spec;
        spec.loadflags = 0;
        check_rejected(make_bzimage(spec), "is a zImage (LOADED_HIGH not set");
    }
    SECTION("header shorter than protocol 2.12 needs") {
        BzImageSpec spec;
        spec.jump_target = 0x40;
        check_rejected(make_bzimage(spec), "setup header ends at 0x242");
    }
    SECTION("truncated inside the header") {
        check_rejected(std::vector<uint8_t>(good.begin(), good.begin() + 0x1f0), "unrecognized format (496 bytes)");
        check_rejected(std::vector<uint8_t>(good.begin(), good.begin() + 0x200),
                       "bzImage truncated: image is 0x200 bytes, the setup header magic is at 0x202");
        check_rejected(std::vector<uint8_t>(good.begin(), good.begin() + 0x250),
                       "bzImage truncated: image is 0x250 bytes, the setup header ends at 0x26c");
    }
    SECTION("truncated inside the setup code") {
        check_rejected(std::vector<uint8_t>(good.begin(), good.begin() + 5 * 512),
                       "the real-mode setup part alone is 0xa00 bytes (setup_sects 4)");
    }
    SECTION("truncated protected-mode part") {
        check_rejected(std::vector<uint8_t>(good.begin(), good.end() - 1),
                       "protected-mode kernel is 0x3fff bytes but the header's syssize says 0x4000");
    }
    SECTION("protected-mode part too short to hold the 64-bit entry") {
        BzImageSpec spec;
        spec.kernel_size = 0x200;
        check_rejected(make_bzimage(spec),
                       "protected-mode kernel is 0x200 bytes, too short to hold the 64-bit entry at offset 0x200");
    }
    SECTION("bad init_size and kernel_alignment") {
        BzImageSpec spec;
        spec.init_size = 0;
        check_rejected(make_bzimage(spec), "init_size 0");
        spec = {};
        spec.kernel_alignment = 0x30000;
        check_rejected(make_bzimage(spec), "kernel_alignment 0x30000 is not a power of two");
    }
    SECTION("trailing data (e.g. an appended signature) is fine") {
        auto img = good;
        img.resize(img.size() + 1000, 0x55);
        CHECK(parse_bzimage(img).kernel_size == 0x4000 + 1000);
    }
}

TEST_CASE("bzImage must fit in guest memory while decompressing", "[boot][bzimage]") {
    auto mem = make_guest_memory(16 * kMiB);  // init_size 8 MiB at 16 MiB does not fit
    const auto image = make_bzimage();
    CHECK_THROWS_WITH(setup_boot(mem, options_for(image)),
                      Contains("bzImage needs guest RAM [0x100000, 0x1800000)") &&
                          Contains("outside guest RAM ([0x0, 0x1000000))"));
}

TEST_CASE("bzImage command line limit comes from its cmdline_size", "[boot][bzimage][cmdline]") {
    BzImageSpec spec;
    spec.cmdline_size = 10;
    const auto image = make_bzimage(spec);
    auto mem = make_guest_memory(128 * kMiB);
    auto opts = options_for(image);
    opts.cmdline = "0123456789";
    CHECK_NOTHROW(setup_boot(mem, opts));
    opts.cmdline = "0123456789a";
    CHECK_THROWS_WITH(setup_boot(mem, opts),
                      Contains("kernel command line is 11 bytes, longer than the kernel accepts (10 bytes, "
                               "cmdline_size in the bzImage setup header)"));
}

}  // namespace unit_bzimage_test
