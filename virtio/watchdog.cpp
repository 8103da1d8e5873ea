// Stall watchdog of a virtio device: slow backend requests and completions the driver never takes.
#include "virtio/watchdog.h"

#include <fmt/format.h>

#include "vmm/log.h"

namespace embervm::virtio {

namespace log = embervm::log;

uint16_t unacknowledged_completions(const QueueProgress& q) {
    if (!q.used_event) return 0;
    const auto n = static_cast<uint16_t>(q.used_idx - *q.used_event);
    return n >= 1 && n <= q.size ? n : 0;
}

StallWatchdog::StallWatchdog(std::string device_name, std::chrono::milliseconds slow_request,
                             std::chrono::milliseconds driver_stall)
    : name_(std::move(device_name)), slow_request_(slow_request), driver_stall_(driver_stall) {}

std::vector<std::string> StallWatchdog::check(const DeviceProgress& progress, Clock::time_point now,
                                              bool guest_running) {
    using std::chrono::duration_cast;
    using std::chrono::milliseconds;
    std::vector<std::string> warnings;

    report_.in_flight = progress.in_flight;
    report_.oldest_in_flight.reset();
    if (progress.oldest_submitted && progress.in_flight > 0) {
        const auto age = duration_cast<milliseconds>(now - *progress.oldest_submitted);
        report_.oldest_in_flight = age;
        if (age >= slow_request_ && (!last_slow_warning_ || now - *last_slow_warning_ >= slow_request_)) {
            last_slow_warning_ = now;
            report_.slow_request_warnings++;
            warnings.push_back(fmt::format("{}: a request has been in the backend for {:.1f} s ({} in flight)", name_,
                                           static_cast<double>(age.count()) / 1000.0, progress.in_flight));
        }
    } else {
        last_slow_warning_.reset();
    }

    if (queues_.size() < progress.queues.size()) queues_.resize(progress.queues.size());
    report_.stalled_queues = 0;
    for (size_t i = 0; i < progress.queues.size(); i++) {
        const QueueProgress& q = progress.queues[i];
        QueueState& st = queues_[i];
        const uint16_t unacked = unacknowledged_completions(q);
        const bool driver_moved =
            !st.last || st.last->used_event != q.used_event || st.last->avail_idx != q.avail_idx;
        st.last = q;
        if (!guest_running || unacked == 0 || driver_moved) {
            // Nothing owed to the driver, or it is moving (or cannot move: paused): start again.
            st.waiting_since = unacked != 0 && guest_running ? std::optional(now) : std::nullopt;
            st.warned = false;
            continue;
        }
        if (!st.waiting_since) st.waiting_since = now;
        const auto waited = duration_cast<milliseconds>(now - *st.waiting_since);
        if (waited < driver_stall_) continue;
        report_.stalled_queues++;
        if (!st.warned) {
            st.warned = true;
            report_.driver_stalls++;
            warnings.push_back(fmt::format(
                "{}: queue {}: the driver has not taken {} completion{} for {:.1f} s (used.idx {}, used_event {}, "
                "avail.idx {}): a lost interrupt, or the guest stopped running its driver",
                name_, q.index, unacked, unacked == 1 ? "" : "s", static_cast<double>(waited.count()) / 1000.0, q.used_idx,
                *q.used_event, q.avail_idx));
        }
    }
    for (const auto& w : warnings) log::warn("{}", w);
    return warnings;
}

}  // namespace embervm::virtio
