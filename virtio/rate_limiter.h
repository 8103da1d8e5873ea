// I/O rate limiter of a virtio device (Firecracker's RateLimiter): two token buckets, one for
// bytes ("bandwidth") and one for requests ("ops"), each optional. A bucket holds at most
// `size` tokens and refills at size / refill_time (a full refill of `size` takes refill_time
// ms); `one_time_burst` tokens are there once, spent before the bucket's own, never refilled.
//
// Semantics (what the devices rely on):
//   - consume(bytes): a request takes 1 op and `bytes` tokens, from both buckets or from none.
//     When a bucket cannot give them, the limiter is "blocked": its wake-up timer is armed for
//     the moment the tokens will be there, and consume() refuses everything until the timer
//     fired (the device then calls on_timer() and tries again). No polling.
//   - A request larger than a bucket's size could never be served whole: it is let through
//     once that bucket is full, and the bucket goes into debt (negative tokens) that the refill
//     pays back before anything else passes. The long-run rate stays size / refill_time.
//   - charge(bytes): takes 1 op and `bytes` tokens whatever the buckets hold (debt allowed),
//     for a cost known only after the fact (a received frame); ready() says whether the
//     buckets have anything left (at least one token each), arming the timer when not.
//   - A bucket with size 0 is no limit (as in Firecracker).
//   - update(config): new sizes and refill times at run time. A bucket that stays keeps its
//     tokens (at most the new size; debt is kept), a new one starts full with its
//     one_time_burst; the limiter is unblocked (the device tries again at once).
//   - reset_timer(): the device was reset: the timer is disarmed and the limiter unblocked;
//     the tokens stay (a reset buys no bandwidth).
//
// Time comes from a RateLimiterClock (steady_clock and a timerfd in the VMM; a fake in tests).
// Not synchronised: the owning device's lock guards it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

namespace embervm::virtio {

// Firecracker's TokenBucket: size and one_time_burst in tokens (bytes or operations),
// refill_time in milliseconds.
struct TokenBucketConfig {
    uint64_t size = 0;
    uint64_t one_time_burst = 0;
    uint64_t refill_time_ms = 0;

    bool operator==(const TokenBucketConfig&) const = default;
};

// Firecracker's RateLimiter: no bucket, no limit.
struct RateLimiterConfig {
    std::optional<TokenBucketConfig> bandwidth;
    std::optional<TokenBucketConfig> ops;

    bool operator==(const RateLimiterConfig&) const = default;
};
// Whether a limiter holds anything back (a bucket of size 0 is no limit).
inline bool limits(const RateLimiterConfig& c) {
    return (c.bandwidth && c.bandwidth->size != 0) || (c.ops && c.ops->size != 0);
}

// The limits on the values (the config's checks use them; the arithmetic relies on them).
inline constexpr uint64_t kMaxBucketTokens = uint64_t{1} << 52;
inline constexpr uint64_t kMaxRefillTimeMs = uint64_t{1} << 32;  // about 50 days

// The one-shot wake-up of a blocked limiter: an fd the device watches on its event loop.
class RateLimiterTimer {
public:
    virtual ~RateLimiterTimer() = default;
    virtual int fd() const = 0;
    // Fires once, `after` from now (the fd becomes readable); zero disarms.
    virtual void arm(std::chrono::nanoseconds after) = 0;
    // Takes the expiry from the fd (after it was readable).
    virtual void consume() = 0;
};

// Where a limiter gets the time and its timer.
class RateLimiterClock {
public:
    using time_point = std::chrono::steady_clock::time_point;
    virtual ~RateLimiterClock() = default;
    virtual time_point now() const = 0;
    virtual std::unique_ptr<RateLimiterTimer> make_timer() const = 0;
};
// steady_clock and a timerfd on CLOCK_MONOTONIC.
std::shared_ptr<const RateLimiterClock> steady_rate_limiter_clock();

// One bucket. Tokens are signed: a negative count is debt.
class TokenBucket {
public:
    using time_point = RateLimiterClock::time_point;

    TokenBucket(const TokenBucketConfig& config, time_point now);

    const TokenBucketConfig& config() const { return config_; }
    // Tokens in the bucket now (after refilling up to `now`), without the one-time burst.
    int64_t tokens(time_point now);
    uint64_t burst_left() const { return burst_; }
    // Whether `n` tokens can be taken now (see the header: a request larger than the size
    // passes when the bucket is full).
    bool can_take(uint64_t n, time_point now);
    // Takes `n` tokens (burst first), going into debt if needed.
    void take(uint64_t n);
    // Gives back tokens taken for a request that did not go ahead (at most up to the size).
    void give_back(uint64_t n);
    // How long until can_take(n) (0: now).
    std::chrono::nanoseconds wait_for(uint64_t n, time_point now);
    // New size and refill time (see the header).
    void update(const TokenBucketConfig& config, time_point now);

private:
    void refill(time_point now);
    uint64_t refill_ns() const { return config_.refill_time_ms * 1'000'000; }

    TokenBucketConfig config_;
    int64_t tokens_;
    uint64_t burst_;
    time_point last_refill_;
};

class RateLimiter {
public:
    explicit RateLimiter(const RateLimiterConfig& config = {},
                         std::shared_ptr<const RateLimiterClock> clock = steady_rate_limiter_clock());

    // The timer's fd, for the device's event sources.
    int timer_fd() const { return timer_->fd(); }
    // Whether there is any limit at all.
    bool limited() const { return bandwidth_.has_value() || ops_.has_value(); }
    const RateLimiterConfig& config() const { return config_; }
    // Waiting for the timer.
    bool blocked() const { return blocked_; }
    // Times the limiter became blocked (throttling events).
    uint64_t throttled_events() const { return throttled_events_; }

    // See the header. false: blocked (the timer is armed).
    bool consume(uint64_t bytes);
    bool ready();
    void charge(uint64_t bytes);
    // Gives back what consume(bytes) took (the request did not go ahead after all).
    void give_back(uint64_t bytes);
    // The timer fired: unblocks. true if the limiter was blocked (the device should retry).
    bool on_timer();
    void update(const RateLimiterConfig& config);
    void reset_timer();

    // Tokens left now (for tests and logs); nullopt without that bucket.
    std::optional<int64_t> bandwidth_tokens();
    std::optional<int64_t> ops_tokens();

private:
    // Blocks until `wait` from now.
    void block(std::chrono::nanoseconds wait);
    static std::optional<TokenBucket> make_bucket(const std::optional<TokenBucketConfig>& c,
                                                  RateLimiterClock::time_point now);

    std::shared_ptr<const RateLimiterClock> clock_;
    std::unique_ptr<RateLimiterTimer> timer_;
    RateLimiterConfig config_;
    std::optional<TokenBucket> bandwidth_;
    std::optional<TokenBucket> ops_;
    bool blocked_ = false;
    uint64_t throttled_events_ = 0;
};

}  // namespace embervm::virtio
