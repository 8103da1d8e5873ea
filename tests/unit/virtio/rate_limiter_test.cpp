// Tests for virtio/rate_limiter: token buckets and the limiter on a fake clock (no sleeps).
#include "virtio/rate_limiter.h"

#include <poll.h>

#include <catch2/catch.hpp>

#include "tests/unit/virtio/fake_rate_limiter_clock.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_rate_limiter_test {

using namespace std::chrono_literals;
using namespace embervm::virtio;
using embervm::virtio::testing::FakeRateLimiterClock;

namespace {

const RateLimiterClock::time_point kT0{std::chrono::seconds(1000)};

}  // namespace

TEST_CASE("token bucket: starts full, refills at size per refill_time, never above size", "[virtio][rate_limiter]") {
    TokenBucket b({1000, 0, 100}, kT0);  // 1000 tokens per 100 ms
    CHECK(b.tokens(kT0) == 1000);
    REQUIRE(b.can_take(1000, kT0));
    b.take(1000);
    CHECK(b.tokens(kT0) == 0);
    CHECK_FALSE(b.can_take(1, kT0));
    CHECK(b.tokens(kT0 + 10ms) == 100);
    CHECK(b.tokens(kT0 + 50ms) == 500);
    CHECK(b.tokens(kT0 + 1s) == 1000);  // capped
    // Fractions are not lost: 1 token per 100 us, asked every 30 us.
    TokenBucket slow({1000, 0, 100}, kT0);
    slow.take(1000);
    auto t = kT0;
    for (int i = 0; i < 10; i++) slow.tokens(t += 30us);
    CHECK(slow.tokens(t) == 3);  // 300 us
}

TEST_CASE("token bucket: the one-time burst goes first and never comes back", "[virtio][rate_limiter]") {
    TokenBucket b({100, 250, 1000}, kT0);
    CHECK(b.can_take(300, kT0));  // 250 burst + 50 of the bucket
    b.take(300);
    CHECK(b.burst_left() == 0);
    CHECK(b.tokens(kT0) == 50);
    CHECK(b.tokens(kT0 + 10s) == 100);
    CHECK(b.burst_left() == 0);
    TokenBucket small({100, 40, 1000}, kT0);
    small.take(30);
    CHECK(small.burst_left() == 10);
    CHECK(small.tokens(kT0) == 100);
}

TEST_CASE("token bucket: a request larger than the size passes on a full bucket and leaves debt",
          "[virtio][rate_limiter]") {
    TokenBucket b({1000, 0, 1000}, kT0);  // 1000 per second
    b.take(1);
    CHECK_FALSE(b.can_take(2500, kT0));       // not full
    CHECK(b.wait_for(2500, kT0) == 1ms);      // one token to full
    REQUIRE(b.can_take(2500, kT0 + 1ms));
    b.take(2500);
    CHECK(b.tokens(kT0 + 1ms) == -1500);
    // The debt is paid back before a one-token request passes: 1.501 s.
    CHECK(b.wait_for(1, kT0 + 1ms) == 1501ms);
    CHECK_FALSE(b.can_take(1, kT0 + 1501ms));
    CHECK(b.can_take(1, kT0 + 1502ms));
}

TEST_CASE("token bucket: wait_for is the time until the tokens are there", "[virtio][rate_limiter]") {
    TokenBucket b({200, 0, 1000}, kT0);  // 200 per second: one per 5 ms
    b.take(200);
    CHECK(b.wait_for(1, kT0) == 5ms);
    CHECK(b.wait_for(10, kT0) == 50ms);
    CHECK(b.wait_for(10, kT0 + 2ms) == 48ms);  // part of the first token accrued already
    CHECK(b.wait_for(10, kT0 + 50ms) == 0ns);
    CHECK(b.can_take(10, kT0 + 50ms));
}

TEST_CASE("token bucket: update keeps the tokens, at most the new size", "[virtio][rate_limiter]") {
    TokenBucket b({1000, 0, 1000}, kT0);
    b.take(400);
    b.update({500, 0, 100}, kT0);
    CHECK(b.tokens(kT0) == 500);
    b.take(500);
    CHECK(b.tokens(kT0 + 10ms) == 50);  // the new refill rate: 500 per 100 ms
    b.take(100);
    b.update({2000, 0, 1000}, kT0 + 10ms);
    CHECK(b.tokens(kT0 + 10ms) == -50);  // debt is kept
}

TEST_CASE("rate limiter: consume takes from both buckets or none, and blocks with the timer armed",
          "[virtio][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    RateLimiter rl({TokenBucketConfig{4096, 0, 1000}, TokenBucketConfig{2, 0, 1000}}, clock);
    REQUIRE(clock->timers.size() == 1);
    auto& timer = *clock->timers[0];
    CHECK(rl.timer_fd() == timer.fd());
    CHECK(rl.limited());
    CHECK(rl.consume(1024));
    CHECK(rl.consume(1024));
    CHECK_FALSE(rl.consume(1024));  // ops empty: one op per 500 ms
    CHECK(rl.blocked());
    CHECK(rl.throttled_events() == 1);
    CHECK(timer.armed_for == 500ms);
    CHECK(*rl.bandwidth_tokens() == 2048);  // nothing taken from the other bucket
    // Blocked: refused without looking at the buckets, even when tokens are there.
    clock->advance(600ms);
    CHECK_FALSE(rl.consume(1));
    CHECK(rl.throttled_events() == 1);
    timer.fire();
    CHECK(rl.on_timer());
    CHECK_FALSE(rl.blocked());
    CHECK(rl.consume(1024));
    CHECK_FALSE(rl.on_timer());  // not blocked: nothing to retry
}

