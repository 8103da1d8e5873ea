// Tests for vmm/snapshot/memory_file: Full files hold the non-zero pages (zero pages are holes),
// Diff files exactly the dirty pages; a file maps back MAP_PRIVATE (the guest's later writes do
// not reach it); a file of the wrong size is refused naming it and both sizes.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "memory/guest_memory.h"
#include "tests/unit/temp_dir.h"
#include "vmm/snapshot/memory_file.h"
#include "vmm/sys/fd.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_memory_file_test {

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using embervm::test::TempDir;
using namespace embervm::snapshot;

namespace {

// Two regions with a gap between them, as below and above the 32-bit MMIO hole.
std::vector<std::pair<GuestAddress, size_t>> layout() {
    return {{GuestAddress(0), 16 * kPageSize}, {GuestAddress(0x100000), 8 * kPageSize}};
}

// The file's data ranges (SEEK_DATA/SEEK_HOLE), as [start, end) byte offsets.
std::vector<std::pair<uint64_t, uint64_t>> data_ranges(const std::string& path) {
    const embervm::FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd);
    std::vector<std::pair<uint64_t, uint64_t>> out;
    off_t pos = 0;
    while (true) {
        const off_t data = ::lseek(fd.get(), pos, SEEK_DATA);
        if (data < 0) break;
        const off_t hole = ::lseek(fd.get(), data, SEEK_HOLE);
        out.emplace_back(data, hole);
        pos = hole;
    }
    return out;
}

}  // namespace

TEST_CASE("memory file: a Full file holds the non-zero pages at their offsets, zero pages are holes", "[snapshot]") {
    TempDir dir;
    const GuestMemory mem(layout());
    mem.write_obj<uint32_t>(GuestAddress(3 * kPageSize + 8), 0xdeadbeef);
    mem.write_obj<uint32_t>(GuestAddress(4 * kPageSize), 0x1234);
    mem.write_obj<uint32_t>(GuestAddress(0x100000 + 7 * kPageSize), 0x5678);
    const std::string path = dir.file("mem");
    const MemoryFileStats s = write_full_memory_file(mem, path);
    CHECK(s.file_size == 24 * kPageSize);
    CHECK(s.pages_written == 3);
    CHECK(s.pages_skipped == 21);
    CHECK(std::filesystem::file_size(path) == 24 * kPageSize);
    const auto ranges = data_ranges(path);
    // A file system may report data at a coarser grain; it must at least not lose a page, and on
    // tmpfs/ext4 the holes are exact.
    REQUIRE(!ranges.empty());
    CHECK(ranges.front().first <= 3 * kPageSize);
    CHECK(ranges.back().second >= 24 * kPageSize);

    const GuestMemory restored(layout());
    map_memory_file(restored, path);
    CHECK(restored.read_obj<uint32_t>(GuestAddress(3 * kPageSize + 8)) == 0xdeadbeef);
    CHECK(restored.read_obj<uint32_t>(GuestAddress(4 * kPageSize)) == 0x1234);
    CHECK(restored.read_obj<uint32_t>(GuestAddress(0x100000 + 7 * kPageSize)) == 0x5678);
    CHECK(restored.read_obj<uint32_t>(GuestAddress(5 * kPageSize)) == 0);
    // MAP_PRIVATE: a write after the restore is the guest's own, the file keeps the snapshot.
    restored.write_obj<uint32_t>(GuestAddress(3 * kPageSize + 8), 1);
    const GuestMemory clone(layout());
    map_memory_file(clone, path);
    CHECK(clone.read_obj<uint32_t>(GuestAddress(3 * kPageSize + 8)) == 0xdeadbeef);
}

