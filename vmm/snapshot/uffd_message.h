// The one message embervm sends to a Uffd page-fault handler when it restores a snapshot with
// mem_backend Uffd (the protocol: README, "Snapshots", and vmm/snapshot/uffd_backend.h).
//
// A JSON array with one object per guest memory region, in guest address order:
//   [{"base_host_virt_addr": 140211, "size": 268435456, "offset": 0, "page_size": 4096}, ...]
// base_host_virt_addr: where embervm mapped the region (the addresses the userfaultfd reports),
// size: its bytes, offset: where its bytes start in the snapshot's memory file, page_size: the
// granule faults are resolved in (bytes). The same shape as Firecracker's, so a handler written
// for Firecracker serves embervm too. The text ends with a newline (the end of the message on the
// stream socket; JSON parsers take it as white space); the userfaultfd comes with its first byte
// (SCM_RIGHTS).
//
// embervm only ever sends on that socket; parse_uffd_regions() is for handlers (the example,
// examples/uffd_handler.cpp) and checks everything a handler relies on before it trusts it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace embervm::snapshot {

struct UffdRegion {
    uint64_t base_host_virt_addr = 0;
    uint64_t size = 0;
    uint64_t offset = 0;  // in the memory file
    uint64_t page_size = 0;

    bool operator==(const UffdRegion&) const = default;
};

// The message's JSON text (compact, without the newline that ends it on the socket).
std::string encode_uffd_regions(const std::vector<UffdRegion>& regions);

// Parses and checks a message: a non-empty array of objects with exactly these four unsigned
// integer fields; page_size a power of two of at least 4096; every address, size and offset a
// multiple of it; no region wrapping around or overlapping another (in host addresses or in the
// file); every region inside a memory file of `file_size` bytes and together all of it. Throws
// Error with one line naming the region and field.
std::vector<UffdRegion> parse_uffd_regions(std::string_view text, uint64_t file_size);

// The largest message embervm sends (a handler's receive buffer): far above what a few regions
// take, so a message is never cut.
inline constexpr size_t kUffdMessageMax = 64 * 1024;

}  // namespace embervm::snapshot
