// virtio-blk device model: takes requests from its one queue, has them parsed and validated
// against the disk's capacity and the negotiated features (request.h), and hands the I/O to a
// BlockBackend (sync file I/O or io_uring). Knows nothing of the transport (virtio-mmio).
// Once activated it watches its queue's eventfd and the backend's completion fd on the event
// loop (virtio/device_base.h).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "virtio/block/backend.h"
#include "virtio/block/request.h"
#include "virtio/device_base.h"
#include "virtio/rate_limiter.h"
#include "vmm/sys/log_limiter.h"

namespace embervm::virtio::block {

inline constexpr uint16_t kQueueSize = 256;

// What the device did, cumulative since it was created (for metrics). Requests are counted
// once each, when the device takes them from the queue; bytes when the backend completed them.
struct BlockCounters {
    uint64_t read_requests = 0, write_requests = 0, flush_requests = 0;
    uint64_t discard_requests = 0, write_zeroes_requests = 0, get_id_requests = 0;
    uint64_t read_bytes = 0, write_bytes = 0;  // done by the backend without error
    uint64_t io_errors = 0;             // completed with VIRTIO_BLK_S_IOERR (backend failure, bad range, ...)
    uint64_t unsupported_requests = 0;  // completed with VIRTIO_BLK_S_UNSUPP (unknown type, feature not acked)
    uint64_t device_errors = 0;         // guest errors that put the device in DEVICE_NEEDS_RESET
    uint64_t rate_limiter_throttled_events = 0;  // times the rate limiter held the queue back
    bool rate_limiter_throttled = false;         // held back now (waiting for its timer)
};
// The counters as a metrics section (vmm/metrics.h), without device_errors (the VMM adds the
// transport's "needs_reset" count).
nlohmann::json counters_json(const BlockCounters& c);


struct BlockDeviceOptions {
    std::string id;          // drive_id: the GET_ID serial (truncated to 20 bytes)
    bool read_only = false;  // VIRTIO_BLK_F_RO; writes, discards and write-zeroes fail with IOERR
    bool flush = false;      // offer VIRTIO_BLK_F_FLUSH (cache_type Writeback)
    // The drive's rate limiter (virtio/rate_limiter.h): a request costs one op and the bytes of
    // its data buffers (the chain without the 16-byte header and the status byte).
    RateLimiterConfig rate_limiter;
    std::shared_ptr<const RateLimiterClock> clock = steady_rate_limiter_clock();  // tests: a fake
};

class BlockDevice : public DeviceBase {
public:
    BlockDevice(std::unique_ptr<BlockBackend> backend, BlockDeviceOptions options);
    ~BlockDevice() override;

    uint32_t device_type() const override { return device_id::kBlock; }
    uint64_t available_features() const override;
    std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    std::string name() const override { return "virtio-blk " + options_.id; }
    DeviceProgress progress() const override;
    nlohmann::json metrics_json() const override;
    void log_counters() const override;

    // Any thread (atomics; never waits for the queue).
    BlockCounters counters() const;

    uint64_t capacity_sectors() const {
        std::lock_guard lock(config_mutex_);
        return capacity_;
    }

    // Run-time drive update (event-loop thread, while the guest may be doing I/O): puts
    // `backend` in place of the current one. Requests in flight on the old backend complete
    // first (into the guest's used ring); requests still queued continue on the new one. The
    // capacity becomes the new size / 512 and the driver is told with a config-change
    // interrupt (config generation bump) if the device is activated. The device watches the
    // new backend's completion fd from then on.
    // Throws Error, leaving the device as it was, if the new image's read-only flag differs from
    // the device's VIRTIO_BLK_F_RO. Returns whether the driver was told (false: not activated).
    bool replace_backend(std::unique_ptr<BlockBackend> backend);
    // The same for a new backend on the image the current one uses (a resized file): `open`
    // runs after the current backend released its image lock, which it takes back if `open`
    // throws (the exception propagates, the device keeps its backend).
    bool reopen_backend(const std::function<std::unique_ptr<BlockBackend>()>& open);

