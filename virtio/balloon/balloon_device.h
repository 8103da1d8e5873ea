// virtio-balloon device model (virtio 1.2, 5.5): the guest gives pages back (inflate) and takes
// them again (deflate); the VMM sets the target size (num_pages) at start and at run time.
//
//   inflate   each chain holds le32 page frame numbers (4 KiB pages); valid ones are discarded
//             from the guest-memory backing (GuestMemory::discard: the host frees them)
//   deflate   the pages become usable again: nothing to do for anonymous memory
//   stats     (VIRTIO_BALLOON_F_STATS_VQ) the driver's buffer of {le16 tag, le64 value} entries
//             is parsed and held; every statistics interval (a timer on the event loop while the
//             device is activated) or on request_stats() it goes back so the driver refills it
//   reporting (VIRTIO_BALLOON_F_PAGE_REPORTING) free page ranges the guest reports: discarded
//
// Queue numbering: the driver only sets up the queues of the features it accepted and numbers
// them without gaps (inflate, deflate, [stats], [reporting]); activate() maps them accordingly.
// Invalid PFNs or reported ranges (outside guest memory) are skipped and counted rather than
// fatal: the guest only loses the memory it claims to give back. Malformed chains (writable
// descriptors on inflate/deflate/stats, a PFN array whose length is not a multiple of 4)
// put the device into DEVICE_NEEDS_RESET.
//
// Threading: everything runs under the device lock (DeviceBase::mutex()); set_target_mib(),
// set_stats_interval(), request_stats() and the getters may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "virtio/device_base.h"

namespace embervm::virtio::balloon {

namespace balloon_feature {
inline constexpr uint64_t kMustTellHost = feature_bit(0);
inline constexpr uint64_t kStatsVq = feature_bit(1);
inline constexpr uint64_t kDeflateOnOom = feature_bit(2);
inline constexpr uint64_t kFreePageHint = feature_bit(3);
inline constexpr uint64_t kPagePoison = feature_bit(4);
inline constexpr uint64_t kPageReporting = feature_bit(5);
}  // namespace balloon_feature

inline constexpr uint64_t kBalloonPageSize = 4096;
inline constexpr uint16_t kBalloonQueueSize = 256;

struct BalloonOptions {
    uint64_t amount_mib = 0;
    bool deflate_on_oom = false;
    uint32_t stats_polling_interval_s = 0;  // 0: no statistics queue
    bool free_page_reporting = false;
};

// The guest's memory statistics (5.5.6.3), as last reported. Absent tags stay nullopt.
struct BalloonStats {
    std::optional<uint64_t> swap_in, swap_out, major_faults, minor_faults, free_memory, total_memory,
        available_memory, disk_caches, hugetlb_allocations, hugetlb_failures;
    std::chrono::steady_clock::time_point updated;
};

struct BalloonCounters {
    uint64_t inflated_pages = 0;   // PFNs received on the inflate queue
    uint64_t deflated_pages = 0;
    uint64_t discarded_bytes = 0;  // given back to the host (inflate + reporting)
    uint64_t invalid_pfns = 0;     // skipped: outside guest memory
    uint64_t reported_ranges = 0;
    uint64_t stats_updates = 0;
    uint64_t device_errors = 0;
};
// The counters as a metrics section (vmm/metrics.h), without device_errors (the VMM adds the
// transport's "needs_reset" count).
nlohmann::json counters_json(const BalloonCounters& c);


class BalloonDevice : public DeviceBase {
public:
    explicit BalloonDevice(BalloonOptions options);

    uint32_t device_type() const override { return device_id::kBalloon; }
    uint64_t available_features() const override;
    std::vector<uint16_t> queue_max_sizes() const override;
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    std::string name() const override { return "virtio-balloon"; }
    DeviceProgress progress() const override;
    nlohmann::json metrics_json() const override;
    void log_counters() const override;

    // Run-time API.
    void set_target_mib(uint64_t mib);
    uint64_t target_mib() const;
    uint32_t actual_pages() const;  // what the driver last wrote to `actual`
    std::optional<BalloonStats> stats() const;
    // Returns the held statistics buffer to the driver (it refills it). false if none is held.
    bool request_stats();
    // The statistics interval (seconds, > 0; starts as stats_polling_interval_s): from now on,
    // the first firing one interval from now. Only with a statistics queue configured.
    void set_stats_interval(uint32_t seconds);
    BalloonCounters counters() const;
    const BalloonOptions& options() const { return options_; }

private:
    enum class Role { Inflate, Deflate, Stats, Reporting };
    void on_activate_locked(const Activation& a) override;
    void on_queue_locked(uint16_t queue_index) override;
    void on_reset_locked() override;
    std::optional<std::chrono::nanoseconds> timer_interval_locked() const override;
    void on_timer_locked() override;
    // Snapshots: pause hands the statistics buffer back (the driver refills it after the
    // resume); the state is the target, `actual` and the statistics interval.
    void on_pause_locked() override { request_stats_locked(); }
    void save_state_locked(StateWriter& w) const override;
    void restore_state_locked(StateReader& r) override;
    bool request_stats_locked();
    void process_locked(uint16_t index, Role role);
    void handle_pfns_locked(const DescriptorChain& chain, bool inflate);
    void handle_stats_locked(const DescriptorChain& chain);
    void handle_report_locked(const DescriptorChain& chain);

    const BalloonOptions options_;
    // The rest under mutex().
    uint32_t num_pages_;  // target
    uint32_t actual_ = 0;
    uint32_t stats_interval_s_;
    bool stats_logged_ = false;  // the first statistics are logged once per run
    std::vector<Role> roles_;  // by queue index, for the activated feature set
    std::optional<DescriptorChain> stats_chain_;
    uint16_t stats_queue_ = 0;
    std::optional<BalloonStats> stats_;
    BalloonCounters counters_;
};

}  // namespace embervm::virtio::balloon
