// Tests for memory/guest_memory: bounds checks, region spanning, overflow.
#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>

#include <algorithm>
#include <array>
#include <vector>
#include <cstdint>
#include <cstring>

#include "memory/guest_memory.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_guest_memory_test {

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using embervm::memory::GuestMemoryError;

namespace {
GuestMemory two_regions() {
    // [0, 64 KiB) and [64 KiB, 128 KiB) adjacent, plus [1 MiB, 1 MiB + 4 KiB) after a hole.
    return GuestMemory({{GuestAddress(0), 0x10000}, {GuestAddress(0x10000), 0x10000}, {GuestAddress(0x100000), 0x1000}});
}
}  // namespace

TEST_CASE("guest memory round-trips objects", "[memory]") {
    auto mem = two_regions();
    mem.write_obj<uint64_t>(GuestAddress(0x100), 0x1122334455667788ULL);
    CHECK(mem.read_obj<uint64_t>(GuestAddress(0x100)) == 0x1122334455667788ULL);
    CHECK(mem.total_size() == 0x21000);
    CHECK(mem.last_address().value == 0x101000);
}

TEST_CASE("accesses spanning adjacent regions work, holes are refused", "[memory]") {
    auto mem = two_regions();
    std::array<uint8_t, 8> in{1, 2, 3, 4, 5, 6, 7, 8};
    mem.write(GuestAddress(0xfffc), in);
    std::array<uint8_t, 8> out{};
    mem.read(GuestAddress(0xfffc), out);
    CHECK(out == in);
    // Spans the end of region 2 into the hole.
    CHECK_FALSE(mem.check_range(GuestAddress(0x1fffc), 8));
    CHECK_THROWS_AS(mem.write(GuestAddress(0x1fffc), in), GuestMemoryError);
    CHECK_FALSE(mem.try_read(GuestAddress(0x20000), out));
    // A single-region slice is available, a spanning one is not.
    CHECK(mem.get_slice(GuestAddress(0x100000), 0x1000).has_value());
    CHECK_FALSE(mem.get_slice(GuestAddress(0xfffc), 8).has_value());
    CHECK_FALSE(mem.get_slice(GuestAddress(0x100000), 0x1001).has_value());
}

TEST_CASE("address arithmetic overflow is caught", "[memory]") {
    auto mem = two_regions();
    CHECK_FALSE(mem.check_range(GuestAddress(~0ULL - 3), 8));
    CHECK_FALSE(mem.check_range(GuestAddress(0x100), ~0ULL));
    CHECK_FALSE(GuestAddress(~0ULL).checked_add(1).has_value());
    CHECK(GuestAddress(1).checked_add(1)->value == 2);
    CHECK_FALSE(mem.get_slice(GuestAddress(0x100), ~0ULL).has_value());
}

TEST_CASE("zero-length accesses must still name guest memory", "[memory]") {
    auto mem = two_regions();
    CHECK(mem.check_range(GuestAddress(0x10), 0));
    CHECK(mem.check_range(GuestAddress(0x101000), 0));
    CHECK_FALSE(mem.check_range(GuestAddress(0x50000), 0));
}

TEST_CASE("bad region lists are rejected", "[memory]") {
    CHECK_THROWS_AS(GuestMemory({{GuestAddress(0), 0}}), embervm::Error);
    CHECK_THROWS_AS(GuestMemory({{GuestAddress(0x10), 0x1000}}), embervm::Error);
    CHECK_THROWS_AS(GuestMemory({{GuestAddress(0), 0x2000}, {GuestAddress(0x1000), 0x1000}}), embervm::Error);
    CHECK_THROWS_AS(GuestMemory({}), embervm::Error);
}

TEST_CASE("fill writes a byte pattern and checks bounds", "[memory]") {
    auto mem = two_regions();
    mem.fill(GuestAddress(0xff00), 0x200, 0xab);
    CHECK(mem.read_obj<uint8_t>(GuestAddress(0x100ff)) == 0xab);
    CHECK_THROWS_AS(mem.fill(GuestAddress(0x1ff00), 0x200, 0), GuestMemoryError);
}

