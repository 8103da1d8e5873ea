// Guest physical memory regions and bounds-checked access.
#include "memory/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "vmm/sys/error.h"

namespace embervm::memory {

GuestMemoryError::GuestMemoryError(GuestAddress addr, uint64_t len)
    : std::runtime_error(fmt::format("guest memory access [{:#x}, +{:#x}) is outside guest memory", addr.value, len)),
      addr_(addr),
      len_(len) {}

GuestRegion::GuestRegion(GuestAddress start, size_t size, MemoryBacking backing) : start_(start), size_(size) {
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    if (backing == MemoryBacking::SharedMemfd) {
        // MFD_CLOEXEC: the fd reaches a backend only through SCM_RIGHTS, never through exec.
        fd_.reset(::memfd_create(fmt::format("embervm-guest-ram-{:#x}", start.value).c_str(), MFD_CLOEXEC));
        if (!fd_) {
            throw sys_error(fmt::format("memfd_create for guest memory at {:#x}", start.value));
        }
        if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) {
            throw sys_error(fmt::format("ftruncate of the guest memory memfd at {:#x} to {} MiB", start.value,
                                        size >> 20));
        }
        flags = MAP_SHARED | MAP_NORESERVE;
    }
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd_.get(), 0);
    if (p == MAP_FAILED) {
        throw sys_error(fmt::format("mmap of {} MiB of guest memory at {:#x}", size >> 20, start.value));
    }
    host_ = static_cast<uint8_t*>(p);
}

GuestRegion::GuestRegion(GuestRegion&& other) noexcept
    : start_(other.start_),
      size_(other.size_),
      host_(std::exchange(other.host_, nullptr)),
      fd_(std::move(other.fd_)) {}

GuestRegion::~GuestRegion() {
    if (host_ != nullptr) {
        ::munmap(host_, size_);
    }
}

bool GuestRegion::contains(GuestAddress addr, uint64_t len) const {
    if (addr.value < start_.value) {
        return false;
    }
    const uint64_t off = addr.value - start_.value;
    return off <= size_ && len <= size_ - off;
}

GuestMemory::GuestMemory(const std::vector<std::pair<GuestAddress, size_t>>& ranges, MemoryBacking backing)
    : backing_(backing) {
    const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    auto sorted = ranges;
    std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.first < b.first; });
    uint64_t prev_end = 0;
    for (size_t i = 0; i < sorted.size(); i++) {
        auto [start, size] = sorted[i];
        if (size == 0 || start.value % page != 0 || size % page != 0) {
            throw Error(fmt::format("guest memory region {:#x}+{:#x} is empty or not page aligned", start.value, size));
        }
        if (start.value + size < start.value) {
            throw Error(fmt::format("guest memory region {:#x}+{:#x} overflows", start.value, size));
        }
        if (i > 0 && start.value < prev_end) {
            throw Error(fmt::format("guest memory region {:#x}+{:#x} overlaps the previous one", start.value, size));
        }
        prev_end = start.value + size;
        regions_.emplace_back(start, size, backing);
    }
    if (regions_.empty()) {
        throw Error("guest memory needs at least one region");
    }
}

std::vector<SharedRegion> GuestMemory::shared_regions() const {
    std::vector<SharedRegion> out;
    if (backing_ != MemoryBacking::SharedMemfd) {
        return out;
    }
    for (auto& r : regions_) {
        out.push_back(SharedRegion{r.fd(), 0, r.size(), r.start(), reinterpret_cast<uint64_t>(r.host_base())});
    }
    return out;
}

uint64_t GuestMemory::total_size() const {
    uint64_t total = 0;
    for (auto& r : regions_) {
        total += r.size();
    }
    return total;
}

GuestAddress GuestMemory::last_address() const { return GuestAddress(regions_.back().end()); }

const GuestRegion* GuestMemory::find_region(GuestAddress addr) const {
    for (auto& r : regions_) {
        if (addr.value >= r.start().value && addr.value < r.end()) {
            return &r;
        }
    }
    return nullptr;
}

// Calls fn(host_ptr, chunk_len, offset_in_request) for each region-contiguous piece of the
// range; returns false (without calling fn at all) if any byte is outside guest memory.
template <typename Fn>
bool GuestMemory::for_each_chunk(GuestAddress addr, uint64_t len, Fn&& fn) const {
    if (!check_range(addr, len)) {
        return false;
    }
    uint64_t done = 0;
    while (done < len) {
        const GuestAddress cur(addr.value + done);
        const GuestRegion* r = find_region(cur);
        const uint64_t off = cur.value - r->start().value;
        const uint64_t n = std::min<uint64_t>(len - done, r->size() - off);
        fn(r->host_base() + off, n, done);
        done += n;
    }
    return true;
}

