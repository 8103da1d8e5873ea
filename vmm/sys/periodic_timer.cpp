// A periodic timer on the event loop whose stop() also drops a firing already queued.
#include "vmm/sys/periodic_timer.h"

namespace embervm::vmm {

struct PeriodicTimer::State {
    State(boost::asio::io_context& io, Handler h) : timer(io), handler(std::move(h)) {}
    boost::asio::steady_timer timer;
    Handler handler;
    std::chrono::nanoseconds interval{0};
    // Bumped by start() and stop(): a completion from an earlier arming is ignored.
    uint64_t generation = 0;
    bool running = false;
};

PeriodicTimer::PeriodicTimer(boost::asio::io_context& io, Handler handler)
    : state_(std::make_shared<State>(io, std::move(handler))) {}

PeriodicTimer::~PeriodicTimer() { stop(); }

void PeriodicTimer::start(std::chrono::nanoseconds interval) {
    state_->interval = interval;
    state_->running = true;
    arm(state_, ++state_->generation);
}

void PeriodicTimer::stop() {
    state_->running = false;
    ++state_->generation;
    state_->timer.cancel();
}

bool PeriodicTimer::running() const { return state_->running; }

void PeriodicTimer::arm(const std::shared_ptr<State>& state, uint64_t generation) {
    state->timer.expires_after(state->interval);
    // The completion keeps the state alive until it has run, even after ~PeriodicTimer.
    state->timer.async_wait([state, generation](const boost::system::error_code& ec) {
        if (ec || !state->running || state->generation != generation) return;
        auto lateness = std::chrono::steady_clock::now() - state->timer.expiry();
        if (lateness < std::chrono::nanoseconds::zero()) lateness = std::chrono::nanoseconds::zero();
        state->handler(lateness);
        // The handler may have stopped or restarted the timer.
        if (state->running && state->generation == generation) arm(state, generation);
    });
}

}  // namespace embervm::vmm
