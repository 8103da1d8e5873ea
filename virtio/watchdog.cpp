// Stall watchdog of a virtio device: slow backend requests, interrupts the driver never takes.
#include "virtio/watchdog.h"

#include <algorithm>

#include <fmt/format.h>

#include "vmm/sys/log.h"

namespace embervm::virtio {

namespace log = embervm::log;

namespace {

// Re-raised interrupts are logged at most this often per device (each is counted).
constexpr std::chrono::seconds kReraiseLogInterval{10};

double seconds(std::chrono::milliseconds d) { return static_cast<double>(d.count()) / 1000.0; }

// "queue 0: 3 completions not taken (used.idx 10, used_event 7)" for each EVENT_IDX queue that
// has some; empty otherwise.
std::string queue_positions(const DeviceProgress& progress) {
    std::string out;
    for (const QueueProgress& q : progress.queues) {
        const uint16_t n = unacknowledged_completions(q);
        if (n == 0) continue;
        out += fmt::format("; queue {}: {} completion{} not taken (used.idx {}, used_event {}, avail.idx {})", q.index,
                           n, n == 1 ? "" : "s", q.used_idx, *q.used_event, q.avail_idx);
    }
    return out;
}

}  // namespace

uint16_t unacknowledged_completions(const QueueProgress& q) {
    if (!q.used_event) return 0;
    const auto n = static_cast<uint16_t>(q.used_idx - *q.used_event);
    return n >= 1 && n <= q.size ? n : 0;
}

StallWatchdog::StallWatchdog(std::string device_name, WatchdogTimes times,
                             std::function<std::string()> interrupt_state, std::function<bool()> line_masked)
    : name_(std::move(device_name)),
      times_(times),
      interrupt_state_(std::move(interrupt_state)),
      line_masked_(std::move(line_masked)) {}

std::string StallWatchdog::interrupt_state() const {
    if (!interrupt_state_) return {};
    std::string s = interrupt_state_();
    return s.empty() ? s : "; " + s;
}

StallWatchdog::Result StallWatchdog::check(const DeviceProgress& progress,
                                           std::optional<Clock::time_point> interrupt_pending_since,
                                           Clock::time_point now, bool guest_running) {
    using std::chrono::duration_cast;
    using std::chrono::milliseconds;
    Result result;

    report_.in_flight = progress.in_flight;
    report_.oldest_in_flight.reset();
    if (progress.oldest_submitted && progress.in_flight > 0) {
        const auto age = duration_cast<milliseconds>(now - *progress.oldest_submitted);
        report_.oldest_in_flight = age;
        if (age >= times_.slow_request &&
            (!last_slow_warning_ || now - *last_slow_warning_ >= times_.slow_request)) {
            last_slow_warning_ = now;
            report_.slow_request_warnings++;
            result.warnings.push_back(fmt::format("{}: a request has been in the backend for {:.1f} s ({} in flight)",
                                                  name_, seconds(age), progress.in_flight));
        }
    } else {
        last_slow_warning_.reset();
    }

    report_.stalled = false;
    if (!guest_running || !interrupt_pending_since || interrupt_pending_since != pending_since_) {
        // Acknowledged, a new interrupt, or a guest that cannot run: a new episode (for a paused
        // guest, watched from its resume on).
        pending_since_ = guest_running ? interrupt_pending_since : std::nullopt;
        watching_since_ = pending_since_ && !was_running_ ? std::optional(now) : pending_since_;
        last_reraise_.reset();
        episode_reraises_ = 0;
        warned_ = false;
        masked_ = false;
    }
    was_running_ = guest_running;
    if (pending_since_) {
        const auto waited = duration_cast<milliseconds>(now - *watching_since_);
        // reraise_after, then doubling gaps up to driver_stall.
        const auto gap = std::min<milliseconds>(times_.reraise_after * (uint64_t{1} << std::min<uint64_t>(episode_reraises_, 16)),
                                                times_.driver_stall);
        if (waited >= times_.reraise_after && (!last_reraise_ || now - *last_reraise_ >= gap)) {
            last_reraise_ = now;
            episode_reraises_++;
            masked_ = line_masked_ && line_masked_();
            if (masked_) {
                // The guest polls with the line masked: an edge would go nowhere.
                report_.interrupts_masked++;
                if (!last_masked_log_ || now - *last_masked_log_ >= kReraiseLogInterval) {
                    last_masked_log_ = now;
                    log::debug("{}: the used-buffer interrupt has not been acknowledged for {:.1f} s and the guest "
                               "masks the interrupt line: not raised again ({} so far){}",
                               name_, seconds(waited), report_.interrupts_masked, interrupt_state());
                }
            } else {
                report_.interrupts_reraised++;
                result.reraise = true;
            }
            if (!masked_ && (!last_reraise_log_ || now - *last_reraise_log_ >= kReraiseLogInterval)) {
                last_reraise_log_ = now;
                result.warnings.push_back(fmt::format(
                    "{}: the driver has not acknowledged the used-buffer interrupt for {:.1f} s: raising it again "
                    "({} so far; logged at most every {} s){}{}",
                    name_, seconds(waited), report_.interrupts_reraised, kReraiseLogInterval.count(),
                    queue_positions(progress), interrupt_state()));
            }
        }
        if (waited >= times_.driver_stall && !masked_) {
            report_.stalled = true;
            if (!warned_) {
                warned_ = true;
                report_.driver_stalls++;
                result.warnings.push_back(fmt::format(
                    "{}: the driver has not acknowledged the used-buffer interrupt for {:.1f} s, raised again {} "
                    "times: the guest stopped running its driver (or masks the interrupt and polls){}{}",
                    name_, seconds(waited), episode_reraises_, queue_positions(progress), interrupt_state()));
            }
        }
    }
    for (const auto& w : result.warnings) log::warn("{}", w);
    return result;
}

}  // namespace embervm::virtio
