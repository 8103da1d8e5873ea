// PeriodicTimer: calls a handler on the Asio event loop every `interval` until stopped.
//
// stop() is final even when the next expiry has already happened and its handler is queued
// (a bare steady_timer::cancel() cannot take back a completed wait: its handler runs with
// success and re-arms, so a loop waiting for its timers to end never ends).
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

namespace embervm::vmm {

class PeriodicTimer {
public:
    // The handler gets how late this firing is (now minus the expiry it waited for, >= 0).
    using Handler = std::function<void(std::chrono::nanoseconds lateness)>;

    PeriodicTimer(boost::asio::io_context& io, Handler handler);
    ~PeriodicTimer();
    PeriodicTimer(const PeriodicTimer&) = delete;
    PeriodicTimer& operator=(const PeriodicTimer&) = delete;

    // (Re)starts with the first firing one `interval` from now; a running timer takes the new
    // interval at once. Loop thread, or before the loop runs.
    void start(std::chrono::nanoseconds interval);
    // No firing after this returns, queued or not. Loop thread, or after the loop ended.
    void stop();
    bool running() const;

private:
    struct State;
    static void arm(const std::shared_ptr<State>& state, uint64_t generation);
    std::shared_ptr<State> state_;
};

}  // namespace embervm::vmm
