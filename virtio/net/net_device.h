// virtio-net device model (virtio 1.2, 5.1): one receive queue (0) and one transmit queue (1),
// frames to and from a NetBackend (TAP). Knows nothing of the transport; once activated it
// watches its queue eventfds and the backend's fd on the event loop (virtio/device_base.h):
//
//   TX   a kick of queue 1: each chain (virtio_net_hdr_v1 + packet, device-readable only) is
//        written to the backend with one writev straight from guest memory; dropped frames
//        (backend full or down, bad offload header) are counted, the chain is returned either
//        way (used length 0).
//   RX   the backend fd is readable. A frame is only read once a receive chain is in hand.
//        Without MRG_RXBUF, a chain big enough for any frame (the driver's "big packets" with
//        GUEST_TSO) is read into directly (zero copy); a smaller one goes through a bounce
//        buffer, and a frame that does not fit it is dropped (the chain is kept). With
//        MRG_RXBUF the frame is read into the bounce buffer and copied across as many chains as
//        it needs (num_buffers in the first header).
//
// RX back-pressure, inside the device:
//   - The backend is read until it is drained (-EAGAIN) and its fd stays watched.
//   - When the guest has no receive buffers left, or the backend read failed, the device stops
//     watching the fd (level-triggered, it would fire forever). Nothing is lost: the next frame
//     stays in the TAP; a frame already read (MRG_RXBUF, chains ran out halfway) waits inside
//     the device with the chains gathered so far.
//   - The next kick of the receive queue retries; once the backend is drained again the device
//     watches the fd again. A new activation watches it afresh (frames may wait from before).
//
// Threading: everything runs under the device lock (DeviceBase::mutex()).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "virtio/device_base.h"
#include "virtio/net/backend.h"
#include "virtio/rate_limiter.h"
#include "vmm/sys/log_limiter.h"

namespace embervm::virtio::net {

// Feature bits (5.1.3), as masks.
namespace net_feature {
inline constexpr uint64_t kCsum = feature_bit(0);
inline constexpr uint64_t kGuestCsum = feature_bit(1);
inline constexpr uint64_t kMtu = feature_bit(3);
inline constexpr uint64_t kMac = feature_bit(5);
inline constexpr uint64_t kGuestTso4 = feature_bit(7);
inline constexpr uint64_t kGuestTso6 = feature_bit(8);
inline constexpr uint64_t kGuestEcn = feature_bit(9);
inline constexpr uint64_t kGuestUfo = feature_bit(10);
inline constexpr uint64_t kHostTso4 = feature_bit(11);
inline constexpr uint64_t kHostTso6 = feature_bit(12);
inline constexpr uint64_t kHostEcn = feature_bit(13);
inline constexpr uint64_t kHostUfo = feature_bit(14);
inline constexpr uint64_t kMrgRxbuf = feature_bit(15);
inline constexpr uint64_t kStatus = feature_bit(16);
}  // namespace net_feature

// struct virtio_net_hdr_v1 (5.1.6): always 12 bytes with VIRTIO_F_VERSION_1.
struct VirtioNetHdr {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
    uint16_t num_buffers;
};
static_assert(sizeof(VirtioNetHdr) == 12);

inline constexpr size_t kNetHdrSize = sizeof(VirtioNetHdr);
inline constexpr uint16_t kNetQueueSize = 256;
// Largest frame after the header: a 64 KiB GSO packet plus Ethernet and VLAN headers.
inline constexpr size_t kMaxFrameBytes = 65536 + 14 + 4;
// The receive bounce buffer: header + the largest frame. A receive chain at least this big is
// read into directly.
inline constexpr size_t kRxBounceBytes = kNetHdrSize + kMaxFrameBytes;
inline constexpr uint16_t kLinkUp = 1;  // VIRTIO_NET_S_LINK_UP

struct NetDeviceOptions {
    std::string id;                         // iface_id, for logs
    std::array<uint8_t, 6> mac{};           // VIRTIO_NET_F_MAC
    std::optional<uint16_t> mtu;            // VIRTIO_NET_F_MTU when set
    // Rate limiters (virtio/rate_limiter.h): a frame costs one op and its bytes without the
    // virtio-net header. TX frames wait in the transmit queue while throttled; RX stops
    // reading the TAP (its watch paused, frames wait there) and charges each frame once read.
    RateLimiterConfig rx_rate_limiter;
    RateLimiterConfig tx_rate_limiter;
    std::shared_ptr<const RateLimiterClock> clock = steady_rate_limiter_clock();  // tests: a fake
};

// Counters for metrics (monotonic). Bytes count packets without the virtio-net header.
struct NetCounters {
    uint64_t rx_frames = 0, rx_bytes = 0;
    uint64_t rx_dropped = 0;  // no buffer big enough (without MRG_RXBUF), runt, reset mid-frame
    uint64_t rx_errors = 0;   // the backend read failed (other than -EAGAIN)
    uint64_t rx_paused = 0;   // times RX waited for guest buffers
    uint64_t tx_frames = 0, tx_bytes = 0;
    uint64_t tx_dropped = 0;  // the backend refused the frame (full: -EAGAIN, -ENOBUFS)
    uint64_t tx_errors = 0;   // the backend failed the write otherwise (frame dropped too)
    uint64_t device_errors = 0;  // guest errors: the device went to NEEDS_RESET
    uint64_t rx_rate_limiter_throttled = 0, tx_rate_limiter_throttled = 0;  // throttling events
    bool rx_throttled = false, tx_throttled = false;                      // held back now
};
// The counters as a metrics section (vmm/metrics.h), without device_errors (the VMM adds the
// transport's "needs_reset" count).
nlohmann::json counters_json(const NetCounters& c);
// struct virtio_net_config (5.1.4): the MAC, link up, one queue pair, the MTU (0 without one).
std::vector<uint8_t> net_config_space(const std::array<uint8_t, 6>& mac, std::optional<uint16_t> mtu);


class NetDevice : public DeviceBase {
public:
    NetDevice(std::unique_ptr<NetBackend> backend, NetDeviceOptions options);
    ~NetDevice() override;