bool GuestMemory::check_range(GuestAddress addr, uint64_t len) const {
    if (addr.value + len < addr.value) {
        return false;
    }
    uint64_t done = 0;
    while (done < len) {
        const GuestRegion* r = find_region(GuestAddress(addr.value + done));
        if (r == nullptr) {
            return false;
        }
        done += std::min<uint64_t>(len - done, r->end() - (addr.value + done));
    }
    // A zero-length access must still name an address inside guest memory or at its end.
    return len != 0 || find_region(addr) != nullptr || addr == last_address();
}

std::optional<std::span<uint8_t>> GuestMemory::get_slice(GuestAddress addr, uint64_t len) const {
    for (auto& r : regions_) {
        if (r.contains(addr, len)) {
            return std::span<uint8_t>(r.host_base() + (addr.value - r.start().value), len);
        }
    }
    return std::nullopt;
}

bool GuestMemory::try_read(GuestAddress addr, std::span<uint8_t> out) const {
    return for_each_chunk(addr, out.size(),
                          [&](uint8_t* host, uint64_t n, uint64_t off) { std::memcpy(out.data() + off, host, n); });
}

bool GuestMemory::try_write(GuestAddress addr, std::span<const uint8_t> in) const {
    return for_each_chunk(addr, in.size(),
                          [&](uint8_t* host, uint64_t n, uint64_t off) { std::memcpy(host, in.data() + off, n); });
}

bool GuestMemory::discard(GuestAddress addr, uint64_t len) const {
    constexpr uint64_t kPage = 4096;
    if ((addr.value | len) % kPage != 0 || !check_range(addr, len)) {
        return false;
    }
    bool ok = true;
    for_each_chunk(addr, len, [&](uint8_t* host, uint64_t n, uint64_t) {
        // Private anonymous memory: DONTNEED drops the pages (zero-filled on the next touch).
        // A shared memfd keeps them behind DONTNEED; MADV_REMOVE punches them out of the file.
        const int advice = backing_ == MemoryBacking::SharedMemfd ? MADV_REMOVE : MADV_DONTNEED;
        if (::madvise(host, n, advice) != 0) ok = false;
    });
    return ok;
}

void GuestMemory::read(GuestAddress addr, std::span<uint8_t> out) const {
    if (!try_read(addr, out)) {
        throw GuestMemoryError(addr, out.size());
    }
}

void GuestMemory::write(GuestAddress addr, std::span<const uint8_t> in) const {
    if (!try_write(addr, in)) {
        throw GuestMemoryError(addr, in.size());
    }
}

void GuestMemory::fill(GuestAddress addr, uint64_t len, uint8_t value) const {
    if (!for_each_chunk(addr, len, [&](uint8_t* host, uint64_t n, uint64_t) { std::memset(host, value, n); })) {
        throw GuestMemoryError(addr, len);
    }
}

void GuestMemory::zero(GuestAddress addr, uint64_t len) const {
    constexpr uint64_t kPage = 4096;
    if (!check_range(addr, len)) {
        throw GuestMemoryError(addr, len);
    }
    const uint64_t end = addr.value + len;
    const uint64_t first_page = (addr.value + kPage - 1) & ~(kPage - 1);
    const uint64_t last_page = end & ~(kPage - 1);
    if (first_page >= last_page) {
        // No whole page inside: clear it byte by byte.
        fill(addr, len, 0);
        return;
    }
    fill(addr, first_page - addr.value, 0);
    if (!discard(GuestAddress(first_page), last_page - first_page)) {
        // madvise refused (it does not on anonymous memory): clear the pages instead.
        fill(GuestAddress(first_page), last_page - first_page, 0);
    }
    fill(GuestAddress(last_page), end - last_page, 0);
}

void GuestMemory::read_from_file(GuestAddress addr, uint64_t len, int fd, uint64_t file_offset,
                                 std::string_view what) const {
    if (!check_range(addr, len)) {
        throw GuestMemoryError(addr, len);
    }
    for_each_chunk(addr, len, [&](uint8_t* host, uint64_t n, uint64_t off) {
        uint64_t done = 0;
        while (done < n) {
            const uint64_t pos = file_offset + off + done;
            const ssize_t r = ::pread(fd, host + done, n - done, static_cast<off_t>(pos));
            if (r < 0) {
                if (errno == EINTR) {
                    continue;
                }
                throw sys_error(fmt::format("{}: read of {:#x} bytes at file offset {:#x}", what, n - done, pos));
            }
            if (r == 0) {
                throw Error(fmt::format("{}: file ends at offset {:#x}, expected {:#x} bytes there (was it changed "
                                        "while loading?)",
                                        what, pos, n - done));
            }
            done += static_cast<uint64_t>(r);
        }
    });
}

}  // namespace embervm::memory
