// Stall watchdog for one virtio device: turns a silent hang into a log line and a metric.
//
// Two kinds of stall, checked from periodic snapshots (VirtioDevice::progress()):
//  - a request that has been in the backend for longer than `slow_request` (a stuck disk, a
//    backend that lost a completion): warned about once per `slow_request` while it lasts;
//  - completions the device published that the driver asked to be interrupted for (EVENT_IDX:
//    used.idx has passed used_event) while the driver moved neither used_event nor avail.idx
//    for `driver_stall`: a lost interrupt, or a guest that stopped running its driver. Warned
//    about once per stall; the stall ends when the driver moves. Without EVENT_IDX the device
//    cannot tell what the driver has seen, so only the first kind is checked.
// While the guest is not running (paused), the second kind is not checked and its clocks start
// again on resume.
//
// Not thread-safe: one caller (the VMM's event loop) checks and reads it.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "virtio/device.h"

namespace embervm::virtio {

struct WatchdogReport {
    uint64_t in_flight = 0;
    std::optional<std::chrono::milliseconds> oldest_in_flight;  // age of the oldest request
    uint64_t slow_request_warnings = 0;  // cumulative
    uint64_t driver_stalls = 0;          // cumulative: stalls seen (each counted once)
    uint64_t stalled_queues = 0;         // queues stalled at the last check
};

class StallWatchdog {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr std::chrono::seconds kDefaultSlowRequest{10};
    static constexpr std::chrono::seconds kDefaultDriverStall{10};

    explicit StallWatchdog(std::string device_name, std::chrono::milliseconds slow_request = kDefaultSlowRequest,
                           std::chrono::milliseconds driver_stall = kDefaultDriverStall);

    // One check: logs a warning for each new stall (see above) and returns the warnings it
    // logged (for tests).
    std::vector<std::string> check(const DeviceProgress& progress, Clock::time_point now, bool guest_running);
    // The state after the last check.
    const WatchdogReport& report() const { return report_; }

private:
    struct QueueState {
        std::optional<QueueProgress> last;            // the snapshot the driver stood at since...
        std::optional<Clock::time_point> waiting_since;  // ...this time, with completions unseen
        bool warned = false;
    };

    std::string name_;
    std::chrono::milliseconds slow_request_;
    std::chrono::milliseconds driver_stall_;
    std::vector<QueueState> queues_;
    std::optional<Clock::time_point> last_slow_warning_;
    WatchdogReport report_;
};

// How many published used elements the driver asked to be interrupted for and has not
// acknowledged by moving used_event: used_idx - used_event when that lies in [1, size], else 0
// (also 0 without EVENT_IDX).
uint16_t unacknowledged_completions(const QueueProgress& q);

}  // namespace embervm::virtio
