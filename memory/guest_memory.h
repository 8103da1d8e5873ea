// Guest physical memory: mmap'd regions and the only API through which the VMM touches them.
//
// Every access takes a GuestAddress and a length and is bounds-checked against the regions;
// a host pointer is only ever handed out as a span that was checked to lie inside one region.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "vmm/sys/fd.h"

namespace embervm::memory {

// A guest physical address. A distinct type so host and guest addresses cannot be mixed.
struct GuestAddress {
    uint64_t value = 0;

    constexpr GuestAddress() = default;
    constexpr explicit GuestAddress(uint64_t v) : value(v) {}

    // Adds an offset; returns nullopt on 64-bit overflow.
    constexpr std::optional<GuestAddress> checked_add(uint64_t offset) const {
        if (value + offset < value) {
            return std::nullopt;
        }
        return GuestAddress(value + offset);
    }
    // Unchecked add for addresses the VMM itself chose (layout constants).
    constexpr GuestAddress unchecked_add(uint64_t offset) const { return GuestAddress(value + offset); }

    constexpr auto operator<=>(const GuestAddress&) const = default;
};

// Raised when an access falls (partly) outside guest memory.
class GuestMemoryError : public std::runtime_error {
public:
    GuestMemoryError(GuestAddress addr, uint64_t len);
    GuestAddress address() const { return addr_; }
    uint64_t length() const { return len_; }

private:
    GuestAddress addr_;
    uint64_t len_;
};

// What backs guest memory. `Private` (the default) is an anonymous private mapping that only
// this process sees. `SharedMemfd` is one memfd per region mapped MAP_SHARED, so that another
// process (a vhost-user backend) handed the fd maps the same pages; the VMM turns it on only
// when a device needs it (see Vmm::create_memory).
enum class MemoryBacking { Private, SharedMemfd };

// One contiguous range of guest physical memory backed by an anonymous mapping or a memfd.
class GuestRegion {
public:
    // Private: mmap(MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE); SharedMemfd: memfd_create,
    // ftruncate to `size`, mmap(MAP_SHARED) of the memfd from offset 0.
    GuestRegion(GuestAddress start, size_t size, MemoryBacking backing = MemoryBacking::Private);
    GuestRegion(const GuestRegion&) = delete;
    GuestRegion& operator=(const GuestRegion&) = delete;
    GuestRegion(GuestRegion&& other) noexcept;
    GuestRegion& operator=(GuestRegion&&) = delete;
    ~GuestRegion();

    GuestAddress start() const { return start_; }
    size_t size() const { return size_; }
    // Last address + 1 (may be 2^64 only in theory; regions are below 2^52).
    uint64_t end() const { return start_.value + size_; }
    bool contains(GuestAddress addr, uint64_t len) const;
    // Host address of the whole mapping: for KVM_SET_USER_MEMORY_REGION and madvise only.
    uint8_t* host_base() const { return host_; }
    // The memfd behind a SharedMemfd region (the region is its bytes [0, size)), -1 otherwise.
    int fd() const { return fd_.get(); }

private:
    GuestAddress start_;
    size_t size_;
    uint8_t* host_;
    FileDescriptor fd_;
};

// How another process maps one shared region: mmap `fd` from `fd_offset` for `size` bytes; the
// guest sees it at `guest_address`, the VMM at `host_address` (vhost-user's "user address").
struct SharedRegion {
    int fd;
    uint64_t fd_offset;
    uint64_t size;
    GuestAddress guest_address;
    uint64_t host_address;
};

class GuestMemory {
public:
    // Creates regions for the given (start, size) ranges; they must be page aligned,
    // non-empty and must not overlap.
    explicit GuestMemory(const std::vector<std::pair<GuestAddress, size_t>>& ranges,
                         MemoryBacking backing = MemoryBacking::Private);
    GuestMemory(const GuestMemory&) = delete;
    GuestMemory& operator=(const GuestMemory&) = delete;

    MemoryBacking backing() const { return backing_; }
    // One entry per region, in guest address order; empty unless the backing is SharedMemfd.
    std::vector<SharedRegion> shared_regions() const;

    const std::vector<GuestRegion>& regions() const { return regions_; }
    uint64_t total_size() const;
    // Address just past the highest region.
    GuestAddress last_address() const;

    // True if [addr, addr+len) lies inside guest memory (it may span adjacent regions).
    bool check_range(GuestAddress addr, uint64_t len) const;

    // A host view of [addr, addr+len) if the range lies inside a single region.
    std::optional<std::span<uint8_t>> get_slice(GuestAddress addr, uint64_t len) const;

    // Copy to/from guest memory; throw GuestMemoryError if the range is not all guest memory.
    void read(GuestAddress addr, std::span<uint8_t> out) const;
    void write(GuestAddress addr, std::span<const uint8_t> in) const;
    // Same, returning false instead of throwing.
    bool try_read(GuestAddress addr, std::span<uint8_t> out) const;
    bool try_write(GuestAddress addr, std::span<const uint8_t> in) const;
    // Fill a range with a byte value.
    void fill(GuestAddress addr, uint64_t len, uint8_t value) const;
    // Makes [addr, addr+len) read as zeros without touching the whole pages inside it: those
    // are given back (discard()), so memory that was never written (all of it, right after the
    // mmap) costs neither a page fault nor a host page; only the partial pages at either end
    // are cleared with memset. Throws GuestMemoryError if the range is not all guest memory.
    void zero(GuestAddress addr, uint64_t len) const;
    // Reads `len` bytes of the file `fd` from `file_offset` straight into guest memory at
    // `addr` (pread into the mapping: no intermediate buffer, each page written once). Throws
    // GuestMemoryError if the range is not all guest memory (before reading anything),
    // embervm::Error naming `what` on a read error or if the file ends early.
    void read_from_file(GuestAddress addr, uint64_t len, int fd, uint64_t file_offset, std::string_view what) const;
    // Gives the pages of [addr, addr+len) back to the host (madvise(MADV_DONTNEED) on a private
    // mapping, MADV_REMOVE on a shared memfd, which also frees the memfd's pages that another
    // process maps): they read as zeros afterwards and cost no host memory until written again. false, touching nothing, unless the range is 4 KiB aligned and guest memory.
    bool discard(GuestAddress addr, uint64_t len) const;

    template <typename T>
    T read_obj(GuestAddress addr) const {
        static_assert(std::is_trivially_copyable_v<T>);
        T obj;
        read(addr, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&obj), sizeof(T)));
        return obj;
    }
    template <typename T>
    void write_obj(GuestAddress addr, const T& obj) const {
        static_assert(std::is_trivially_copyable_v<T>);
        write(addr, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&obj), sizeof(T)));
    }

private:
    const GuestRegion* find_region(GuestAddress addr) const;
    template <typename Fn>
    bool for_each_chunk(GuestAddress addr, uint64_t len, Fn&& fn) const;

    std::vector<GuestRegion> regions_;  // sorted by start
    MemoryBacking backing_;
};

}  // namespace embervm::memory
