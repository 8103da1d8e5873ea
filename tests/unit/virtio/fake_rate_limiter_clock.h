// Test helper: a RateLimiterClock whose time moves only when the test says so, and whose timers
// record what they were armed for and fire only when the test fires them (their fd is an
// eventfd), so rate-limiter tests need no sleeps and no timing windows.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "virtio/rate_limiter.h"
#include "vmm/sys/eventfd.h"

namespace embervm::virtio::testing {

class FakeRateLimiterTimer final : public RateLimiterTimer {
public:
    int fd() const override { return event.fd(); }
    void arm(std::chrono::nanoseconds after) override {
        armed_for = after;
        arms++;
        event.consume();  // re-arming or disarming forgets an expiry not yet read
    }
    void consume() override { event.consume(); }

    bool armed() const { return armed_for.count() != 0; }
    // The timer expires: its fd becomes readable (the armed time stays for the test to read).
    void fire() {
        armed_for = std::chrono::nanoseconds(0);
        event.signal();
    }

    vmm::EventFd event;
    std::chrono::nanoseconds armed_for{0};  // 0: disarmed
    int arms = 0;
};

class FakeRateLimiterClock final : public RateLimiterClock {
public:
    time_point now() const override { return now_; }
    std::unique_ptr<RateLimiterTimer> make_timer() const override {
        auto t = std::make_unique<FakeRateLimiterTimer>();
        timers.push_back(t.get());
        return t;
    }
    void advance(std::chrono::nanoseconds d) { now_ += d; }
    // Moves the time to when `timer` expires and fires it.
    void run_timer(FakeRateLimiterTimer& timer) {
        advance(timer.armed_for);
        timer.fire();
    }

    mutable std::vector<FakeRateLimiterTimer*> timers;  // in creation order; owned by the limiters

private:
    time_point now_{std::chrono::seconds(1000)};
};

}  // namespace embervm::virtio::testing
