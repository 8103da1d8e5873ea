// Token buckets and the rate limiter of a virtio device (virtio/rate_limiter.h).
#include "virtio/rate_limiter.h"

#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "vmm/sys/error.h"
#include "vmm/sys/fd.h"

namespace embervm::virtio {

namespace {

using std::chrono::nanoseconds;
__extension__ typedef unsigned __int128 u128;

class TimerFd final : public RateLimiterTimer {
public:
    TimerFd() : fd_(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) {
        if (!fd_) throw sys_error("timerfd_create for a rate limiter");
    }
    int fd() const override { return fd_.get(); }
    void arm(nanoseconds after) override {
        itimerspec spec{};
        const int64_t ns = after.count();
        spec.it_value.tv_sec = ns / 1'000'000'000;
        spec.it_value.tv_nsec = ns % 1'000'000'000;
        if (::timerfd_settime(fd_.get(), 0, &spec, nullptr) != 0) throw sys_error("timerfd_settime for a rate limiter");
    }
    void consume() override {
        uint64_t expirations = 0;
        [[maybe_unused]] const ssize_t n = ::read(fd_.get(), &expirations, sizeof expirations);  // EAGAIN: nothing
    }

private:
    FileDescriptor fd_;
};

class SteadyClock final : public RateLimiterClock {
public:
    time_point now() const override { return std::chrono::steady_clock::now(); }
    std::unique_ptr<RateLimiterTimer> make_timer() const override { return std::make_unique<TimerFd>(); }
};

}  // namespace

std::shared_ptr<const RateLimiterClock> steady_rate_limiter_clock() {
    static const auto clock = std::make_shared<const SteadyClock>();
    return clock;
}

// --- TokenBucket ---

TokenBucket::TokenBucket(const TokenBucketConfig& config, time_point now)
    : config_(config), tokens_(static_cast<int64_t>(config.size)), burst_(config.one_time_burst), last_refill_(now) {}

void TokenBucket::refill(time_point now) {
    const auto size = static_cast<int64_t>(config_.size);
    if (now <= last_refill_ || tokens_ >= size) {
        if (tokens_ >= size) last_refill_ = std::max(now, last_refill_);  // a full bucket gains nothing
        return;
    }
    const auto elapsed = static_cast<uint64_t>(std::chrono::duration_cast<nanoseconds>(now - last_refill_).count());
    const u128 added = u128{elapsed} * config_.size / refill_ns();
    if (added >= static_cast<u128>(size - tokens_)) {
        tokens_ = size;
        last_refill_ = now;
        return;
    }
    tokens_ += static_cast<int64_t>(added);
    // The time those tokens took (rounded up), so the remainder counts towards the next one.
    const u128 used = (added * refill_ns() + config_.size - 1) / config_.size;
    last_refill_ += nanoseconds(static_cast<int64_t>(used));
}

int64_t TokenBucket::tokens(time_point now) {
    refill(now);
    return tokens_;
}

bool TokenBucket::can_take(uint64_t n, time_point now) {
    refill(now);
    if (n <= burst_) return true;
    const uint64_t need = n - burst_;
    const auto size = static_cast<int64_t>(config_.size);
    if (need > config_.size) return tokens_ >= size;  // larger than the bucket: when it is full
    return tokens_ >= static_cast<int64_t>(need);
}

void TokenBucket::take(uint64_t n) {
    if (n <= burst_) {
        burst_ -= n;
        return;
    }
    const uint64_t need = std::min(n - burst_, kMaxBucketTokens);
    burst_ = 0;
    tokens_ -= static_cast<int64_t>(need);
    // Debt larger than this cannot come from one request (kMaxBucketTokens); keeps the sums in range.
    tokens_ = std::max(tokens_, -static_cast<int64_t>(kMaxBucketTokens));
}

void TokenBucket::give_back(uint64_t n) {
    tokens_ = std::min(static_cast<int64_t>(config_.size), tokens_ + static_cast<int64_t>(std::min(n, kMaxBucketTokens)));
}

nanoseconds TokenBucket::wait_for(uint64_t n, time_point now) {
    if (can_take(n, now)) return nanoseconds(0);
    const uint64_t target = std::min(n - burst_, config_.size);
    const auto deficit = static_cast<uint64_t>(static_cast<int64_t>(target) - tokens_);  // > 0 here
    const u128 needed_ns = (u128{deficit} * refill_ns() + config_.size - 1) / config_.size;
    const auto since = std::chrono::duration_cast<nanoseconds>(now - last_refill_).count();
    const int64_t wait = static_cast<int64_t>(needed_ns) - since;
    return nanoseconds(std::max<int64_t>(wait, 1));
}

void TokenBucket::update(const TokenBucketConfig& config, time_point now) {
    refill(now);
    config_ = config;
    tokens_ = std::min(tokens_, static_cast<int64_t>(config.size));
    burst_ = std::min(burst_, config.one_time_burst);
    last_refill_ = now;
}

// --- RateLimiter ---

RateLimiter::RateLimiter(const RateLimiterConfig& config, std::shared_ptr<const RateLimiterClock> clock)
    : clock_(std::move(clock)), timer_(clock_->make_timer()) {
    update(config);
}

std::optional<TokenBucket> RateLimiter::make_bucket(const std::optional<TokenBucketConfig>& c,
                                                    RateLimiterClock::time_point now) {
    if (!c || c->size == 0 || c->refill_time_ms == 0) return std::nullopt;  // no limit
    return TokenBucket(*c, now);
}

bool RateLimiter::consume(uint64_t bytes) {
    if (blocked_) return false;
    if (!limited()) return true;
    const auto now = clock_->now();
    const bool bw_ok = !bandwidth_ || bandwidth_->can_take(bytes, now);
    const bool ops_ok = !ops_ || ops_->can_take(1, now);
    if (bw_ok && ops_ok) {
        if (bandwidth_) bandwidth_->take(bytes);
        if (ops_) ops_->take(1);
        return true;
    }
    nanoseconds wait(0);
    if (bandwidth_) wait = std::max(wait, bandwidth_->wait_for(bytes, now));
    if (ops_) wait = std::max(wait, ops_->wait_for(1, now));
    block(wait);
    return false;
}

bool RateLimiter::ready() {
    if (blocked_) return false;
    if (!limited()) return true;
    const auto now = clock_->now();
    const bool bw_ok = !bandwidth_ || bandwidth_->can_take(1, now);
    const bool ops_ok = !ops_ || ops_->can_take(1, now);
    if (bw_ok && ops_ok) return true;
    nanoseconds wait(0);
    if (bandwidth_) wait = std::max(wait, bandwidth_->wait_for(1, now));
    if (ops_) wait = std::max(wait, ops_->wait_for(1, now));
    block(wait);
    return false;
}

void RateLimiter::charge(uint64_t bytes) {
    const auto now = clock_->now();
    if (bandwidth_) {
        bandwidth_->tokens(now);  // refilled up to now before the debt is taken
        bandwidth_->take(bytes);
    }
    if (ops_) {
        ops_->tokens(now);
        ops_->take(1);
    }
}

void RateLimiter::give_back(uint64_t bytes) {
    if (bandwidth_) bandwidth_->give_back(bytes);
    if (ops_) ops_->give_back(1);
}

void RateLimiter::block(nanoseconds wait) {
    blocked_ = true;
    throttled_events_++;
    timer_->arm(std::max(wait, nanoseconds(1)));
}

bool RateLimiter::on_timer() {
    timer_->consume();
    return std::exchange(blocked_, false);
}

void RateLimiter::update(const RateLimiterConfig& config) {
    const auto now = clock_->now();
    const auto update_bucket = [now](std::optional<TokenBucket>& bucket, const std::optional<TokenBucketConfig>& c) {
        if (!c || c->size == 0 || c->refill_time_ms == 0) {
            bucket.reset();
        } else if (bucket) {
            bucket->update(*c, now);
        } else {
            bucket = make_bucket(c, now);
        }
    };
    update_bucket(bandwidth_, config.bandwidth);
    update_bucket(ops_, config.ops);
    config_ = config;
    reset_timer();
}

void RateLimiter::reset_timer() {
    if (blocked_) timer_->arm(nanoseconds(0));
    blocked_ = false;
}

std::optional<int64_t> RateLimiter::bandwidth_tokens() {
    if (!bandwidth_) return std::nullopt;
    return bandwidth_->tokens(clock_->now());
}

std::optional<int64_t> RateLimiter::ops_tokens() {
    if (!ops_) return std::nullopt;
    return ops_->tokens(clock_->now());
}

}  // namespace embervm::virtio
