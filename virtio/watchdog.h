// Stall watchdog for one virtio device: turns a silent hang into a log line, a metric and, for
// a lost interrupt, a recovery.
//
// Checked from periodic snapshots:
//  - A request that has been in the backend for longer than `slow_request` (a stuck disk, a
//    backend that lost a completion; VirtioDevice::progress()): warned about once per
//    `slow_request` while it lasts.
//  - A used-buffer interrupt the driver has not acknowledged (the transport's interrupt
//    status bit stays set; a driver that takes the interrupt acknowledges it): after
//    `reraise_after` the caller is told to raise it again, then again after twice that, four
//    times that, ... (at most every `driver_stall`) while it stays unacknowledged. A driver
//    that was only slow sees a spurious interrupt, which virtio allows; an interrupt lost on
//    its way into the guest (measured under nested KVM: the device raised it, the guest's
//    local APIC never saw it, issue 13) costs `reraise_after` instead of a hung guest. After
//    `driver_stall` it is warned about once, with the queues' EVENT_IDX positions (completions
//    the driver asked to be interrupted for and has not taken) when the driver uses EVENT_IDX.
//    A device whose interrupt line the guest has masked (an IOAPIC pin left in its reset state
//    by a driver that polls) is not raised again and not counted as a stall: each re-raise that
//    would have been due is counted in `interrupts_masked` instead, so that
//    `interrupts_reraised` counts only recoveries from interrupts lost on the way in.
// While the guest is not running (paused), interrupts are not checked and their clock starts
// again on resume.
//
// Not thread-safe: one caller (the VMM's event loop) checks and reads it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "virtio/device.h"

namespace embervm::virtio {

struct WatchdogReport {
    uint64_t in_flight = 0;
    std::optional<std::chrono::milliseconds> oldest_in_flight;  // age of the oldest request
    uint64_t slow_request_warnings = 0;  // cumulative
    uint64_t interrupts_reraised = 0;    // cumulative: recoveries asked for
    uint64_t driver_stalls = 0;          // cumulative: interrupts unacknowledged for driver_stall
    uint64_t interrupts_masked = 0;      // cumulative: re-raises not done, the guest masks the line
    bool stalled = false;                // unacknowledged for driver_stall at the last check
};

struct WatchdogTimes {
    std::chrono::milliseconds slow_request{10000};
    std::chrono::milliseconds reraise_after{200};
    std::chrono::milliseconds driver_stall{10000};
};

class StallWatchdog {
public:
    using Clock = std::chrono::steady_clock;

    // `interrupt_state`, when given, describes where the device's interrupt stands in the
    // interrupt controller (e.g. its IOAPIC pin); its line is added to the re-raise and stall
    // warnings, so a lost interrupt leaves evidence in the log. `line_masked`, when given, says
    // whether the guest has masked the device's interrupt line now (asked only when a re-raise
    // is due).
    explicit StallWatchdog(std::string device_name, WatchdogTimes times = {},
                           std::function<std::string()> interrupt_state = {},
                           std::function<bool()> line_masked = {});

    struct Result {
        std::vector<std::string> warnings;  // logged already
        bool reraise = false;               // raise the used-buffer interrupt again
    };
    // One check. `interrupt_pending_since`: since when the driver has not acknowledged the
    // used-buffer interrupt (nullopt: it has).
    Result check(const DeviceProgress& progress, std::optional<Clock::time_point> interrupt_pending_since,
                 Clock::time_point now, bool guest_running);
    // The state after the last check.
    const WatchdogReport& report() const { return report_; }

private:
    // "; STATE" from interrupt_state_, or nothing.
    std::string interrupt_state() const;

    std::string name_;
    WatchdogTimes times_;
    std::function<std::string()> interrupt_state_;
    std::function<bool()> line_masked_;
    std::optional<Clock::time_point> last_slow_warning_;
    // The unacknowledged interrupt being watched: since when (by the transport, or from resume
    // for a paused guest), when it was raised again last and how often, whether warned.
    std::optional<Clock::time_point> pending_since_;
    std::optional<Clock::time_point> watching_since_;
    std::optional<Clock::time_point> last_reraise_;
    uint64_t episode_reraises_ = 0;
    bool warned_ = false;
    bool masked_ = false;  // the line was masked at this episode's last due re-raise
    bool was_running_ = true;
    std::optional<Clock::time_point> last_reraise_log_;
    std::optional<Clock::time_point> last_masked_log_;
    WatchdogReport report_;
};

// How many published used elements the driver asked to be interrupted for and has not
// acknowledged by moving used_event: used_idx - used_event when that lies in [1, size], else 0
// (also 0 without EVENT_IDX).
uint16_t unacknowledged_completions(const QueueProgress& q);

}  // namespace embervm::virtio
