// Tests for boot/zero_page: e820 map, command line and initrd pointers, setup header copy.
#include <catch2/catch.hpp>

#include <asm/bootparam.h>

#include <algorithm>

#include "boot/boot.h"
#include "boot/bzimage.h"
#include "boot/memory_map.h"
#include "boot/zero_page.h"
#include "tests/unit/boot/test_images.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_zero_page_test {

using namespace embervm::boot;
using namespace embervm::boot::test;
using Catch::Matchers::Contains;
using embervm::memory::GuestAddress;

namespace {

boot_params read_zero_page(const embervm::memory::GuestMemory& mem) {
    return mem.read_obj<boot_params>(GuestAddress(layout::kZeroPageAddr));
}

std::vector<MemoryMapEntry> e820_of(const boot_params& bp) {
    std::vector<MemoryMapEntry> out;
    for (unsigned i = 0; i < bp.e820_entries; i++) {
        out.push_back({val(bp.e820_table[i].addr), val(bp.e820_table[i].size),
                       static_cast<MemoryType>(val(bp.e820_table[i].type))});
    }
    return out;
}

BootOptions options_for(const std::vector<uint8_t>& kernel, const std::vector<uint8_t>* initrd = nullptr) {
    BootOptions o;
    o.kernel = kernel;
    if (initrd != nullptr) {
        o.initrd = std::span<const uint8_t>(*initrd);
    }
    o.cmdline = "console=ttyS0 panic=1";
    o.vcpu_count = 1;
    o.prefer_pvh = false;
    return o;
}

}  // namespace

TEST_CASE("Zero page for a 128 MiB guest: e820, command line, default header", "[boot][zero-page]") {
    auto mem = make_guest_memory(128 * kMiB);
    const auto kernel = elf_kernel(false).build();
    setup_boot(mem, options_for(kernel));
    const boot_params bp = read_zero_page(mem);

    const std::vector<MemoryMapEntry> expected{
        {0, layout::kEbdaStart, MemoryType::Ram},
        {layout::kEbdaStart, layout::kHighMemStart - layout::kEbdaStart, MemoryType::Reserved},
        {layout::kHighMemStart, 128 * kMiB - layout::kHighMemStart, MemoryType::Ram},
    };
    CHECK(e820_of(bp) == expected);

    CHECK(val(bp.hdr.cmd_line_ptr) == layout::kCmdlineAddr);
    CHECK(val(bp.ext_cmd_line_ptr) == 0);
    CHECK(val(bp.hdr.ramdisk_image) == 0);
    CHECK(val(bp.hdr.ramdisk_size) == 0);
    // The default header an ELF kernel gets.
    CHECK(val(bp.hdr.boot_flag) == 0xaa55);
    CHECK(val(bp.hdr.header) == 0x53726448);
    CHECK(val(bp.hdr.version) == 0x20c);
    CHECK(val(bp.hdr.type_of_loader) == 0xff);
    CHECK(val(bp.hdr.kernel_alignment) == 0x1000000);
    CHECK((val(bp.hdr.loadflags) & (LOADED_HIGH | CAN_USE_HEAP)) == (LOADED_HIGH | CAN_USE_HEAP));
    CHECK(val(bp.hdr.heap_end_ptr) == kHeapEndPtr);
    CHECK(val(bp.hdr.cmdline_size) == 2047);
    CHECK(val(bp.hdr.initrd_addr_max) == 0x37ffffff);
    CHECK(val(bp.hdr.setup_data) == 0);
    CHECK(val(bp.acpi_rsdp_addr) == 0);

    std::vector<uint8_t> cmdline(22);
    mem.read(GuestAddress(layout::kCmdlineAddr), cmdline);
    CHECK(std::string(cmdline.begin(), cmdline.end()) == std::string("console=ttyS0 panic=1\0", 22));
}

TEST_CASE("Zero page for a 4 GiB guest: RAM above the MMIO hole moves to 4 GiB", "[boot][zero-page]") {
    const auto ranges = guest_memory_ranges(4 * kGiB);
    REQUIRE(ranges.size() == 2);
    CHECK(ranges[0] == std::pair<GuestAddress, size_t>{GuestAddress(0), 3 * kGiB});
    CHECK(ranges[1] == std::pair<GuestAddress, size_t>{GuestAddress(4 * kGiB), 1 * kGiB});

    auto mem = make_guest_memory(4 * kGiB);
    const auto kernel = elf_kernel(false).build();
    setup_boot(mem, options_for(kernel));
    const std::vector<MemoryMapEntry> expected{
        {0, layout::kEbdaStart, MemoryType::Ram},
        {layout::kEbdaStart, layout::kHighMemStart - layout::kEbdaStart, MemoryType::Reserved},
        {layout::kHighMemStart, layout::kMmioHoleStart - layout::kHighMemStart, MemoryType::Ram},
        {layout::kMmioHoleEnd, 1 * kGiB, MemoryType::Ram},
    };
    CHECK(e820_of(read_zero_page(mem)) == expected);
}

