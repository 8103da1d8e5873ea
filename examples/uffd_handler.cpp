// uffd_handler: an example page-fault handler for embervm's Uffd memory backend, serving one
// restored VM from a snapshot's memory file (the protocol: README, "Snapshots").
//
//   uffd_handler SOCKET MEMFILE
//   embervm --restore vm.snap --restore-uffd SOCKET      (or PUT /snapshot/load with
//       "mem_backend": {"backend_type": "Uffd", "backend_path": SOCKET})
//
// It listens on SOCKET, takes one connection, reads embervm's message (the regions as JSON, one
// line, with the userfaultfd attached), maps MEMFILE read-only and then serves faults:
// UFFDIO_COPY of the page from the file, or UFFDIO_ZEROPAGE for a page the balloon gave back
// (UFFD_EVENT_REMOVE). It exits (status 0) when embervm closes the connection (the VM ended),
// with a line counting what it served. Each fault brings in its page and the other pages of its
// aligned 64 KiB block: one round trip through this process for up to 16 pages a guest usually
// touches together (a real handler
// may do more: prefetch what the last restore touched, or the whole file in the background).
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "vmm/snapshot/uffd_message.h"
#include "vmm/sys/error.h"
#include "vmm/sys/fd.h"
#include "vmm/sys/fd_passing.h"

namespace {

using embervm::Error;
using embervm::FileDescriptor;
using embervm::sys_error;
using embervm::snapshot::UffdRegion;

// Listens on `path` (a stale file there is replaced) and returns the first connection.
FileDescriptor accept_one(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(addr.sun_path)) throw Error("SOCKET: path too long");
    std::memcpy(addr.sun_path, path.data(), path.size());
    const FileDescriptor listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ::unlink(path.c_str());
    if (!listener || ::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listener.get(), 1) != 0) {
        throw sys_error("listen on " + path);
    }
    std::fprintf(stderr, "uffd_handler: listening on %s\n", path.c_str());
    FileDescriptor conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) throw sys_error("accept on " + path);
    ::unlink(path.c_str());  // one VM per handler: nobody else may connect
    return conn;
}

// Reads embervm's message up to its newline; the userfaultfd comes with the first bytes.
std::string receive_message(int conn, FileDescriptor& uffd) {
    std::string text;
    std::vector<FileDescriptor> fds;
    while (text.find('\n') == std::string::npos) {
        uint8_t buf[4096];
        const ssize_t n = embervm::receive_with_fds(conn, buf, fds);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw Error("embervm closed the connection before its message was complete");
        text.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
        if (text.size() > embervm::snapshot::kUffdMessageMax) throw Error("embervm's message is too long");
    }
    if (fds.size() != 1) throw Error("embervm's message came with " + std::to_string(fds.size()) + " descriptors, not 1");
    uffd = std::move(fds.front());
    return text.substr(0, text.find('\n'));
}

class Handler {
public:
    Handler(int uffd, std::vector<UffdRegion> regions, const uint8_t* file)
        : uffd_(uffd), regions_(std::move(regions)), file_(file) {
        for (const UffdRegion& r : regions_) removed_.emplace_back(r.size / r.page_size, false);
    }

    // Reads every queued event; serves faults, notes removes. Faults the kernel answers with
    // EAGAIN (the memory map is changing: a remove event is on its way) are tried again after
    // the next events were read. false once embervm's memory is gone (it exits).
    bool serve_events() {
        uffd_msg msgs[16];
        while (true) {
            const ssize_t n = ::read(uffd_, msgs, sizeof(msgs));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) break;
            if (n <= 0) throw sys_error("read of the userfaultfd");
            for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(uffd_msg); i++) {
                const uffd_msg& m = msgs[i];
                if (m.event == UFFD_EVENT_PAGEFAULT) {
                    pending_.push_back(m.arg.pagefault.address);
                } else if (m.event == UFFD_EVENT_REMOVE) {
                    mark_removed(m.arg.remove.start, m.arg.remove.end);
                }
            }
        }
        for (size_t left = pending_.size(); left > 0; left--) {
            const uint64_t address = pending_.front();
            pending_.pop_front();
            const int result = serve(address);
            if (result == EAGAIN) pending_.push_back(address);
            if (result == ESRCH || result == ENOENT) return false;
        }
        return true;
    }

    bool has_pending() const { return !pending_.empty(); }

    void report() const {
        std::fprintf(stderr, "uffd_handler: %llu pages copied from the file, %llu zero pages, %llu removes\n",
                     static_cast<unsigned long long>(copied_), static_cast<unsigned long long>(zeroed_),
                     static_cast<unsigned long long>(removes_));
    }

