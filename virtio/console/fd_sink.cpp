// virtio-console's output on a file descriptor, non-blocking where it can be
// (virtio/console/fd_sink.h).
#include "virtio/console/fd_sink.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include "vmm/sys/error.h"
#include "vmm/sys/log.h"

namespace embervm::virtio::console {

namespace asio = boost::asio;
namespace log = embervm::log;

struct FdConsoleSink::Waiter {
    Waiter(asio::io_context& io, int fd) : descriptor(io, fd) {}
    asio::posix::stream_descriptor descriptor;  // owns its duplicate of the sink's fd
    std::function<void()> ready;
    bool waiting = false;
};

namespace {

// A non-blocking open file description of the pipe, FIFO or terminal `fd` names, or nothing.
FileDescriptor reopen_non_blocking(int fd) {
    const std::string path = fmt::format("/proc/self/fd/{}", fd);
    return FileDescriptor(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
}

}  // namespace

FdConsoleSink::FdConsoleSink(asio::io_context& io, int fd, std::string name) : io_(io), name_(std::move(name)) {
    struct stat st {};
    const bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    if (!regular) fd_ = reopen_non_blocking(fd);
    if (!fd_) {
        if (!regular) {
            // A socket, or a device that takes one open only (a virtio-serial port).
            log::info("virtio-console: {} cannot be reopened non-blocking ({}); a slow reader slows the VMM down",
                      name_, std::strerror(errno));
        }
        fd_ = FileDescriptor(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
        if (!fd_) throw sys_error(fmt::format("virtio-console: dup of {}", name_));
        return;
    }
    // Made now, before the event loop's seccomp filter: epoll waits for room on a duplicate.
    FileDescriptor dup(::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 3));
    if (!dup) throw sys_error(fmt::format("virtio-console: dup of {}", name_));
    waiter_ = std::make_shared<Waiter>(io_, dup.release());
}

FdConsoleSink::~FdConsoleSink() = default;

ssize_t FdConsoleSink::write(std::span<const uint8_t> bytes) {
    for (;;) {
        const ssize_t n = ::write(fd_.get(), bytes.data(), bytes.size());
        if (n >= 0) return n;
        if (errno != EINTR) return -errno;
    }
}

void FdConsoleSink::when_writable(std::function<void()> ready) {
    if (!waiter_) {
        // Nothing to wait on (a regular file or a blocking descriptor never reports full).
        asio::post(io_, std::move(ready));
        return;
    }
    waiter_->ready = std::move(ready);
    if (waiter_->waiting) return;
    waiter_->waiting = true;
    waiter_->descriptor.async_wait(asio::posix::stream_descriptor::wait_write,
                                   [weak = std::weak_ptr<Waiter>(waiter_)](const boost::system::error_code& ec) {
                                       const auto w = weak.lock();
                                       if (!w) return;  // the sink went
                                       w->waiting = false;
                                       if (ec == asio::error::operation_aborted) return;
                                       auto ready = std::move(w->ready);
                                       w->ready = nullptr;
                                       if (ready) ready();  // an error also wakes: write() reports it
                                   });
}

}  // namespace embervm::virtio::console
