// The Uffd memory backend: the userfaultfd, its registration, the handover to the page-fault
// handler and the watch on it (see uffd_backend.h).
#include "vmm/snapshot/uffd_backend.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

#include "memory/guest_memory.h"
#include "vmm/sys/error.h"
#include "vmm/sys/unix_socket.h"
#include "vmm/sys/fd_passing.h"
#include "vmm/sys/log.h"
#include "vmm/sys/seccomp.h"

namespace embervm::snapshot {

namespace {

constexpr uint64_t kPage = 4096;

// A userfaultfd, non-blocking (the handler polls it). userfaultfd(2) first; where the sysctl
// vm.unprivileged_userfaultfd keeps it from this process, /dev/userfaultfd if it may open that.
FileDescriptor create_userfaultfd() {
    const int flags = O_CLOEXEC | O_NONBLOCK;
    FileDescriptor fd(static_cast<int>(::syscall(SYS_userfaultfd, flags)));
    if (fd) return fd;
    const int err = errno;
    if (err == EPERM) {
        const FileDescriptor dev(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
        if (dev) {
            fd.reset(::ioctl(dev.get(), USERFAULTFD_IOC_NEW, flags));
            if (fd) return fd;
        }
    }
    const std::string hint = err == EPERM ? " (needs root or CAP_SYS_PTRACE, sysctl vm.unprivileged_userfaultfd=1, "
                                            "or read-write access to /dev/userfaultfd)"
                                          : "";
    throw Error(sys_error("mem_backend: Uffd: userfaultfd", err).what() + hint);
}

FileDescriptor connect_to_handler(const std::string& path) {
    const auto addr = unix_address(path);
    if (!addr) {
        throw Error(fmt::format("mem_backend.backend_path: '{}' is not a Unix socket path (1 to {} bytes)", path,
                                kMaxUnixSocketPath));
    }
    FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw sys_error("mem_backend: Uffd: socket");
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
        const int err = errno;
        if (err == ENOENT) {
            throw Error(fmt::format("mem_backend.backend_path: {}: no such socket (start the page-fault handler "
                                    "first)", path));
        }
        if (err == ECONNREFUSED) {
            throw Error(fmt::format("mem_backend.backend_path: {}: no page-fault handler listens there", path));
        }
        throw sys_error(fmt::format("mem_backend.backend_path: {}: cannot connect", path), err);
    }
    return fd;
}

// The regions message with the userfaultfd, all of it (a short write goes on without the fd).
void send_regions(int conn, const std::string& text, int uffd, const std::string& path) {
    size_t done = 0;
    while (done < text.size()) {
        const std::span<const uint8_t> rest(reinterpret_cast<const uint8_t*>(text.data()) + done, text.size() - done);
        const ssize_t n = send_with_fd(conn, rest, done == 0 ? uffd : -1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw sys_error(fmt::format("mem_backend.backend_path: {}: cannot send the regions", path));
        done += static_cast<size_t>(n);
    }
}

}  // namespace

UffdBackend::UffdBackend(const memory::GuestMemory& mem, const std::string& socket_path) : socket_path_(socket_path) {
    if (mem.backing() != memory::MemoryBacking::Private) {
        throw Error("mem_backend: Uffd cannot serve guest memory shared with a vhost-user backend (use File)");
    }
    uffd_ = create_userfaultfd();
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = UFFD_FEATURE_EVENT_REMOVE;
    if (::ioctl(uffd_.get(), UFFDIO_API, &api) != 0) {
        throw sys_error("mem_backend: Uffd: UFFDIO_API with UFFD_FEATURE_EVENT_REMOVE");
    }
    features_ = api.features;
    uint64_t offset = 0;
    for (const memory::GuestRegion& region : mem.regions()) {
        uffdio_register reg{};
        reg.range.start = reinterpret_cast<uint64_t>(region.host_base());
        reg.range.len = region.size();
        reg.mode = UFFDIO_REGISTER_MODE_MISSING;
        if (::ioctl(uffd_.get(), UFFDIO_REGISTER, &reg) != 0) {
            throw sys_error(fmt::format("mem_backend: Uffd: UFFDIO_REGISTER of guest memory at {:#x} ({} MiB)",
                                        region.start().value, region.size() >> 20));
        }
        const uint64_t needed = (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_ZEROPAGE) | (1ULL << _UFFDIO_WAKE);
        if ((reg.ioctls & needed) != needed) {
            throw Error(fmt::format("mem_backend: Uffd: the kernel offers no UFFDIO_COPY/ZEROPAGE/WAKE on guest "
                                    "memory at {:#x}", region.start().value));
        }
        regions_.push_back({reg.range.start, region.size(), offset, kPage});
        offset += region.size();
    }
    conn_ = connect_to_handler(socket_path);
    send_regions(conn_.get(), encode_uffd_regions(regions_) + "\n", uffd_.get(), socket_path);
    stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_) throw sys_error("mem_backend: Uffd: eventfd");
    log::info("guest memory: {} MiB served by the page-fault handler at {} (userfaultfd, {} regions)",
              offset >> 20, socket_path, regions_.size());
}

UffdBackend::~UffdBackend() {
    if (watcher_.joinable()) {
        const uint64_t one = 1;
        [[maybe_unused]] const ssize_t n = ::write(stop_.get(), &one, sizeof(one));
        watcher_.join();
    }
}

void UffdBackend::watch(std::function<void(const std::string&)> on_gone, bool seccomp) {
    watcher_ = std::thread([this, on_gone = std::move(on_gone), seccomp] { watch_thread(on_gone, seccomp); });
}

void UffdBackend::watch_thread(std::function<void(const std::string&)> on_gone, bool seccomp) {
    if (seccomp) {
        try {
            seccomp::install_on_this_thread(seccomp::ThreadKind::EventLoop);
        } catch (const std::exception& e) {
            on_gone(fmt::format("mem_backend: the page-fault handler's watch: {}", e.what()));
            return;
        }
    }
    bool warned = false;
    while (true) {
        pollfd fds[2] = {{conn_.get(), POLLIN | POLLRDHUP, 0}, {stop_.get(), POLLIN, 0}};
        const int n = ::poll(fds, 2, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || (fds[1].revents & POLLIN) != 0) return;
        if (fds[0].revents == 0) continue;
        // The handler has nothing to say on this socket: bytes are read and dropped (never
        // parsed); the end of the stream or an error means it is gone.
        char buf[256];
        const ssize_t got = (fds[0].revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0 ? 0 : ::read(conn_.get(), buf, sizeof(buf));
        if (got < 0 && errno == EINTR) continue;
        if (got > 0) {
            if (!warned) log::warn("mem_backend: the page-fault handler at {} sent bytes; ignored", socket_path_);
            warned = true;
            continue;
        }
        on_gone(fmt::format("mem_backend: the Uffd page-fault handler at {} closed its connection: the guest's "
                            "memory can no longer be served, ending the VM", socket_path_));
        // Wakes whatever still waits for a page (the VM is ending): the pages read as zeros now.
        uffd_.reset();
        return;
    }
}

}  // namespace embervm::snapshot