    uint32_t device_type() const override { return device_id::kNet; }
    uint64_t available_features() const override;
    std::vector<uint16_t> queue_max_sizes() const override { return {kNetQueueSize, kNetQueueSize}; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    std::string name() const override { return "virtio-net " + options_.id; }
    DeviceProgress progress() const override;
    nlohmann::json metrics_json() const override;
    void log_counters() const override;

    NetCounters counters() const;

    // Run-time rate-limiter updates (any thread; nullopt: unchanged). The new buckets apply at
    // once; a direction held back by the old ones is tried again.
    void update_rate_limiters(const std::optional<RateLimiterConfig>& rx, const std::optional<RateLimiterConfig>& tx);

private:
    // One popped receive chain waiting for (part of) a frame.
    struct RxChain {
        std::optional<DescriptorChain> chain;
        uint32_t capacity;
    };
    // What one receive step did.
    enum class RxStep { kDelivered, kDropped, kNoBuffers, kDrained, kStopped, kThrottled };

    void on_activate_locked(const Activation& a) override;
    void on_queue_locked(uint16_t queue_index) override;
    void on_reset_locked() override;
    std::vector<EventSource> event_sources_locked() override;
    // Snapshots: pause drops a frame read from the TAP that waits for more receive buffers (its
    // buffers go back to the ring, the guest sees a lost frame); the state is the configuration
    // space (the MAC may be a random one).
    void on_pause_locked() override;
    void save_state_locked(StateWriter& w) const override;
    void restore_state_locked(StateReader& r) override;
    // The backend fd's handler: moves frames to the guest. false: the guest has no receive
    // buffers left (or the read failed); the fd is not watched until a receive kick resumes it.
    bool rx_ready_locked();

    bool process_rx_locked();
    RxStep receive_frame_locked();
    // The next receive chain, with kicks re-enabled (and re-checked) when there is none.
    std::optional<DescriptorChain> pop_rx_chain_locked();
    // Copies the frame in rx_frame_ into the chains in rx_chains_ and returns them, all at once.
    void deliver_frame_locked();
    void process_tx_locked();
    void on_rx_timer_locked();
    void on_tx_timer_locked();
    // Receiving again after the RX limiter let go (timer or update).
    void resume_rx_locked();
    void signal_locked(uint16_t queue);

    std::unique_ptr<NetBackend> backend_;
    NetDeviceOptions options_;
    std::vector<uint8_t> config_;

    // The rest under mutex().
    Queue* rxq_ = nullptr;
    Queue* txq_ = nullptr;
    bool mrg_rxbuf_ = false;
    bool rx_waiting_ = false;  // rx_ready_locked() returned false; resume on the next RX kick
    bool rx_throttled_ = false;  // the RX limiter stopped receiving; resume on its timer
    RateLimiter rx_limiter_;
    RateLimiter tx_limiter_;

    // The frame being received (header + packet) and the chains gathered for it.
    std::vector<uint8_t> rx_frame_;
    size_t rx_frame_len_ = 0;
    std::vector<RxChain> rx_chains_;
    uint64_t rx_chains_capacity_ = 0;
    std::vector<Queue::UsedElement> rx_used_;
    std::vector<iovec> rx_iov_;
    std::vector<iovec> tx_iov_;
    NetCounters counters_;
    // Backend errors (a TAP device deleted under the device, ...): logged at most every 10 s.
    log::Limiter rx_error_log_;
    log::Limiter tx_error_log_;
};

}  // namespace embervm::virtio::net