TEST_CASE("Zero page carries the initrd's address and size", "[boot][zero-page][initrd]") {
    auto mem = make_guest_memory(128 * kMiB);
    const auto kernel = elf_kernel(false).build();
    const auto initrd = pattern(0x12345, 5);
    const BootSetup setup = setup_boot(mem, options_for(kernel, &initrd));
    const boot_params bp = read_zero_page(mem);
    CHECK(val(bp.hdr.ramdisk_image) == setup.initrd_addr);
    CHECK(val(bp.hdr.ramdisk_size) == 0x12345);
    CHECK(val(bp.ext_ramdisk_image) == 0);
    CHECK(val(bp.ext_ramdisk_size) == 0);
}

TEST_CASE("Zero page of a bzImage holds a copy of its setup header, loader fields filled in",
          "[boot][zero-page][bzimage]") {
    auto mem = make_guest_memory(128 * kMiB);
    BzImageSpec spec;
    spec.cmdline_size = 1000;
    auto kernel = make_bzimage(spec);
    poke<uint16_t>(kernel, 0x1fa, 0xfffd);  // vid_mode: a field the loader leaves alone
    const auto initrd = pattern(0x3000, 6);
    const BootSetup setup = setup_boot(mem, options_for(kernel, &initrd));
    const boot_params bp = read_zero_page(mem);

    // Every header byte is the image's, except those the boot loader must write.
    std::vector<uint8_t> zp(sizeof(boot_params));
    mem.read(GuestAddress(layout::kZeroPageAddr), zp);
    const std::vector<std::pair<size_t, size_t>> loader_fields{
        {0x210, 2},  // type_of_loader, loadflags
        {0x218, 8},  // ramdisk_image, ramdisk_size
        {0x224, 4},  // heap_end_ptr, ext_loader_ver, ext_loader_type
        {0x228, 4},  // cmd_line_ptr
    };
    for (size_t off = 0x1f1; off < 0x26c; off++) {
        const bool filled = std::any_of(loader_fields.begin(), loader_fields.end(),
                                        [&](auto f) { return off >= f.first && off < f.first + f.second; });
        if (!filled) {
            INFO("zero page offset " << std::hex << off);
            CHECK(zp[off] == kernel[off]);
        }
    }
    CHECK(val(bp.hdr.vid_mode) == 0xfffd);
    CHECK(val(bp.hdr.version) == 0x20f);
    CHECK(val(bp.hdr.cmdline_size) == 1000);
    CHECK(val(bp.hdr.type_of_loader) == 0xff);
    CHECK(val(bp.hdr.loadflags) == (LOADED_HIGH | CAN_USE_HEAP));
    CHECK(val(bp.hdr.cmd_line_ptr) == layout::kCmdlineAddr);
    CHECK(val(bp.hdr.ramdisk_image) == setup.initrd_addr);
    CHECK(val(bp.hdr.ramdisk_size) == 0x3000);
    CHECK(val(bp.hdr.heap_end_ptr) == kHeapEndPtr);
    CHECK(bp.e820_entries == 3);
}

TEST_CASE("build_zero_page splits 64-bit addresses into the ext_ fields", "[boot][zero-page]") {
    ZeroPageParams p;
    p.cmdline_addr = 0x123456789ULL;
    p.initrd_addr = 0x200000000ULL;
    p.initrd_size = 0x100001000ULL;
    const boot_params bp = build_zero_page(p);
    CHECK(val(bp.hdr.cmd_line_ptr) == 0x23456789u);
    CHECK(val(bp.ext_cmd_line_ptr) == 1u);
    CHECK(val(bp.hdr.ramdisk_image) == 0u);
    CHECK(val(bp.ext_ramdisk_image) == 2u);
    CHECK(val(bp.hdr.ramdisk_size) == 0x1000u);
    CHECK(val(bp.ext_ramdisk_size) == 1u);
}

TEST_CASE("build_zero_page refuses a memory map larger than the e820 table", "[boot][zero-page]") {
    ZeroPageParams p;
    p.memory_map.resize(E820_MAX_ENTRIES_ZEROPAGE + 1);
    CHECK_THROWS_WITH(build_zero_page(p), Contains("memory map has 129 entries, the zero page holds at most 128"));
}

}  // namespace unit_zero_page_test
