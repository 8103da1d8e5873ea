// Writing and mapping the snapshot's memory file (see memory_file.h).
#include "vmm/snapshot/memory_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "memory/guest_memory.h"
#include "vmm/sys/error.h"
#include "vmm/sys/fd.h"
#include "vmm/sys/write_all.h"

namespace embervm::snapshot {

namespace {

bool all_zero(const uint8_t* page) {
    static const uint8_t kZero[kPageSize] = {};
    return std::memcmp(page, kZero, kPageSize) == 0;
}

// A temporary file beside `path`, `size` bytes of holes, renamed over `path` by commit().
class PendingFile {
public:
    PendingFile(const std::string& path, uint64_t size) : path_(path), tmp_(fmt::format("{}.tmp-{}", path, ::getpid())) {
        fd_.reset(::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        if (!fd_) throw sys_error(fmt::format("memory file {}: cannot create {}", path_, tmp_));
        if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) fail("cannot size");
    }
    ~PendingFile() {
        if (fd_) ::unlink(tmp_.c_str());
    }
    void write(const uint8_t* data, uint64_t len, uint64_t offset) {
        while (len > 0) {
            const ssize_t n = ::pwrite(fd_.get(), data, len, static_cast<off_t>(offset));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) fail("cannot write");
            data += n;
            offset += static_cast<uint64_t>(n);
            len -= static_cast<uint64_t>(n);
        }
    }
    void commit() {
        if (::fsync(fd_.get()) != 0) fail("cannot sync");
        if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("cannot rename the temporary file to it");
        fd_.reset();
    }

private:
    [[noreturn]] void fail(const char* what) { throw sys_error(fmt::format("memory file {}: {}", path_, what)); }
    std::string path_;
    std::string tmp_;
    FileDescriptor fd_;
};

// Writes the runs of pages for which `wanted(page index in region)` holds, region by region.
template <typename Wanted>
MemoryFileStats write_pages(const memory::GuestMemory& mem, const std::string& path, Wanted&& wanted) {
    MemoryFileStats stats;
    stats.file_size = mem.total_size();
    PendingFile file(path, stats.file_size);
    uint64_t file_offset = 0;
    for (size_t r = 0; r < mem.regions().size(); r++) {
        const memory::GuestRegion& region = mem.regions()[r];
        const uint64_t pages = region.size() / kPageSize;
        uint64_t page = 0;
        while (page < pages) {
            if (!wanted(r, page, region.host_base() + page * kPageSize)) {
                stats.pages_skipped++;
                page++;
                continue;
            }
            uint64_t end = page + 1;
            while (end < pages && wanted(r, end, region.host_base() + end * kPageSize)) end++;
            file.write(region.host_base() + page * kPageSize, (end - page) * kPageSize, file_offset + page * kPageSize);
            stats.pages_written += end - page;
            page = end;
        }
        file_offset += region.size();
    }
    file.commit();
    return stats;
}

}  // namespace

MemoryFileStats write_full_memory_file(const memory::GuestMemory& mem, const std::string& path) {
    return write_pages(mem, path, [](size_t, uint64_t, const uint8_t* page) { return !all_zero(page); });
}

MemoryFileStats write_diff_memory_file(const memory::GuestMemory& mem, std::span<const std::vector<uint64_t>> dirty,
                                       const std::string& path) {
    if (dirty.size() != mem.regions().size()) {
        throw Error(fmt::format("memory file {}: {} dirty bitmaps for {} regions", path, dirty.size(), mem.regions().size()));
    }
    for (size_t r = 0; r < dirty.size(); r++) {
        const uint64_t pages = mem.regions()[r].size() / kPageSize;
        if (dirty[r].size() * 64 < pages) {
            throw Error(fmt::format("memory file {}: region {}'s dirty bitmap covers {} of its {} pages", path, r,
                                    dirty[r].size() * 64, pages));
        }
    }
    return write_pages(mem, path, [&](size_t r, uint64_t page, const uint8_t*) {
        return ((dirty[r][page / 64] >> (page % 64)) & 1) != 0;
    });
}

namespace {

// Shared (memfd) guest memory, which a vhost-user backend maps too: a private file mapping in
// its place would hide the restored pages from the backend, so the file's data ranges are read
// into the memfds, which are fresh (a restore's new guest memory): holes stay their zeros.
void read_into_shared(const memory::GuestMemory& mem, const FileDescriptor& fd, const std::string& path) {
    uint64_t file_offset = 0;
    for (const memory::GuestRegion& region : mem.regions()) {
        const uint64_t end = file_offset + region.size();
        uint64_t pos = file_offset;
        while (pos < end) {
            const off_t data = ::lseek(fd.get(), static_cast<off_t>(pos), SEEK_DATA);
            if (data < 0 && errno == ENXIO) break;  // only holes from here
            if (data < 0) throw sys_error(fmt::format("memory file {}: SEEK_DATA at {}", path, pos));
            if (static_cast<uint64_t>(data) >= end) break;
            off_t hole = ::lseek(fd.get(), data, SEEK_HOLE);
            if (hole < 0) throw sys_error(fmt::format("memory file {}: SEEK_HOLE at {}", path, data));
            const uint64_t run_end = std::min<uint64_t>(static_cast<uint64_t>(hole), end);
            for (uint64_t at = static_cast<uint64_t>(data); at < run_end;) {
                const ssize_t n = ::pread(fd.get(), region.host_base() + (at - file_offset), run_end - at,
                                          static_cast<off_t>(at));
                if (n < 0 && errno == EINTR) continue;
                if (n < 0) throw sys_error(fmt::format("memory file {}: cannot read at {}", path, at));
                if (n == 0) throw Error(fmt::format("memory file {}: ends early at {}", path, at));
                at += static_cast<uint64_t>(n);
            }
            pos = run_end;
        }
        file_offset = end;
    }
}

}  // namespace

void map_memory_file(const memory::GuestMemory& mem, const std::string& path) {
    const FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw sys_error(fmt::format("memory file {}: cannot open", path));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw sys_error(fmt::format("memory file {}: cannot stat", path));
    if (!S_ISREG(st.st_mode)) throw Error(fmt::format("memory file {}: not a regular file", path));
    if (static_cast<uint64_t>(st.st_size) != mem.total_size()) {
        throw Error(fmt::format("memory file {}: {} bytes, the snapshot's guest memory is {} bytes", path, st.st_size,
                                mem.total_size()));
    }
    if (mem.backing() != memory::MemoryBacking::Private) {
        read_into_shared(mem, fd, path);
        return;
    }
    uint64_t offset = 0;
    for (const memory::GuestRegion& region : mem.regions()) {
        void* p = ::mmap(region.host_base(), region.size(), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd.get(), static_cast<off_t>(offset));
        if (p == MAP_FAILED) throw sys_error(fmt::format("memory file {}: cannot map {} bytes at offset {}", path,
                                                         region.size(), offset));
        offset += region.size();
    }
}

}  // namespace embervm::snapshot
