#include "vmm/fd_watch.h"

#include <fcntl.h>
#include <unistd.h>

#include "vmm/error.h"
#include "vmm/log.h"

namespace embervm::vmm {

struct FdWatch::State {
    State(boost::asio::io_context& io, int fd, std::function<void()> handler)
        : descriptor(io, fd), on_readable(std::move(handler)) {}
    boost::asio::posix::stream_descriptor descriptor;
    std::function<void()> on_readable;
    bool stopped = false;
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

void FdWatch::arm(const std::shared_ptr<State>& state) {
    // The completion handler keeps the state alive until it has run, even after ~FdWatch.
    state->descriptor.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                                 [state](const boost::system::error_code& ec) {
                                     if (ec || state->stopped) {
                                         if (ec && ec != boost::asio::error::operation_aborted) {
                                             log::error("event loop: wait on fd failed: {}", ec.message());
                                         }
                                         return;
                                     }
                                     state->on_readable();
                                     if (!state->stopped) {
                                         arm(state);
                                     }
                                 });
}

}  // namespace embervm::vmm
