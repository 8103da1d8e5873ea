// LoopCaller: calls into the event loop from other threads, completed through a promise.
#include "vmm/sys/loop_call.h"

#include <algorithm>
#include <exception>
#include <future>
#include <mutex>
#include <vector>

#include <boost/asio/post.hpp>

namespace embervm::vmm {

namespace {

struct Call {
    std::function<void()> fn;
    std::promise<bool> done;  // true: fn ran (or its exception); false: the loop closed first
};

}  // namespace

struct LoopCaller::State {
    std::mutex mutex;
    bool closed = false;
    std::vector<std::shared_ptr<Call>> waiting;  // posted, not yet taken by the loop

    // Removes `call` from the waiting ones; false if close() answered it already.
    bool take(const std::shared_ptr<Call>& call) {
        std::lock_guard lock(mutex);
        const auto it = std::find(waiting.begin(), waiting.end(), call);
        if (it == waiting.end()) return false;
        waiting.erase(it);
        return true;
    }
};

LoopCaller::LoopCaller(boost::asio::io_context& io) : io_(io), state_(std::make_shared<State>()) {}

LoopCaller::~LoopCaller() { close(); }

bool LoopCaller::call(std::function<void()> fn) {
    if (io_.get_executor().running_in_this_thread()) {
        fn();
        return true;
    }
    auto call = std::make_shared<Call>();
    call->fn = std::move(fn);
    std::future<bool> result = call->done.get_future();
    {
        std::lock_guard lock(state_->mutex);
        if (state_->closed) return false;
        state_->waiting.push_back(call);
    }
    boost::asio::post(io_, [state = state_, call] {
        if (!state->take(call)) return;
        try {
            call->fn();
            call->done.set_value(true);
        } catch (...) {
            call->done.set_exception(std::current_exception());
        }
    });
    return result.get();
}

void LoopCaller::close() {
    std::vector<std::shared_ptr<Call>> unanswered;
    {
        std::lock_guard lock(state_->mutex);
        state_->closed = true;
        unanswered.swap(state_->waiting);
    }
    for (const auto& call : unanswered) call->done.set_value(false);
}

}  // namespace embervm::vmm