namespace {
// Resident bytes of the host pages behind [p, p + len) (mincore).
size_t resident_bytes(const uint8_t* p, size_t len) {
    std::vector<unsigned char> vec(len / 4096);
    REQUIRE(::mincore(const_cast<uint8_t*>(p), len, vec.data()) == 0);
    return 4096 * static_cast<size_t>(std::count_if(vec.begin(), vec.end(), [](unsigned char c) { return c & 1; }));
}
}  // namespace

TEST_CASE("discard gives pages back to the host; they read as zeros", "[memory]") {
    GuestMemory mem({{GuestAddress(0), 0x100000}, {GuestAddress(0x100000), 0x100000}});
    mem.fill(GuestAddress(0), 0x200000, 0xab);
    const uint8_t* base0 = mem.regions()[0].host_base();
    const uint8_t* base1 = mem.regions()[1].host_base();
    CHECK(resident_bytes(base0, 0x100000) == 0x100000);

    // A range across both regions.
    REQUIRE(mem.discard(GuestAddress(0xf0000), 0x20000));
    CHECK(resident_bytes(base0 + 0xf0000, 0x10000) == 0);
    CHECK(resident_bytes(base1, 0x10000) == 0);
    CHECK(resident_bytes(base0, 0xf0000) == 0xf0000);  // the rest stays
    CHECK(mem.read_obj<uint64_t>(GuestAddress(0xf0000)) == 0);
    CHECK(mem.read_obj<uint64_t>(GuestAddress(0x10fff8)) == 0);
    CHECK(mem.read_obj<uint8_t>(GuestAddress(0xeffff)) == 0xab);
    CHECK(mem.read_obj<uint8_t>(GuestAddress(0x110000)) == 0xab);

    // Unaligned or outside guest memory: refused, nothing touched.
    CHECK_FALSE(mem.discard(GuestAddress(0x1000), 0x800));
    CHECK_FALSE(mem.discard(GuestAddress(0x1800), 0x1000));
    CHECK_FALSE(mem.discard(GuestAddress(0x1ff000), 0x2000));
    CHECK_FALSE(mem.discard(GuestAddress(~uint64_t{0} & ~uint64_t{0xfff}), 0x2000));
    CHECK(mem.read_obj<uint8_t>(GuestAddress(0x1000)) == 0xab);
    CHECK(mem.read_obj<uint8_t>(GuestAddress(0x1ff000)) == 0xab);
}

TEST_CASE("zero clears a range, partial pages included, without faulting in whole pages", "[memory]") {
    GuestMemory mem({{GuestAddress(0), 0x100000}, {GuestAddress(0x100000), 0x100000}});
    mem.fill(GuestAddress(0), 0x200000, 0xab);
    // Unaligned at both ends and across the two regions.
    mem.zero(GuestAddress(0xf0123), 0x20000);
    std::vector<uint8_t> got(0x20400);
    mem.read(GuestAddress(0xf0000), got);
    for (size_t i = 0; i < got.size(); i++) {
        const bool inside = i >= 0x123 && i < 0x123 + 0x20000;
        if (got[i] != (inside ? 0 : 0xab)) {
            FAIL_CHECK("byte " << i << " of the window is " << int{got[i]});
            break;
        }
    }
    // Inside one page.
    mem.zero(GuestAddress(0x5010), 0x20);
    CHECK(mem.read_obj<uint8_t>(GuestAddress(0x500f)) == 0xab);
    CHECK(mem.read_obj<uint64_t>(GuestAddress(0x5010)) == 0);
    CHECK(mem.read_obj<uint64_t>(GuestAddress(0x5028)) == 0);
    CHECK(mem.read_obj<uint8_t>(GuestAddress(0x5030)) == 0xab);
    CHECK_THROWS_AS(mem.zero(GuestAddress(0x1ff000), 0x2000), GuestMemoryError);
    CHECK(mem.read_obj<uint8_t>(GuestAddress(0x1ff000)) == 0xab);  // refused before clearing anything

    // Memory never written stays unallocated: zeroing it is free.
    GuestMemory fresh({{GuestAddress(0), 0x400000}});
    fresh.zero(GuestAddress(0x100000), 0x200000);
    CHECK(resident_bytes(fresh.regions()[0].host_base(), 0x400000) == 0);
}

