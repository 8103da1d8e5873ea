// EventLoop: the handle devices get to subscribe to the VMM's one event-loop thread (an Asio
// io_context run by the Vmm): watch a file descriptor, run a periodic timer, or run a function
// there. Devices register their own event sources with it when the driver activates them and
// drop them on reset (virtio/device_base.h), so the VMM wires no fd to a device itself.
//
// watch() and timer() objects must be created and destroyed on the loop thread (or while the
// loop does not run): FdWatch and PeriodicTimer are not synchronised. post() may be called from
// any thread; that is how a vCPU thread gets work done on the loop.
#pragma once

#include <functional>
#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "vmm/sys/fd_watch.h"
#include "vmm/sys/periodic_timer.h"

namespace embervm::vmm {

class EventLoop {
public:
    explicit EventLoop(boost::asio::io_context& io) : io_(io) {}
    // A handle: copies refer to the same loop (a device keeps one while activated, so it does
    // not depend on the lifetime of whoever handed it over).
    EventLoop(const EventLoop&) = default;
    EventLoop& operator=(const EventLoop&) = delete;

    boost::asio::io_context& io() const { return io_; }

    // Runs `fn` on the loop thread, after the work queued before it. Any thread.
    void post(std::function<void()> fn) const { boost::asio::post(io_, std::move(fn)); }
    // Calls `on_readable` on the loop thread each time `fd` is readable (FdWatch). Loop thread.
    std::unique_ptr<FdWatch> watch(int fd, std::function<void()> on_readable) const {
        return std::make_unique<FdWatch>(io_, fd, std::move(on_readable));
    }
    // A periodic timer on the loop, not started yet. Loop thread.
    std::unique_ptr<PeriodicTimer> timer(PeriodicTimer::Handler handler) const {
        return std::make_unique<PeriodicTimer>(io_, std::move(handler));
    }

private:
    boost::asio::io_context& io_;
};

}  // namespace embervm::vmm
