// Tests for the rate limiter of virtio/block/block_device, on the fake backend and a fake clock:
// requests wait in the ring and resume on the limiter's timer; reset and run-time updates.
#include <catch2/catch.hpp>

#include <memory>
#include <vector>

#include "tests/unit/virtio/block/block_harness.h"
#include "tests/unit/virtio/fake_rate_limiter_clock.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_block_device_rate_limit_test {

using namespace std::chrono_literals;
using namespace embervm::virtio;
using namespace embervm::virtio::block;
using namespace embervm::virtio::testing;

namespace {

BlockDeviceOptions limited(const RateLimiterConfig& rl, const std::shared_ptr<FakeRateLimiterClock>& clock) {
    BlockDeviceOptions o{"blk0", false, true};
    o.rate_limiter = rl;
    o.clock = clock;
    return o;
}

// `n` reads of `bytes` each, made available (no kick).
std::vector<Request> reads(Harness& h, int n, uint32_t bytes = 512) {
    std::vector<Request> out;
    for (int i = 0; i < n; i++) out.push_back(h.request(req::kIn, 0, {W(kData + 0x2000ULL * i, bytes)}));
    return out;
}

}  // namespace

TEST_CASE("virtio-blk rate limiter: an empty ops bucket leaves requests in the ring until the timer",
          "[virtio][block][block_device][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    Harness h(limited({std::nullopt, TokenBucketConfig{2, 0, 1000}}, clock));  // 2 requests per second
    REQUIRE(clock->timers.size() == 1);
    FakeRateLimiterTimer& timer = *clock->timers[0];
    const auto r = reads(h, 5);
    h.notify();
    h.run();
    CHECK(h.used_idx() == 2);
    CHECK(h.backend->log.size() == 2);  // the others never reached the backend
    CHECK(timer.armed_for == 500ms);
    CHECK(h.dev->counters().rate_limiter_throttled);
    CHECK(h.dev->counters().rate_limiter_throttled_events == 1);
    CHECK(h.dev->metrics_json()["rate_limiter_throttled"] == 1);
    // Kicks while throttled change nothing (and arm nothing new).
    h.notify();
    h.run();
    CHECK(h.used_idx() == 2);
    CHECK(timer.arms == 1);
    // Each expiry lets one more through (one op per 500 ms).
    for (uint16_t want = 3; want <= 5; want++) {
        clock->run_timer(timer);
        h.run();
        CHECK(h.used_idx() == want);
    }
    for (const Request& q : r) CHECK(h.status(q) == blk_status::kOk);
    CHECK_FALSE(h.dev->counters().rate_limiter_throttled);
    CHECK(h.dev->counters().rate_limiter_throttled_events == 3);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk rate limiter: bandwidth counts the data bytes; a request larger than the bucket goes into debt",
          "[virtio][block][block_device][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    Harness h(limited({TokenBucketConfig{2048, 0, 1000}, std::nullopt}, clock));  // 2 KiB per second
    FakeRateLimiterTimer& timer = *clock->timers[0];
    reads(h, 1, 4096);  // twice the bucket: passes on the full bucket
    reads(h, 1, 512);
    h.notify();
    h.run();
    CHECK(h.used_idx() == 1);
    // 2048 bytes of debt, then 512 bytes: 2560 bytes at 2 KiB/s.
    CHECK(timer.armed_for == 1250ms);
    clock->run_timer(timer);
    h.run();
    CHECK(h.used_idx() == 2);
    CHECK(h.dev->counters().read_bytes == 4096 + 512);
}

TEST_CASE("virtio-blk rate limiter: a reset disarms the timer and clears the throttled state",
          "[virtio][block][block_device][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    Harness h(limited({std::nullopt, TokenBucketConfig{1, 0, 1000}}, clock));
    FakeRateLimiterTimer& timer = *clock->timers[0];
    reads(h, 3);
    h.notify();
    h.run();
    CHECK(h.used_idx() == 1);
    REQUIRE(timer.armed());
    h.dev->reset();
    h.run();
    CHECK_FALSE(timer.armed());
    CHECK_FALSE(h.dev->counters().rate_limiter_throttled);
    // The tokens are not given back by the reset: the new activation waits for the refill.
    h.activate();
    reads(h, 1);
    h.notify();
    h.run();
    CHECK(h.used_idx() == 0);
    CHECK(timer.armed_for == 1s);
    clock->run_timer(timer);
    h.run();
    CHECK(h.used_idx() == 1);
    CHECK(h.backend->log.size() == 2);  // the two requests dropped by the reset never ran
}

TEST_CASE("virtio-blk rate limiter: an update at run time applies at once", "[virtio][block][block_device][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    Harness h(limited({std::nullopt, TokenBucketConfig{1, 0, 1000}}, clock));
    FakeRateLimiterTimer& timer = *clock->timers[0];
    reads(h, 4);
    h.notify();
    h.run();
    CHECK(h.used_idx() == 1);
    CHECK(h.dev->rate_limiter().ops->size == 1);
    // No limit: the waiting requests go at once, without the timer.
    h.dev->update_rate_limiter({});
    h.run();
    CHECK(h.used_idx() == 4);
    CHECK_FALSE(timer.armed());
    CHECK_FALSE(h.dev->rate_limiter().ops.has_value());
    CHECK_FALSE(h.dev->counters().rate_limiter_throttled);
    // And a limit again.
    h.dev->update_rate_limiter({std::nullopt, TokenBucketConfig{2, 0, 100}});
    reads(h, 3);
    h.notify();
    h.run();
    CHECK(h.used_idx() == 6);
    CHECK(timer.armed_for == 50ms);
}

TEST_CASE("virtio-blk rate limiter: without a limit nothing is held back", "[virtio][block][block_device][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    Harness h(limited({}, clock));
    reads(h, 40, 4096);
    h.notify();
    h.run();
    CHECK(h.used_idx() == 40);
    CHECK(clock->timers[0]->arms == 0);
    CHECK(h.dev->counters().rate_limiter_throttled_events == 0);
}

}  // namespace unit_block_device_rate_limit_test