TEST_CASE("rate limiter: the wait is the longer of the two buckets'", "[virtio][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    RateLimiter rl({TokenBucketConfig{1000, 0, 1000}, TokenBucketConfig{100, 0, 100}}, clock);
    auto& timer = *clock->timers[0];
    CHECK(rl.consume(1000));
    CHECK_FALSE(rl.consume(300));
    CHECK(timer.armed_for == 300ms);
    clock->run_timer(timer);
    CHECK(rl.on_timer());
    CHECK(rl.consume(300));
}

TEST_CASE("rate limiter: no bucket, size 0 or refill_time 0 is no limit", "[virtio][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    for (const RateLimiterConfig& c : {RateLimiterConfig{}, RateLimiterConfig{TokenBucketConfig{0, 0, 1000}, std::nullopt},
                                        RateLimiterConfig{std::nullopt, TokenBucketConfig{10, 0, 0}}}) {
        RateLimiter rl(c, clock);
        CHECK_FALSE(rl.limited());
        for (int i = 0; i < 1000; i++) REQUIRE(rl.consume(1 << 20));
        CHECK(rl.ready());
        CHECK(rl.throttled_events() == 0);
    }
}

TEST_CASE("rate limiter: charge after the fact goes into debt, ready() waits it out", "[virtio][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    RateLimiter rl({TokenBucketConfig{1000, 0, 100}, std::nullopt}, clock);  // 10 bytes per ms
    auto& timer = *clock->timers[0];
    CHECK(rl.ready());
    rl.charge(1500);  // a 1500-byte frame on a 1000-byte bucket
    CHECK(*rl.bandwidth_tokens() == -500);
    CHECK_FALSE(rl.ready());
    CHECK(timer.armed_for == 50100us);  // back to one token: 501 bytes at 10 per ms
    clock->run_timer(timer);
    CHECK(rl.on_timer());
    CHECK(rl.ready());
}

TEST_CASE("rate limiter: give_back returns what a request that did not go ahead took", "[virtio][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    RateLimiter rl({TokenBucketConfig{1000, 0, 1000}, TokenBucketConfig{1, 0, 1000}}, clock);
    CHECK(rl.consume(600));
    rl.give_back(600);
    CHECK(*rl.bandwidth_tokens() == 1000);
    CHECK(*rl.ops_tokens() == 1);
    CHECK(rl.consume(600));
}

TEST_CASE("rate limiter: update at run time unblocks and applies the new rate", "[virtio][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    RateLimiter rl({std::nullopt, TokenBucketConfig{10, 0, 1000}}, clock);
    auto& timer = *clock->timers[0];
    for (int i = 0; i < 10; i++) REQUIRE(rl.consume(0));
    CHECK_FALSE(rl.consume(0));
    CHECK(timer.armed_for == 100ms);
    // Ten times the rate: the limiter is unblocked, the timer disarmed, the tokens kept (0).
    rl.update({std::nullopt, TokenBucketConfig{100, 0, 1000}});
    CHECK_FALSE(rl.blocked());
    CHECK_FALSE(timer.armed());
    CHECK_FALSE(rl.consume(0));
    CHECK(timer.armed_for == 10ms);
    clock->run_timer(timer);
    CHECK(rl.on_timer());
    CHECK(rl.consume(0));
    // A bandwidth bucket added later starts full, with its burst.
    clock->advance(1s);
    rl.update({TokenBucketConfig{100, 50, 1000}, TokenBucketConfig{100, 0, 1000}});
    CHECK(*rl.bandwidth_tokens() == 100);
    CHECK(rl.consume(150));
    CHECK(*rl.bandwidth_tokens() == 0);
    // Removing every bucket lifts the limit.
    rl.update({});
    CHECK_FALSE(rl.limited());
    CHECK(rl.consume(1 << 30));
}

TEST_CASE("rate limiter: reset_timer disarms and unblocks but keeps the tokens", "[virtio][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    RateLimiter rl({TokenBucketConfig{100, 0, 1000}, std::nullopt}, clock);
    auto& timer = *clock->timers[0];
    CHECK(rl.consume(100));
    CHECK_FALSE(rl.consume(50));
    REQUIRE(timer.armed());
    rl.reset_timer();
    CHECK_FALSE(timer.armed());
    CHECK_FALSE(rl.blocked());
    CHECK(*rl.bandwidth_tokens() == 0);
    CHECK_FALSE(rl.consume(50));  // still no tokens: blocked again
}

TEST_CASE("rate limiter: the real timer is a timerfd that fires", "[virtio][rate_limiter]") {
    RateLimiter rl({TokenBucketConfig{1, 0, 1}, std::nullopt});  // 1 byte per ms
    for (int i = 0; i < 1'000'000 && rl.consume(1); i++) {
    }
    REQUIRE(rl.blocked());
    pollfd pfd{rl.timer_fd(), POLLIN, 0};
    REQUIRE(::poll(&pfd, 1, 5000) == 1);  // within 1 ms; 5 s only against a stuck machine
    CHECK(rl.on_timer());
    CHECK(rl.consume(1));
}

}  // namespace unit_rate_limiter_test