private:
    // The region holding `address` (index), or -1.
    int find(uint64_t address) const {
        for (size_t i = 0; i < regions_.size(); i++) {
            const UffdRegion& r = regions_[i];
            if (address >= r.base_host_virt_addr && address - r.base_host_virt_addr < r.size) return static_cast<int>(i);
        }
        return -1;
    }

    void mark_removed(uint64_t start, uint64_t end) {
        removes_++;
        for (size_t i = 0; i < regions_.size(); i++) {
            const UffdRegion& r = regions_[i];
            const uint64_t from = std::max(start, r.base_host_virt_addr);
            const uint64_t to = std::min(end, r.base_host_virt_addr + r.size);
            for (uint64_t a = from; a < to; a += r.page_size) removed_[i][(a - r.base_host_virt_addr) / r.page_size] = true;
        }
    }

    // Fills the page holding `address`, then its block's neighbours: 0, or the errno of a fault
    // left unserved.
    int serve(uint64_t address) {
        const int index = find(address);
        if (index < 0) throw Error("a fault outside the regions embervm sent");
        const UffdRegion& r = regions_[static_cast<size_t>(index)];
        const uint64_t page = address & ~(r.page_size - 1);
        const int result = fill(static_cast<size_t>(index), page);
        if (result != 0) return result;
        const uint64_t block = std::max<uint64_t>(kPrefetchBytes, r.page_size);
        const uint64_t first = r.base_host_virt_addr + ((page - r.base_host_virt_addr) & ~(block - 1));
        const uint64_t last = std::min(first + block, r.base_host_virt_addr + r.size);
        for (uint64_t p = first; p < last; p += r.page_size) {
            // Each copy wakes whoever waits for that page (another thread may, its fault message
            // still queued: once the page is there, serving that message finds EEXIST, which
            // wakes nobody). EAGAIN here just ends the prefetch.
            if (p != page && fill(static_cast<size_t>(index), p) != 0) break;
        }
        return 0;
    }

    // One page: from the file, or zeros if the guest gave it back. 0 (also when it is there
    // already: EEXIST), or EAGAIN/ESRCH/ENOENT.
    int fill(size_t index, uint64_t page) {
        const UffdRegion& r = regions_[index];
        const uint64_t offset_in_region = page - r.base_host_virt_addr;
        int rc;
        if (removed_[index][offset_in_region / r.page_size]) {
            uffdio_zeropage z{};
            z.range = {page, r.page_size};
            rc = ::ioctl(uffd_, UFFDIO_ZEROPAGE, &z);
            if (rc == 0) zeroed_++;
        } else {
            uffdio_copy c{};
            c.dst = page;
            c.src = reinterpret_cast<uint64_t>(file_ + r.offset + offset_in_region);
            c.len = r.page_size;
            rc = ::ioctl(uffd_, UFFDIO_COPY, &c);
            if (rc == 0) copied_++;
        }
        if (rc == 0 || errno == EEXIST) return 0;
        if (errno == EAGAIN || errno == ESRCH || errno == ENOENT) return errno;
        throw sys_error("filling a page of guest memory");
    }

    static constexpr uint64_t kPrefetchBytes = 64 * 1024;

    int uffd_;
    std::vector<UffdRegion> regions_;
    const uint8_t* file_;
    std::vector<std::vector<bool>> removed_;  // per region, per page: given back by the guest
    std::deque<uint64_t> pending_;           // fault addresses not served yet
    uint64_t copied_ = 0, zeroed_ = 0, removes_ = 0;
};

int run(const std::string& socket_path, const std::string& mem_path) {
    const FileDescriptor file(::open(mem_path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (!file || ::fstat(file.get(), &st) != 0) throw sys_error("MEMFILE " + mem_path);
    const auto size = static_cast<uint64_t>(st.st_size);
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_NORESERVE, file.get(), 0);
    if (map == MAP_FAILED) throw sys_error("mmap of " + mem_path);

    const FileDescriptor conn = accept_one(socket_path);
    FileDescriptor uffd;
    const std::vector<UffdRegion> regions = embervm::snapshot::parse_uffd_regions(receive_message(conn.get(), uffd), size);
    std::fprintf(stderr, "uffd_handler: serving %zu regions from %s\n", regions.size(), mem_path.c_str());
    Handler handler(uffd.get(), regions, static_cast<const uint8_t*>(map));
    while (true) {
        pollfd fds[2] = {{uffd.get(), POLLIN, 0}, {conn.get(), POLLIN | POLLRDHUP, 0}};
        if (::poll(fds, 2, handler.has_pending() ? 1 : -1) < 0) {
            if (errno == EINTR) continue;
            throw sys_error("poll");
        }
        if ((fds[0].revents != 0 || handler.has_pending()) && !handler.serve_events()) break;
        if (fds[1].revents != 0) {
            char byte;
            if (::read(conn.get(), &byte, 1) <= 0) break;  // embervm sends nothing more: the VM ended
        }
    }
    handler.report();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: uffd_handler SOCKET MEMFILE\n");
        return 2;
    }
    try {
        return run(argv[1], argv[2]);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "uffd_handler: %s\n", e.what());
        return 1;
    }
}