    // Run-time rate-limiter update (any thread): the new buckets apply at once, a queue held
    // back by the old ones is tried again.
    void update_rate_limiter(const RateLimiterConfig& config);
    RateLimiterConfig rate_limiter() const;

private:
    struct Pending {
        uint16_t head;
        uint32_t used_len;              // bytes written into the chain, including the status byte
        memory::GuestAddress status;    // the chain's last writable byte
        IoRequest::Op op;               // for the byte counters and the failure log
        uint64_t length;
        std::chrono::steady_clock::time_point submitted;  // for the watchdog
    };
    // A request the backend failed (EIO, ENOSPC, ... from the image): the guest gets IOERR;
    // logged as a warning, at most one line per 10 s (a guest retrying on a broken disk must
    // not flood the log).
    void log_backend_failure(const Pending& p, int64_t result);
    log::Limiter failure_log_;
    struct AtomicCounters {
        std::atomic<uint64_t> read_requests{0}, write_requests{0}, flush_requests{0};
        std::atomic<uint64_t> discard_requests{0}, write_zeroes_requests{0}, get_id_requests{0};
        std::atomic<uint64_t> read_bytes{0}, write_bytes{0};
        std::atomic<uint64_t> io_errors{0}, unsupported_requests{0};
        std::atomic<uint64_t> rate_limiter_throttled_events{0};
        std::atomic<bool> rate_limiter_throttled{false};
    };

    void on_activate_locked(const Activation& a) override;
    void on_queue_locked(uint16_t queue_index) override;
    void on_reset_locked() override;
    std::vector<EventSource> event_sources_locked() override;
    // Snapshots: pause completes every request in flight into the used ring; the state is the
    // capacity, checked against the drive's image on restore.
    void on_pause_locked() override { finish_in_flight_locked(); }
    void save_state_locked(StateWriter& w) const override;
    void restore_state_locked(StateReader& r) override;
    Queue& queue() const { return queues()[0]; }

    // Pops and starts requests until the queue is empty, the backend is full or the rate
    // limiter holds the queue back. Called with mutex_ held.
    void process_queue_locked();
    void pump_queue_locked();  // the loop of process_queue_locked
    // The rate limiter's timer fired: the queue is tried again.
    void on_limiter_timer_locked();
    // Copies the limiter's state into the counters (after each use of the limiter).
    void note_limiter_locked();
    // Starts one request; false if the backend was full (the chain is put back).
    bool handle_chain(const DescriptorChain& chain);
    // The counter of requests of `type`; nullptr for types the device does not know.
    std::atomic<uint64_t>* type_counter(uint32_t type);
    void complete(uint16_t head, uint32_t used_len, memory::GuestAddress status, uint8_t value);
    size_t reap_locked();  // returns the number of completions taken from the backend
    void process_completions_locked();
    void drain_backend_locked();
    // Waits for the backend's requests in flight and completes them into the used ring.
    void finish_in_flight_locked();
    bool swap_backend_locked(std::unique_ptr<BlockBackend> backend);
    // Throws Error unless `backend` is read-only exactly when the device is.
    void check_read_only(const BlockBackend& backend) const;

    std::unique_ptr<BlockBackend> backend_;
    BlockDeviceOptions options_;
    // capacity_ and config_ change at run time (replace_backend): written with both mutex() and
    // config_mutex_ held, read under either (read_config from vCPU threads takes config_mutex_
    // only, so it never waits for the queue).
    mutable std::mutex config_mutex_;
    uint64_t capacity_;  // sectors
    std::vector<uint8_t> config_;

    // The rest under mutex().
    bool backend_full_ = false;
    RateLimiter limiter_;
    uint64_t next_tag_ = 1;
    std::unordered_map<uint64_t, Pending> pending_;
    bool used_added_ = false;
    AtomicCounters counters_;
};

}  // namespace embervm::virtio::block
