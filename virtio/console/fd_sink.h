// FdConsoleSink: virtio-console's output (sink.h) on a file descriptor: the process's stdout or
// the --serial-out file, the same output as the UART's (vmm/console.h).
//
// Writes never block the event loop where the descriptor could: a pipe, FIFO or terminal is
// opened anew through /proc/self/fd, non-blocking, so the flags of the descriptor the process
// shares with others (its stdout) stay as they are; a full one returns -EAGAIN, and
// when_writable() waits for it on the loop (epoll). A regular file is written as it is (it
// never reports full). A socket cannot be opened that way: it is written through a duplicate,
// blocking as the process's stdout is (logged once).
#pragma once

#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

#include "virtio/console/sink.h"
#include "vmm/sys/fd.h"

namespace embervm::virtio::console {

class FdConsoleSink : public ConsoleSink {
public:
    // `fd` is borrowed only during the constructor. Throws Error if it cannot be duplicated.
    FdConsoleSink(boost::asio::io_context& io, int fd, std::string name);
    ~FdConsoleSink() override;

    ssize_t write(std::span<const uint8_t> bytes) override;
    void when_writable(std::function<void()> ready) override;
    std::string name() const override { return name_; }

private:
    struct Waiter;
    boost::asio::io_context& io_;
    FileDescriptor fd_;
    std::string name_;
    std::shared_ptr<Waiter> waiter_;  // for a non-blocking descriptor
};

}  // namespace embervm::virtio::console
