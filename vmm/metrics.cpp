// Metrics: JSON sections for vCPUs and devices, the event-loop latency probe and the writer
// that appends one line per interval to the metrics output.
#include "vmm/metrics.h"

#include <cerrno>
#include <cstring>

#include "virtio/watchdog.h"
#include "vmm/sys/log.h"
#include "vmm/sys/write_all.h"
#include "vmm/kvm/vcpu.h"

namespace embervm::vmm {

using nlohmann::json;

uint64_t utc_timestamp_ms() {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
}

namespace {

// One vCPU's counters, in a fixed key order; "exits" is the sum of the *_exits fields.
json vcpu_json(const VcpuStats& s) {
    const auto get = [](const std::atomic<uint64_t>& v) { return v.load(std::memory_order_relaxed); };
    const std::pair<const char*, uint64_t> exits[] = {
        {"io_exits", get(s.io_exits)},
        {"mmio_exits", get(s.mmio_exits)},
        {"hlt_exits", get(s.hlt_exits)},
        {"shutdown_exits", get(s.shutdown_exits)},
        {"system_event_exits", get(s.system_event_exits)},
        {"internal_error_exits", get(s.internal_error_exits)},
        {"fail_entry_exits", get(s.fail_entry_exits)},
        {"intr_exits", get(s.intr_exits)},
        {"other_exits", get(s.other_exits)},
    };
    json j = json::object();
    uint64_t total = 0;
    for (const auto& [key, value] : exits) {
        j[key] = value;
        total += value;
    }
    j["exits"] = total;
    j["interrupted"] = get(s.interrupted);
    j["emulated_instructions"] = get(s.emulated_instructions);
    j["unclaimed_accesses"] = get(s.unclaimed_accesses);
    return j;
}

}  // namespace

json vcpu_metrics_json(const std::vector<const VcpuStats*>& vcpus) {
    json total = json::object();
    json per_vcpu = json::array();
    for (size_t i = 0; i < vcpus.size(); i++) {
        json one = vcpu_json(*vcpus[i]);
        for (const auto& [key, value] : one.items()) {
            total[key] = total.value(key, uint64_t{0}) + value.get<uint64_t>();
        }
        one["id"] = i;
        per_vcpu.push_back(std::move(one));
    }
    if (vcpus.empty()) total = vcpu_json(VcpuStats{});
    total["per_vcpu"] = std::move(per_vcpu);
    return total;
}

void add_watchdog_metrics(json& section, const virtio::WatchdogReport& r) {
    section["in_flight"] = r.in_flight;
    section["oldest_in_flight_ms"] = r.oldest_in_flight ? json(r.oldest_in_flight->count()) : json(nullptr);
    section["slow_request_warnings"] = r.slow_request_warnings;
    section["interrupts_reraised"] = r.interrupts_reraised;
    section["driver_stalls"] = r.driver_stalls;
    section["interrupts_masked"] = r.interrupts_masked;
    section["driver_stalled"] = r.stalled;
}

// ---- EventLoopProbe ---------------------------------------------------------------------

EventLoopProbe::EventLoopProbe(boost::asio::io_context& io, std::chrono::milliseconds interval)
    : interval_(interval), timer_(io, [this](std::chrono::nanoseconds lateness) { record(lateness); }) {}

void EventLoopProbe::start() { timer_.start(interval_); }

void EventLoopProbe::stop() { timer_.stop(); }

void EventLoopProbe::record(std::chrono::nanoseconds lateness) {
    if (lateness < std::chrono::nanoseconds::zero()) lateness = std::chrono::nanoseconds::zero();
    std::lock_guard lock(mutex_);
    ++samples_;
    sum_ += lateness;
    if (lateness > max_) max_ = lateness;
}

json EventLoopProbe::window_json(bool reset) {
    std::lock_guard lock(mutex_);
    const auto us = [](std::chrono::nanoseconds ns) {
        return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(ns).count());
    };
    json j = {{"probe_interval_ms", interval_.count()},
              {"samples", samples_},
              {"lateness_max_us", us(max_)},
              {"lateness_mean_us", samples_ == 0 ? 0 : us(sum_ / static_cast<int64_t>(samples_))}};
    if (reset) {
        samples_ = 0;
        max_ = sum_ = std::chrono::nanoseconds::zero();
    }
    return j;
}

// ---- MetricsWriter ----------------------------------------------------------------------

MetricsWriter::MetricsWriter(boost::asio::io_context& io, const std::string& path, std::chrono::milliseconds interval,
                             Producer produce)
    : fd_(log::open_output_file(path)), path_(path), interval_(interval), produce_(std::move(produce)),
      timer_(io, [this](std::chrono::nanoseconds) { write_line(); }) {}

void MetricsWriter::start() {
    if (interval_.count() > 0) timer_.start(interval_);
}

void MetricsWriter::stop() { timer_.stop(); }

bool MetricsWriter::write_line() {
    std::lock_guard lock(write_mutex_);
    const std::string line = produce_() + '\n';
    if (write_all(fd_.get(), line, WhenFull::FinishLine)) {
        written_.fetch_add(1);
        return true;
    }
    const int err = errno;
    // Reported once: a reader that went away (or a full disk) must not flood the log.
    if (dropped_.fetch_add(1) == 0) {
        log::warn("metrics: a line could not be written to {}: {} (dropped; further drops are not logged)", path_,
                  std::strerror(err));
    }
    return false;
}

}  // namespace embervm::vmm
