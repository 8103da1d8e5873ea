// Metrics: the VMM's counters as one JSON object per line, appended to a file or named pipe
// (the "metrics" config section). Counters are cumulative since the VMM started; the
// event-loop latency figures cover the time since the previous line written to the metrics
// output. Vmm::metrics_json() composes the document from the pieces here:
//
//   {"utc_timestamp_ms": 1700000000000,
//    "vcpu": {"exits": 1234, "io_exits": 1000, ..., "per_vcpu": [{"id": 0, "exits": 1234, ...}]},
//    "event_loop": {"probe_interval_ms": 100, "samples": 10, "lateness_max_us": 150,
//                   "lateness_mean_us": 40, "handlers": 5678},
//    "block_rootfs": {"read_requests": 10, ...}, "net_eth0": {...}, "balloon": {...}}
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "vmm/sys/fd.h"
#include "vmm/sys/periodic_timer.h"

namespace embervm::virtio {
struct WatchdogReport;
}

namespace embervm::vmm {

struct VcpuStats;

// Milliseconds since the Unix epoch (the wall clock).
uint64_t utc_timestamp_ms();

// The "vcpu" section: every VcpuStats counter summed over the vCPUs, "exits" (all KVM exits),
// and "per_vcpu": the same per vCPU with its "id" (index in `vcpus`).
nlohmann::json vcpu_metrics_json(const std::vector<const VcpuStats*>& vcpus);

// Device sections come from the devices (VirtioDevice::metrics_json) with the transport's
// "needs_reset" count added (DeviceManager::add_metrics).
// Adds the stall watchdog's figures (virtio/watchdog.h) to a device section: "in_flight",
// "oldest_in_flight_ms" (null when nothing is in flight), "slow_request_warnings",
// "interrupts_reraised", "interrupts_masked", "driver_stalls", "driver_stalled".
void add_watchdog_metrics(nlohmann::json& section, const virtio::WatchdogReport& r);

// How late the event loop runs its handlers: a timer armed every `interval` on the loop
// measures by how much it fires after its deadline. A loop busy with long handlers (or starved
// of CPU) shows here first.
class EventLoopProbe {
public:
    static constexpr std::chrono::milliseconds kDefaultInterval{100};

    explicit EventLoopProbe(boost::asio::io_context& io, std::chrono::milliseconds interval = kDefaultInterval);
    EventLoopProbe(const EventLoopProbe&) = delete;
    EventLoopProbe& operator=(const EventLoopProbe&) = delete;

    // Starts / stops the timer (PeriodicTimer). Loop thread, or before the loop runs.
    void start();
    void stop();
    // One sample (the timer's handler records each firing).
    void record(std::chrono::nanoseconds lateness);
    // {"probe_interval_ms", "samples", "lateness_max_us", "lateness_mean_us"} over the samples
    // since the last reset (0 when there are none); `reset` starts a new window. Any thread.
    nlohmann::json window_json(bool reset);

private:
    std::chrono::milliseconds interval_;
    PeriodicTimer timer_;
    std::mutex mutex_;
    uint64_t samples_ = 0;
    std::chrono::nanoseconds max_{0};
    std::chrono::nanoseconds sum_{0};
};

// Appends one metrics line (produce() + '\n', one write) to an output every `interval` (an
// Asio timer on the VMM's loop; zero: no timer) and on request.
class MetricsWriter {
public:
    using Producer = std::function<std::string()>;

    // Opens `path` with log::open_output_file (a file is appended to and created 0600, a named
    // pipe needs a reader); throws embervm::Error "<path>: <strerror>".
    MetricsWriter(boost::asio::io_context& io, const std::string& path, std::chrono::milliseconds interval,
                  Producer produce);
    MetricsWriter(const MetricsWriter&) = delete;
    MetricsWriter& operator=(const MetricsWriter&) = delete;

    // Starts / stops the periodic timer (PeriodicTimer). Loop thread, or before the loop runs.
    void start();
    void stop();
    // Produces and appends one line now. Any thread; lines never interleave. false if the
    // output did not take it (a full pipe, a full disk: the line is dropped and counted).
    bool write_line();

    uint64_t lines_written() const { return written_.load(); }
    uint64_t lines_dropped() const { return dropped_.load(); }

private:
    FileDescriptor fd_;
    std::string path_;
    std::chrono::milliseconds interval_;
    Producer produce_;
    PeriodicTimer timer_;
    std::mutex write_mutex_;
    std::atomic<uint64_t> written_{0};
    std::atomic<uint64_t> dropped_{0};
};

}  // namespace embervm::vmm
