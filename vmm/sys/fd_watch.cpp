// FdWatch: a readable file descriptor calls its handler on the event loop.
#include "vmm/sys/fd_watch.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/post.hpp>

#include "vmm/sys/error.h"
#include "vmm/sys/log.h"

namespace embervm::vmm {

struct FdWatch::State {
    State(boost::asio::io_context& io, int fd, std::function<void()> handler)
        : descriptor(io, fd), on_readable(std::move(handler)) {}
    boost::asio::posix::stream_descriptor descriptor;
    std::function<void()> on_readable;
    bool stopped = false;
    bool paused = false;
    bool armed = false;  // an async_wait is outstanding
};

FdWatch::FdWatch(boost::asio::io_context& io, int fd, std::function<void()> on_readable) {
    const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (dup < 0) {
        throw sys_error("dup of a watched file descriptor");
    }
    state_ = std::make_shared<State>(io, dup, std::move(on_readable));
    arm(state_);
}

FdWatch::~FdWatch() {
    state_->stopped = true;
    boost::system::error_code ignored;
    state_->descriptor.cancel(ignored);
    state_->descriptor.close(ignored);
}

void FdWatch::pause() {
    state_->paused = true;
    if (state_->armed) {
        boost::system::error_code ignored;
        state_->descriptor.cancel(ignored);  // the wait completes with operation_aborted
    }
}

void FdWatch::resume() {
    boost::asio::post(state_->descriptor.get_executor(), [state = state_] {
        if (state->stopped || !state->paused) return;
        state->paused = false;
        if (!state->armed) arm(state);
    });
}

void FdWatch::arm(const std::shared_ptr<State>& state) {
    state->armed = true;
    // The completion handler keeps the state alive until it has run, even after ~FdWatch.
    state->descriptor.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                                 [state](const boost::system::error_code& ec) {
                                     state->armed = false;
                                     if (ec || state->stopped || state->paused) {
                                         if (ec && ec != boost::asio::error::operation_aborted) {
                                             log::error("event loop: wait on fd failed: {}", ec.message());
                                         }
                                         return;
                                     }
                                     state->on_readable();
                                     if (!state->stopped && !state->paused) {
                                         arm(state);
                                     }
                                 });
}

}  // namespace embervm::vmm