TEST_CASE("read_from_file reads a file range straight into guest memory", "[memory]") {
    char path[] = "/tmp/embervm-memory-test-XXXXXX";
    const int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    ::unlink(path);
    std::vector<uint8_t> data(0x30000);
    for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(i * 7 + (i >> 12));
    REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));

    auto mem = two_regions();
    // Across the boundary of the two adjacent regions, from a file offset that is not aligned.
    mem.read_from_file(GuestAddress(0xf000), 0x2000, fd, 0x1234, "test file");
    std::vector<uint8_t> got(0x2000);
    mem.read(GuestAddress(0xf000), got);
    CHECK(std::equal(got.begin(), got.end(), data.begin() + 0x1234));
    CHECK(mem.read_obj<uint8_t>(GuestAddress(0xefff)) == 0);
    CHECK(mem.read_obj<uint8_t>(GuestAddress(0x11000)) == 0);

    // Outside guest memory (the hole): refused before anything is read.
    CHECK_THROWS_AS(mem.read_from_file(GuestAddress(0x1f000), 0x2000, fd, 0, "test file"), GuestMemoryError);
    CHECK(mem.read_obj<uint8_t>(GuestAddress(0x1ffff)) == 0);
    // The file ends before the range does.
    CHECK_THROWS_WITH(mem.read_from_file(GuestAddress(0), 0x2000, fd, 0x2f000, "test file"),
                      Catch::Matchers::Contains("test file: file ends at offset 0x30000"));
    // A descriptor that cannot be read.
    CHECK_THROWS_WITH(mem.read_from_file(GuestAddress(0), 0x10, -1, 0, "test file"),
                      Catch::Matchers::Contains("test file: read of 0x10 bytes at file offset 0x0"));
    ::close(fd);
}

TEST_CASE("private guest memory hands out no shared regions", "[memory]") {
    auto mem = two_regions();
    CHECK(mem.backing() == embervm::memory::MemoryBacking::Private);
    CHECK(mem.shared_regions().empty());
    CHECK(mem.regions()[0].fd() == -1);
}

TEST_CASE("memfd-backed guest memory is seen by a second mapping of its fds", "[memory]") {
    using embervm::memory::MemoryBacking;
    GuestMemory mem({{GuestAddress(0), 0x10000}, {GuestAddress(0x100000), 0x2000}}, MemoryBacking::SharedMemfd);
    const auto shared = mem.shared_regions();
    REQUIRE(shared.size() == 2);
    CHECK(shared[1].guest_address.value == 0x100000);
    CHECK(shared[1].size == 0x2000);
    CHECK(shared[1].fd_offset == 0);
    CHECK(shared[1].host_address == reinterpret_cast<uint64_t>(mem.regions()[1].host_base()));
    CHECK(shared[0].fd != shared[1].fd);

    // Map the second region's memfd as a backend would and see the guest's bytes both ways.
    void* p = ::mmap(nullptr, shared[1].size, PROT_READ | PROT_WRITE, MAP_SHARED, shared[1].fd, 0);
    REQUIRE(p != MAP_FAILED);
    auto* other = static_cast<uint8_t*>(p);
    mem.write_obj<uint32_t>(GuestAddress(0x100ffc), 0xdeadbeef);
    uint32_t seen = 0;
    std::memcpy(&seen, other + 0xffc, 4);
    CHECK(seen == 0xdeadbeef);
    other[0x1000] = 0x5a;
    CHECK(mem.read_obj<uint8_t>(GuestAddress(0x101000)) == 0x5a);

    // discard() frees the pages in the memfd itself: the other mapping reads zeros too.
    REQUIRE(mem.discard(GuestAddress(0x100000), 0x2000));
    std::memcpy(&seen, other + 0xffc, 4);
    CHECK(seen == 0);
    CHECK(other[0x1000] == 0);
    ::munmap(p, shared[1].size);
}

}  // namespace unit_guest_memory_test
