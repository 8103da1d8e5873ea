// Tests for boot/memory_map: guest RAM ranges around the MMIO hole and the e820-style map.
#include <catch2/catch.hpp>

#include "boot/boot.h"
#include "boot/memory_map.h"
#include "tests/unit/boot/test_images.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_memory_map_test {

using namespace embervm::boot;
using namespace embervm::boot::test;
using Catch::Matchers::Contains;
using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;

TEST_CASE("guest_memory_ranges puts memory above 3 GiB at 4 GiB", "[boot][memory-map]") {
    using Ranges = std::vector<std::pair<GuestAddress, size_t>>;
    CHECK(guest_memory_ranges(128 * kMiB) == Ranges{{GuestAddress(0), 128 * kMiB}});
    CHECK(guest_memory_ranges(3 * kGiB) == Ranges{{GuestAddress(0), 3 * kGiB}});
    CHECK(guest_memory_ranges(3 * kGiB + 0x1000) ==
          Ranges{{GuestAddress(0), 3 * kGiB}, {GuestAddress(4 * kGiB), 0x1000}});
    CHECK(guest_memory_ranges(16 * kGiB) == Ranges{{GuestAddress(0), 3 * kGiB}, {GuestAddress(4 * kGiB), 13 * kGiB}});
}

TEST_CASE("guest_memory_ranges rejects unaligned and tiny sizes", "[boot][memory-map]") {
    CHECK_THROWS_WITH(guest_memory_ranges(128 * kMiB + 1), Contains("is not a multiple of 4 KiB"));
    CHECK_THROWS_WITH(guest_memory_ranges(0), Contains("too small"));
    CHECK_THROWS_WITH(guest_memory_ranges(kMiB), Contains("too small"));
}

TEST_CASE("guest_memory_map describes RAM, the EBDA/BIOS reservation and memory above 4 GiB",
          "[boot][memory-map]") {
    const GuestMemory mem = make_guest_memory(5 * kGiB);
    const std::vector<MemoryMapEntry> expected{
        {0, 0x9fc00, MemoryType::Ram},
        {0x9fc00, 0x100000 - 0x9fc00, MemoryType::Reserved},
        {0x100000, 0xc0000000 - 0x100000, MemoryType::Ram},
        {0x100000000, 2 * kGiB, MemoryType::Ram},
    };
    CHECK(guest_memory_map(mem) == expected);
    CHECK(low_ram_end(mem) == layout::kMmioHoleStart);
    CHECK(describe_guest_ram(mem) == "[0x0, 0xc0000000) and [0x100000000, 0x180000000)");
}

TEST_CASE("guest_memory_map merges adjacent regions and needs memory from 0 past 1 MiB", "[boot][memory-map]") {
    const GuestMemory split({{GuestAddress(0), 2 * kMiB}, {GuestAddress(2 * kMiB), 2 * kMiB}});
    CHECK(guest_memory_map(split).back() == MemoryMapEntry{kMiB, 3 * kMiB, MemoryType::Ram});
    CHECK(low_ram_end(split) == 4 * kMiB);

    const GuestMemory not_at_zero({{GuestAddress(kMiB), 16 * kMiB}});
    CHECK_THROWS_WITH(guest_memory_map(not_at_zero), Contains("guest memory must start at 0 and extend past 1 MiB"));
    const GuestMemory too_small({{GuestAddress(0), kMiB}});
    CHECK_THROWS_AS(guest_memory_map(too_small), embervm::Error);
}

TEST_CASE("reserve_in_memory_map adds a reserved range in address order, never over another", "[boot][memory-map]") {
    const GuestMemory mem = make_guest_memory(5 * kGiB);
    std::vector<MemoryMapEntry> map = guest_memory_map(mem);
    const size_t before = map.size();
    reserve_in_memory_map(map, 0xe0000000, 0x100000);
    REQUIRE(map.size() == before + 1);
    CHECK(map[before - 1] == MemoryMapEntry{0xe0000000, 0x100000, MemoryType::Reserved});
    CHECK(map.back().addr == 4 * kGiB);
    for (size_t i = 1; i < map.size(); ++i) CHECK(map[i - 1].addr + map[i - 1].size <= map[i].addr);
    CHECK_THROWS_WITH(reserve_in_memory_map(map, 0xe0080000, 0x100000), Contains("overlaps"));
    CHECK_THROWS_WITH(reserve_in_memory_map(map, 0x1000, 0x1000), Contains("overlaps"));
}

}  // namespace unit_memory_map_test
