// Tests for boot/pvh: the hvm_start_info a PVH kernel receives.
#include <catch2/catch.hpp>

#include "boot/boot.h"
#include "boot/memory_map.h"
#include "boot/pvh.h"
#include "tests/unit/boot/test_images.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_pvh_test {

using namespace embervm::boot;
using namespace embervm::boot::test;
using embervm::memory::GuestAddress;

namespace {

std::vector<MemoryMapEntry> read_memmap(const embervm::memory::GuestMemory& mem, const HvmStartInfo& info) {
    std::vector<MemoryMapEntry> out;
    for (uint32_t i = 0; i < info.memmap_entries; i++) {
        const auto e = mem.read_obj<HvmMemmapEntry>(GuestAddress(info.memmap_paddr + i * sizeof(HvmMemmapEntry)));
        CHECK(e.reserved == 0);
        out.push_back({e.addr, e.size, static_cast<MemoryType>(e.type)});
    }
    return out;
}

}  // namespace

TEST_CASE("PVH start info with an initrd module and the memory map", "[boot][pvh]") {
    auto mem = make_guest_memory(4 * kGiB);
    const auto kernel = elf_kernel(true).build();
    const auto initrd = pattern(0x5000, 4);
    BootOptions o;
    o.kernel = kernel;
    o.initrd = std::span<const uint8_t>(initrd);
    o.cmdline = "console=hvc0";
    const BootSetup setup = setup_boot(mem, o);
    REQUIRE(setup.protocol == EntryProtocol::Pvh);
    REQUIRE(setup.boot_info_addr == layout::kPvhInfoAddr);

    const auto info = mem.read_obj<HvmStartInfo>(GuestAddress(layout::kPvhInfoAddr));
    CHECK(info.magic == 0x336ec578);
    CHECK(info.version == 1);
    CHECK(info.flags == 0);
    CHECK(info.cmdline_paddr == layout::kCmdlineAddr);
    CHECK(info.rsdp_paddr == 0);
    REQUIRE(info.nr_modules == 1);
    const auto module = mem.read_obj<HvmModlistEntry>(GuestAddress(info.modlist_paddr));
    CHECK(module.paddr == setup.initrd_addr);
    CHECK(module.size == 0x5000);
    CHECK(module.cmdline_paddr == 0);
    CHECK(read_memmap(mem, info) == guest_memory_map(mem));
    CHECK(info.memmap_entries == 4);
    // All of it below the zero page.
    CHECK(info.memmap_paddr + info.memmap_entries * sizeof(HvmMemmapEntry) <= layout::kZeroPageAddr);
}

TEST_CASE("PVH start info without an initrd has no modules", "[boot][pvh]") {
    auto mem = make_guest_memory(64 * kMiB);
    const auto kernel = elf_kernel(true).build();
    BootOptions o;
    o.kernel = kernel;
    setup_boot(mem, o);
    const auto info = mem.read_obj<HvmStartInfo>(GuestAddress(layout::kPvhInfoAddr));
    CHECK(info.magic == kHvmStartMagic);
    CHECK(info.nr_modules == 0);
    CHECK(info.modlist_paddr == 0);
    CHECK(info.memmap_entries == 3);
}

}  // namespace unit_pvh_test
