// FdWatch: calls a handler on the Asio event loop (epoll) each time a file descriptor becomes
// readable: queue-notify ioeventfds, block-backend completion eventfds, TAP fds. The handler
// must consume what made the fd readable (read the eventfd) or it is called again at once,
// unless it pauses the watch.
#pragma once

#include <functional>
#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

namespace embervm::vmm {

class FdWatch {
public:
    // `fd` stays owned by the caller and must outlive the watch; the watch uses a duplicate
    // of it, so that epoll registration and the caller's descriptor are independent.
    FdWatch(boost::asio::io_context& io, int fd, std::function<void()> on_readable);
    ~FdWatch();
    FdWatch(const FdWatch&) = delete;
    FdWatch& operator=(const FdWatch&) = delete;

    // Stops calling the handler, without consuming anything, until resume(): for a source that
    // must not be read now (a TAP while the guest has no receive buffers). Event-loop thread
    // only (typically called from the handler itself).
    void pause();
    // Watches again; a source that stayed readable calls the handler at once. Any thread (the
    // work is posted to the event loop). Harmless when not paused.
    void resume();

private:
    struct State;
    static void arm(const std::shared_ptr<State>& state);
    std::shared_ptr<State> state_;
};

}  // namespace embervm::vmm
