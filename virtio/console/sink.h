// ConsoleSink: where virtio-console's transmit queue (the guest's output on hvc0) goes. The
// device talks to this interface only, so tests give it a fake that fills up and drains on
// demand; the VMM gives it an FdConsoleSink (fd_sink.h) on stdout or the --serial-out file.
//
// Threading: not synchronised; the device calls it under its own lock, on the event loop.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>

namespace embervm::virtio::console {

class ConsoleSink {
public:
    virtual ~ConsoleSink() = default;

    // Writes a prefix of `bytes` without blocking: the bytes taken (at least 1 for a non-empty
    // span), -EAGAIN when the sink takes nothing now (a pipe whose reader is slow), or another
    // -errno when it is gone for good (EPIPE, EIO, ENOSPC: the device drops the output then).
    virtual ssize_t write(std::span<const uint8_t> bytes) = 0;
    // After write() returned -EAGAIN: calls `ready` once, on the event loop, when the sink may
    // take bytes again. A second call before `ready` ran replaces the callback. `ready` may run
    // after the device went away: it must hold what it touches (a shared_ptr, an eventfd).
    virtual void when_writable(std::function<void()> ready) = 0;
    // For logs: "stdout", "console.txt".
    virtual std::string name() const = 0;
};

}  // namespace embervm::virtio::console
