// Tests for virtio-net's rate limiters (rx_rate_limiter, tx_rate_limiter): frames wait in the
// transmit queue or in the backend while a bucket is empty and move on when the limiter's timer
// fires, on a fake clock; through the harness of net_device_test.cpp.

#include "tests/unit/virtio/net_harness.h"

#include <catch2/catch.hpp>

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_net_rate_limiter_test {

using namespace std::chrono_literals;
using namespace embervm::virtio::net::net_test;

namespace {

// A Harness whose device has these rate limiters on a fake clock (timers[0]: RX, [1]: TX).
std::unique_ptr<Harness> limited_harness(const RateLimiterConfig& rx, const RateLimiterConfig& tx,
                                         const std::shared_ptr<FakeRateLimiterClock>& clock) {
    return std::make_unique<Harness>(false, std::nullopt, 0, net_feature::kCsum | net_feature::kGuestCsum,
                                     [&](NetDeviceOptions& o) {
                                         o.rx_rate_limiter = rx;
                                         o.tx_rate_limiter = tx;
                                         o.clock = clock;
                                     });
}

}  // namespace

TEST_CASE("net rate limiter: TX frames wait in the queue until the timer", "[virtio][net][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    auto hp = limited_harness({}, {std::nullopt, TokenBucketConfig{1, 0, 1000}}, clock);  // one frame per second
    Harness& h = *hp;
    REQUIRE(clock->timers.size() == 2);
    FakeRateLimiterTimer& timer = *clock->timers[1];
    for (int i = 0; i < 3; i++) h.tx->add({{kBufs + 0x1000ULL * i, kNetHdrSize + 100, false}});
    h.kick(1);
    CHECK(h.backend->outbound.size() == 1);
    CHECK(h.tx->used_idx() == 1);
    CHECK(timer.armed_for == 1s);
    CHECK(h.dev->counters().tx_throttled);
    h.kick(1);  // a kick while throttled sends nothing
    CHECK(h.backend->outbound.size() == 1);
    clock->run_timer(timer);
    h.run();
    CHECK(h.backend->outbound.size() == 2);
    clock->run_timer(timer);
    h.run();
    CHECK(h.backend->outbound.size() == 3);
    CHECK(h.tx->used_idx() == 3);
    const auto c = h.dev->counters();
    CHECK_FALSE(c.tx_throttled);
    CHECK(c.tx_rate_limiter_throttled == 2);
    CHECK(c.tx_frames == 3);
    CHECK(h.dev->metrics_json()["tx_rate_limiter_throttled"] == 2);
    // A run-time update lifts the limit at once.
    clock->advance(1s);
    for (int i = 0; i < 3; i++) h.tx->add({{kBufs + 0x1000ULL * i, kNetHdrSize + 100, false}});
    h.kick(1);
    CHECK(h.backend->outbound.size() == 4);
    h.dev->update_rate_limiters(std::nullopt, RateLimiterConfig{});
    h.run();
    CHECK(h.backend->outbound.size() == 6);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("net rate limiter: RX stops reading the TAP while throttled and resumes on the timer",
          "[virtio][net][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    auto hp = limited_harness({TokenBucketConfig{1000, 0, 1000}, std::nullopt}, {}, clock);  // 1000 bytes per second
    Harness& h = *hp;
    FakeRateLimiterTimer& timer = *clock->timers[0];
    for (int i = 0; i < 6; i++) h.rx->add({{kBufs + 0x1000ULL * i, 1526, true}});
    for (int i = 0; i < 3; i++) h.backend->push_frame(600, static_cast<uint8_t>(i));
    CHECK_FALSE(h.receive());  // two frames (the second into debt), then the watch pauses
    CHECK(h.rx->used_idx() == 2);
    CHECK(h.backend->inbound.size() == 1);  // waits in the TAP
    CHECK(timer.armed_for == 201ms);        // 200 bytes of debt, then one token
    CHECK(h.dev->counters().rx_throttled);
    CHECK_FALSE(h.backend_watched());
    h.kick(0);  // a receive kick does not resume a throttled RX
    CHECK(h.rx->used_idx() == 2);
    clock->run_timer(timer);
    h.run();
    CHECK(h.rx->used_idx() == 3);
    CHECK(h.bytes(kBufs + 0x2000 + kNetHdrSize, 600) == packet(600, 2));
    CHECK(h.backend->inbound.empty());
    // That frame put the bucket in debt again: throttled until the next expiry.
    CHECK(h.dev->counters().rx_throttled);
    CHECK(h.dev->counters().rx_rate_limiter_throttled == 2);
    h.backend->push_frame(100, 9);
    CHECK_FALSE(h.receive());
    CHECK(h.rx->used_idx() == 3);
    clock->advance(10s);  // the bucket refills to full
    timer.fire();
    h.run();
    CHECK(h.rx->used_idx() == 4);
    CHECK(h.backend_watched());  // drained with tokens left: watching the TAP again
    CHECK_FALSE(h.dev->counters().rx_throttled);
    h.backend->push_frame(1400, 1);  // more than the 900 tokens left: into debt, throttled
    h.backend->push_frame(100, 2);
    CHECK_FALSE(h.receive());
    REQUIRE(h.dev->counters().rx_throttled);
    // A reset clears the throttled state and the timer.
    h.dev->reset();
    h.run();
    CHECK_FALSE(timer.armed());
    CHECK_FALSE(h.dev->counters().rx_throttled);
}

}  // namespace unit_net_rate_limiter_test
