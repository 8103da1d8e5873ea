// virtio-net: transmit and receive between the guest's queues and the backend (TAP).
#include "virtio/net/net_device.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "virtio/saved_state.h"
#include "vmm/sys/log.h"

namespace embervm::virtio::net {

namespace log = embervm::log;

namespace {

// struct virtio_net_config offsets (5.1.4).
constexpr size_t kCfgMac = 0;
constexpr size_t kCfgStatus = 6;
constexpr size_t kCfgMaxPairs = 8;
constexpr size_t kCfgMtu = 10;
constexpr size_t kConfigSize = 12;
constexpr size_t kNumBuffersOffset = 10;  // virtio_net_hdr_v1.num_buffers

// Copies `bytes` to offset `off` of `slices` taken as one byte stream (as far as they reach).
void write_at(std::span<const std::span<uint8_t>> slices, size_t off, std::span<const uint8_t> bytes) {
    size_t done = 0;
    for (const auto& s : slices) {
        if (done == bytes.size()) return;
        if (off >= s.size()) {
            off -= s.size();
            continue;
        }
        const size_t k = std::min(s.size() - off, bytes.size() - done);
        std::memcpy(s.data() + off, bytes.data() + done, k);
        done += k;
        off = 0;
    }
}

}  // namespace

std::vector<uint8_t> net_config_space(const std::array<uint8_t, 6>& mac, std::optional<uint16_t> mtu) {
    std::vector<uint8_t> config(kConfigSize, 0);
    std::memcpy(config.data() + kCfgMac, mac.data(), 6);
    const uint16_t status = kLinkUp, pairs = 1, mtu_value = mtu.value_or(0);
    std::memcpy(config.data() + kCfgStatus, &status, 2);
    std::memcpy(config.data() + kCfgMaxPairs, &pairs, 2);
    std::memcpy(config.data() + kCfgMtu, &mtu_value, 2);
    return config;
}

NetDevice::NetDevice(std::unique_ptr<NetBackend> backend, NetDeviceOptions options)
    : backend_(std::move(backend)),
      options_(std::move(options)),
      rx_limiter_(options_.rx_rate_limiter, options_.clock),
      tx_limiter_(options_.tx_rate_limiter, options_.clock),
      rx_frame_(kRxBounceBytes) {
    config_ = net_config_space(options_.mac, options_.mtu);
}

NetDevice::~NetDevice() = default;

uint64_t NetDevice::available_features() const {
    uint64_t f = feature::kRingEventIdx | feature::kRingIndirectDesc | net_feature::kMac | net_feature::kStatus |
                 net_feature::kMrgRxbuf;
    f |= backend_->supported_offload_features();
    if (options_.mtu) f |= net_feature::kMtu;
    return f;
}

void NetDevice::read_config(uint64_t offset, std::span<uint8_t> data) const {
    read_config_space(config_, offset, data);
}

void NetDevice::write_config(uint64_t offset, std::span<const uint8_t> data) {
    // The MAC is only writable by legacy drivers; nothing else is writable.
    log::debug("{}: ignored config write of {} bytes at offset {:#x}", name(), data.size(), offset);
}

void NetDevice::on_activate_locked(const Activation& a) {
    if (a.queues.size() < 2 || !a.queues[0].ready() || !a.queues[1].ready()) {
        throw QueueError("the receive and transmit queues must both be set up");
    }
    backend_->set_offloads(a.acked_features);
    rxq_ = &a.queues[0];
    txq_ = &a.queues[1];
    mrg_rxbuf_ = (a.acked_features & net_feature::kMrgRxbuf) != 0;
    rx_waiting_ = false;
    rx_frame_len_ = 0;
    rx_chains_.clear();
    rx_chains_capacity_ = 0;
    log::info("{}: activated on {} (features {:#x}{})", name(), backend_->name(), a.acked_features,
              mrg_rxbuf_ ? ", mergeable rx buffers" : "");
    // Frames the driver queued before DRIVER_OK (the transport drops kicks until then).
    try {
        process_tx_locked();
    } catch (const std::exception& e) {
        fail_locked(e.what());
    }
    // The TAP is watched afresh for this activation (DeviceBase subscribes event_sources_locked):
    // frames that queued up meanwhile are received once the driver has buffers.
}

void NetDevice::on_pause_locked() {
    if (!rx_chains_.empty()) {
        rxq_->set_next_avail(static_cast<uint16_t>(rxq_->next_avail() - rx_chains_.size()));
    }
    if (rx_frame_len_ != 0) counters_.rx_dropped++;
    rx_frame_len_ = 0;
    rx_chains_.clear();
    rx_chains_capacity_ = 0;
}

void NetDevice::save_state_locked(StateWriter& w) const {
    w.put<uint32_t>(state_version::kNet);
    w.put_blob(config_);
}

void NetDevice::restore_state_locked(StateReader& r) {
    r.get_version(state_version::kNet);
    const auto config = r.get_blob("config space");
    if (config.size() != config_.size()) {
        r.fail("config space", fmt::format("{} bytes where this device has {}", config.size(), config_.size()));
    }
    if (!std::equal(config.begin() + kCfgMtu, config.end(), config_.begin() + kCfgMtu)) {
        r.fail("config space", "the MTU differs from the interface's");
    }
    config_.assign(config.begin(), config.end());
}

void NetDevice::on_reset_locked() {
    if (rx_frame_len_ != 0) counters_.rx_dropped++;  // read from the TAP, waiting for buffers
    rxq_ = nullptr;
    txq_ = nullptr;
    rx_waiting_ = false;
    rx_throttled_ = false;
    rx_frame_len_ = 0;
    rx_chains_.clear();
    rx_chains_capacity_ = 0;
    rx_limiter_.reset_timer();  // the tokens stay: a reset buys no bandwidth
    tx_limiter_.reset_timer();
}

std::vector<DeviceBase::EventSource> NetDevice::event_sources_locked() {
    // The TAP first: resume_source_locked(0) watches it again.
    return {EventSource{backend_->fd(), [this] { return rx_ready_locked(); }},
            EventSource{tx_limiter_.timer_fd(),
                        [this] {
                            on_tx_timer_locked();
                            return true;
                        }},
            EventSource{rx_limiter_.timer_fd(), [this] {
                            on_rx_timer_locked();
                            return true;
                        }}};
}

void NetDevice::on_tx_timer_locked() {
    if (tx_limiter_.on_timer()) process_tx_locked();
}

void NetDevice::on_rx_timer_locked() {
    rx_limiter_.on_timer();
    if (rx_throttled_) resume_rx_locked();
}

void NetDevice::resume_rx_locked() {
    rx_throttled_ = false;
    const bool more = process_rx_locked();
    if (more) {
        resume_source_locked(0);
    } else if (!rx_throttled_) {
        rx_waiting_ = true;  // out of buffers: the next RX kick resumes
    }
}

void NetDevice::update_rate_limiters(const std::optional<RateLimiterConfig>& rx,
                                     const std::optional<RateLimiterConfig>& tx) {
    std::lock_guard lock(mutex());
    if (rx) {
        rx_limiter_.update(*rx);
        options_.rx_rate_limiter = *rx;
    }
    if (tx) {
        tx_limiter_.update(*tx);
        options_.tx_rate_limiter = *tx;
    }
    log::info("{}: rate limiters updated (rx {}, tx {})", name(), rx_limiter_.limited() ? "limited" : "unlimited",
              tx_limiter_.limited() ? "limited" : "unlimited");
    if (!active() || broken()) return;
    try {
        if (tx) process_tx_locked();
        if (rx && rx_throttled_) resume_rx_locked();
    } catch (const std::exception& e) {
        fail_locked(e.what());
    }
}

DeviceProgress NetDevice::progress() const {
    std::lock_guard lock(mutex());
    return queues_progress_locked();  // TAP writes and reads complete inside the calls: nothing stays in flight
}

NetCounters NetDevice::counters() const {
    std::lock_guard lock(mutex());
    NetCounters c = counters_;
    c.device_errors = device_errors();
    c.rx_rate_limiter_throttled = rx_limiter_.throttled_events();
    c.tx_rate_limiter_throttled = tx_limiter_.throttled_events();
    c.rx_throttled = rx_limiter_.blocked();
    c.tx_throttled = tx_limiter_.blocked();
    return c;
}

nlohmann::json NetDevice::metrics_json() const { return counters_json(counters()); }

nlohmann::json counters_json(const NetCounters& c) {
    return {{"rx_frames", c.rx_frames}, {"rx_bytes", c.rx_bytes},   {"rx_dropped", c.rx_dropped},
            {"rx_errors", c.rx_errors}, {"rx_paused", c.rx_paused}, {"tx_frames", c.tx_frames},
            {"tx_bytes", c.tx_bytes},   {"tx_dropped", c.tx_dropped}, {"tx_errors", c.tx_errors},
            {"rx_rate_limiter_throttled", c.rx_rate_limiter_throttled},
            {"tx_rate_limiter_throttled", c.tx_rate_limiter_throttled},
            {"rx_throttled", c.rx_throttled ? 1 : 0},
            {"tx_throttled", c.tx_throttled ? 1 : 0}};
}

void NetDevice::log_counters() const {
    const NetCounters c = counters();
    log::info("{}: rx {} frames ({} bytes, {} dropped, {} read errors, waited for buffers {} times), tx {} "
              "frames ({} bytes, {} dropped, {} write errors), {} device errors",
              name(), c.rx_frames, c.rx_bytes, c.rx_dropped, c.rx_errors, c.rx_paused, c.tx_frames, c.tx_bytes,
              c.tx_dropped, c.tx_errors, c.device_errors);
}

void NetDevice::signal_locked(uint16_t queue) {
    Queue* q = queue == 0 ? rxq_ : txq_;
    if (q->needs_notification(mem())) interrupt().signal_used_queue(queue);
}

void NetDevice::on_queue_locked(uint16_t queue_index) {
    if (queue_index == 1) {
        process_tx_locked();
    } else if (queue_index == 0 && rx_waiting_) {
        // Buffers arrived: finish a frame that waited for them, then watch the backend again
        // (the watch paused when the guest ran out of buffers).
        if (process_rx_locked()) {
            rx_waiting_ = false;
            resume_source_locked(0);
        }
    }
}

bool NetDevice::rx_ready_locked() {
    try {
        const bool more = process_rx_locked();
        rx_waiting_ = !more && !rx_throttled_;
        return more;
    } catch (const std::exception& e) {
        fail_locked(e.what());
        return false;
    }
}

// Moves frames from the backend into receive buffers until the backend is drained (true), the
// guest's buffers run out or the backend failed (false). See the header for the contract.
bool NetDevice::process_rx_locked() {
    bool delivered = false;
    bool more = false;
    for (bool go = true; go;) {
        switch (receive_frame_locked()) {
            case RxStep::kDelivered:
                delivered = true;
                break;
            case RxStep::kDropped:
                break;
            case RxStep::kNoBuffers:
                counters_.rx_paused++;
                go = false;
                break;
            case RxStep::kDrained:
                more = true;
                go = false;
                break;
            case RxStep::kStopped:  // guest error (broken()) or backend read error
                go = false;
                break;
            case RxStep::kThrottled:  // the RX limiter's timer resumes
                rx_throttled_ = true;
                go = false;
                break;
        }
    }
    if (delivered && !broken()) signal_locked(0);
    return more;
}

std::optional<DescriptorChain> NetDevice::pop_rx_chain_locked() {
    Queue& q = *rxq_;
    q.disable_notification(mem());
    for (;;) {
        if (auto chain = q.pop_available(mem())) return chain;
        if (!q.enable_notification(mem())) return std::nullopt;  // kicks on: wait for the driver
    }
}

// One frame: a chain is popped first, so a frame is never read without a place to put it; the
// chain goes back (undo_pop) when the backend turns out to be empty or the frame is dropped.
NetDevice::RxStep NetDevice::receive_frame_locked() {
    Queue& q = *rxq_;
    if (rx_frame_len_ == 0) {
        // A new frame only while the RX limiter has tokens (the frame's cost is charged once read).
        if (!rx_limiter_.ready()) return RxStep::kThrottled;
        auto chain = pop_rx_chain_locked();
        if (!chain) return RxStep::kNoBuffers;
        if (!chain->readable().empty()) {
            fail_locked("receive buffer with a device-readable descriptor");
            return RxStep::kStopped;
        }
        const uint32_t cap = chain->writable_len();
        if (mrg_rxbuf_ && cap < kNetHdrSize) {
            fail_locked(fmt::format("receive buffer of {} bytes cannot hold the {}-byte header", cap, kNetHdrSize));
            return RxStep::kStopped;
        }
        // Zero copy into a chain that holds any frame; otherwise through the bounce buffer.
        const bool direct = !mrg_rxbuf_ && cap >= rx_frame_.size();
        std::vector<std::span<uint8_t>> slices;
        rx_iov_.clear();
        if (direct) {
            Writer w = chain->writer(mem());
            slices = w.take_slices(cap);
            for (const auto& s : slices) rx_iov_.push_back({s.data(), s.size()});
        } else {
            rx_iov_.push_back({rx_frame_.data(), rx_frame_.size()});
        }
        const ssize_t n = backend_->read_frame(rx_iov_);
        if (n == -EAGAIN || n == -EWOULDBLOCK) {
            q.undo_pop();
            return RxStep::kDrained;
        }
        if (n < 0) {
            q.undo_pop();
            counters_.rx_errors++;
            uint64_t not_logged = 0;
            if (rx_error_log_.admit(&not_logged)) {
                log::error("{}: read from {} failed: {}; receiving stops until the driver adds buffers{}", name(),
                           backend_->name(), std::strerror(static_cast<int>(-n)),
                           not_logged ? fmt::format(" ({} more since the last report)", not_logged) : "");
            }
            return RxStep::kStopped;
        }
        const auto len = static_cast<size_t>(n);
        rx_limiter_.charge(len > kNetHdrSize ? len - kNetHdrSize : 0);  // read: it costs, delivered or not
        // Without MRG_RXBUF the frame must fit the one chain. The kernel reports a frame longer
        // than the buffers given with its full length (the copy was truncated).
        const size_t room = direct ? cap : mrg_rxbuf_ ? rx_frame_.size() : std::min<size_t>(cap, rx_frame_.size());
        if (len <= kNetHdrSize || len > room) {
            q.undo_pop();  // the buffer waits for the next frame
            counters_.rx_dropped++;
            log::debug("{}: received frame of {} bytes dropped (buffer of {} bytes)", name(), len, room);
            return RxStep::kDropped;
        }
        if (direct) {
            // num_buffers = 1 (the TAP leaves those two header bytes alone).
            const uint16_t one = 1;
            write_at(slices, kNumBuffersOffset, std::span(reinterpret_cast<const uint8_t*>(&one), sizeof(one)));
            q.add_used(mem(), chain->head_index(), static_cast<uint32_t>(len));
            counters_.rx_frames++;
            counters_.rx_bytes += len - kNetHdrSize;
            return RxStep::kDelivered;
        }
        rx_frame_len_ = len;
        rx_chains_.push_back(RxChain{std::move(chain), cap});
        rx_chains_capacity_ = cap;
    }
    // More chains for the rest of the frame (only with MRG_RXBUF; the first one always holds a
    // frame otherwise). Running out keeps the frame and the chains for the next attempt.
    while (rx_chains_capacity_ < rx_frame_len_) {
        auto chain = pop_rx_chain_locked();
        if (!chain) return RxStep::kNoBuffers;
        if (!chain->readable().empty()) {
            fail_locked("receive buffer with a device-readable descriptor");
            return RxStep::kStopped;
        }
        const uint32_t cap = chain->writable_len();
        rx_chains_.push_back(RxChain{std::move(chain), cap});
        rx_chains_capacity_ += cap;
    }
    deliver_frame_locked();
    return RxStep::kDelivered;
}

void NetDevice::deliver_frame_locked() {
    const uint16_t num_buffers = static_cast<uint16_t>(rx_chains_.size());
    std::memcpy(rx_frame_.data() + kNumBuffersOffset, &num_buffers, sizeof(num_buffers));
    rx_used_.clear();
    size_t pos = 0;
    for (RxChain& c : rx_chains_) {
        Writer w = c.chain->writer(mem());
        const size_t n = std::min<size_t>(c.capacity, rx_frame_len_ - pos);
        w.write(std::span<const uint8_t>(rx_frame_.data() + pos, n));
        rx_used_.push_back({c.chain->head_index(), static_cast<uint32_t>(n)});
        pos += n;
    }
    // All buffers of the frame at once: the driver reads num_buffers and takes the rest.
    rxq_->add_used_batch(mem(), rx_used_);
    counters_.rx_frames++;
    counters_.rx_bytes += rx_frame_len_ - kNetHdrSize;
    rx_frame_len_ = 0;
    rx_chains_.clear();
    rx_chains_capacity_ = 0;
}

void NetDevice::process_tx_locked() {
    Queue& q = *txq_;
    bool returned = false;
    do {
        q.disable_notification(mem());
        while (auto chain = q.pop_available(mem())) {
            if (!chain->writable().empty()) {
                fail_locked("transmit buffer with a device-writable descriptor");
                return;
            }
            const uint32_t len = chain->readable_len();
            if (len < kNetHdrSize) {
                fail_locked(fmt::format("transmit chain of {} bytes is shorter than the {}-byte header", len,
                                        kNetHdrSize));
                return;
            }
            if (len > kNetHdrSize + kMaxFrameBytes) {
                fail_locked(fmt::format("transmit chain of {} bytes is longer than the largest frame", len));
                return;
            }
            // Held back by the limiter: the frame stays in the queue until its timer (kicks stay off).
            if (!tx_limiter_.consume(len - kNetHdrSize)) {
                q.undo_pop();
                if (returned) signal_locked(1);
                return;
            }
            Reader r = chain->reader(mem());
            tx_iov_.clear();
            for (const auto& s : r.take_slices(len)) {
                tx_iov_.push_back({const_cast<uint8_t*>(s.data()), s.size()});
            }
            const ssize_t n = backend_->write_frame(tx_iov_);
            if (n == -EAGAIN || n == -EWOULDBLOCK || n == -ENOBUFS) {
                counters_.tx_dropped++;  // the TAP's queue is full: drop, as a NIC would
            } else if (n < 0) {
                // -EIO: the host interface is down; -EINVAL: a bad offload header from the guest.
                counters_.tx_errors++;
                uint64_t not_logged = 0;
                if (tx_error_log_.admit(&not_logged)) {
                    log::warn("{}: frame of {} bytes dropped: write to {} failed: {}{}", name(), len, backend_->name(),
                              std::strerror(static_cast<int>(-n)),
                              not_logged ? fmt::format(" ({} more since the last report)", not_logged) : "");
                }
            } else {
                counters_.tx_frames++;
                counters_.tx_bytes += len - kNetHdrSize;
            }
            q.add_used(mem(), chain->head_index(), 0);
            returned = true;
        }
    } while (q.enable_notification(mem()));
    if (returned) signal_locked(1);
}

}  // namespace embervm::virtio::net