TEST_CASE("memory file: a Diff file holds exactly the dirty pages, zeros included", "[snapshot]") {
    TempDir dir;
    const GuestMemory mem(layout());
    mem.write_obj<uint32_t>(GuestAddress(2 * kPageSize), 0xaaaa);
    mem.write_obj<uint32_t>(GuestAddress(0x100000 + kPageSize), 0xbbbb);
    std::vector<std::vector<uint64_t>> dirty{{(1u << 2) | (1u << 9)}, {1u << 1}};  // page 9 is dirty but zero
    const std::string path = dir.file("diff");
    const MemoryFileStats s = write_diff_memory_file(mem, dirty, path);
    CHECK(s.pages_written == 3);
    CHECK(s.pages_skipped == 21);
    CHECK(std::filesystem::file_size(path) == 24 * kPageSize);
    const GuestMemory back(layout());
    map_memory_file(back, path);
    CHECK(back.read_obj<uint32_t>(GuestAddress(2 * kPageSize)) == 0xaaaa);
    CHECK(back.read_obj<uint32_t>(GuestAddress(0x100000 + kPageSize)) == 0xbbbb);

    std::vector<std::vector<uint64_t>> one_bitmap{{0}};
    CHECK_THROWS_WITH(write_diff_memory_file(mem, one_bitmap, path), Catch::Contains("1 dirty bitmaps for 2 regions"));
    std::vector<std::vector<uint64_t>> short_bitmap{{0}, {}};
    CHECK_THROWS_WITH(write_diff_memory_file(mem, short_bitmap, path),
                      Catch::Contains("region 1's dirty bitmap covers 0 of its 8 pages"));
}

TEST_CASE("memory file: a missing file or one of the wrong size is refused naming it", "[snapshot]") {
    TempDir dir;
    const GuestMemory mem(layout());
    CHECK_THROWS_WITH(map_memory_file(mem, dir.file("none")),
                      Catch::StartsWith("memory file " + dir.file("none") + ": cannot open: No such file"));
    const std::string path = dir.file("mem");
    write_full_memory_file(mem, path);
    std::filesystem::resize_file(path, 23 * kPageSize);
    CHECK_THROWS_WITH(map_memory_file(mem, path),
                      "memory file " + path + ": 94208 bytes, the snapshot's guest memory is 98304 bytes");
}

TEST_CASE("memory file: memory shared with a vhost-user backend is read into its memfds", "[snapshot]") {
    TempDir dir;
    const GuestMemory mem(layout());
    mem.write_obj<uint32_t>(GuestAddress(3 * kPageSize + 8), 0xdeadbeef);
    mem.write_obj<uint32_t>(GuestAddress(15 * kPageSize + 4092), 0x77);  // the first region's last bytes
    mem.write_obj<uint32_t>(GuestAddress(0x100000), 0x99);                // the second region's first
    mem.write_obj<uint32_t>(GuestAddress(0x100000 + 7 * kPageSize), 0x5678);
    const std::string path = dir.file("mem");
    write_full_memory_file(mem, path);

    const GuestMemory shared(layout(), embervm::memory::MemoryBacking::SharedMemfd);
    map_memory_file(shared, path);
    CHECK(shared.read_obj<uint32_t>(GuestAddress(5 * kPageSize)) == 0);  // a hole: the fresh memfd's zeros
    CHECK(shared.read_obj<uint32_t>(GuestAddress(3 * kPageSize + 8)) == 0xdeadbeef);
    CHECK(shared.read_obj<uint32_t>(GuestAddress(15 * kPageSize + 4092)) == 0x77);
    CHECK(shared.read_obj<uint32_t>(GuestAddress(0x100000)) == 0x99);
    CHECK(shared.read_obj<uint32_t>(GuestAddress(0x100000 + 7 * kPageSize)) == 0x5678);
    // What another process mapping the memfds sees: the restored bytes (a private mapping of the
    // file would have hidden them from it).
    const auto regions = shared.shared_regions();
    REQUIRE(regions.size() == 2);
    uint32_t seen = 0;
    REQUIRE(::pread(regions[1].fd, &seen, sizeof(seen), static_cast<off_t>(regions[1].fd_offset + 7 * kPageSize)) ==
            sizeof(seen));
    CHECK(seen == 0x5678);
    // A file of the wrong size is refused before anything is read.
    std::filesystem::resize_file(path, 23 * kPageSize);
    CHECK_THROWS_WITH(map_memory_file(shared, path), Catch::Contains("the snapshot's guest memory is 98304 bytes"));
}

}  // namespace unit_memory_file_test
