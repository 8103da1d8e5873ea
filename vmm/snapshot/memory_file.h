// The snapshot's memory file: guest memory's regions one after the other (region i at the sum of
// the sizes before it), page for page, so the file is exactly GuestMemory::total_size() long.
//
// Full: every page that is not all zeros is written; zero pages stay holes (a sparse file: a
// guest that touched 40 MiB of 256 MiB costs ~40 MiB of disk). Diff: only the pages the dirty
// bitmaps mark, zeros included, each at its offset; everything else is a hole, so a diff's data
// ranges (SEEK_DATA/SEEK_HOLE) are exactly its pages and scripts/snapshot-merge copies them onto
// the base to make a full memory file.
//
// Loading maps the file MAP_PRIVATE|MAP_FIXED over each region's mapping: nothing is read until
// the guest touches a page, clones restored from one file share its page cache, and what a guest
// writes stays its own. Memory shared with a vhost-user backend is read into instead (the
// backend maps the memfds, not the file): every data page is read up front.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace embervm::memory {
class GuestMemory;
}

namespace embervm::snapshot {

inline constexpr uint64_t kPageSize = 4096;

struct MemoryFileStats {
    uint64_t file_size = 0;      // bytes, = guest memory size
    uint64_t pages_written = 0;  // 4 KiB pages with data in the file
    uint64_t pages_skipped = 0;  // holes: zero pages (Full) or clean pages (Diff)
};

// Writes a Full memory file of `mem` to `path` (through a temporary file, fsync'd and renamed).
// Throws Error naming the path.
MemoryFileStats write_full_memory_file(const memory::GuestMemory& mem, const std::string& path);
// Writes a Diff memory file: `dirty[i]` is region i's bitmap (bit n: page n was written, 64-bit
// words as KVM_GET_DIRTY_LOG fills them). Throws Error naming the path (or a bitmap too short).
MemoryFileStats write_diff_memory_file(const memory::GuestMemory& mem, std::span<const std::vector<uint64_t>> dirty,
                                       const std::string& path);
// Maps `path` MAP_PRIVATE over every region of `mem`; memory shared with a vhost-user backend
// (memfds) gets the file's data ranges read into it instead (the backend must see them). Throws
// Error naming the path when it cannot be opened, is not exactly `mem`'s size, or cannot be
// mapped or read.
void map_memory_file(const memory::GuestMemory& mem, const std::string& path);

}  // namespace embervm::snapshot
