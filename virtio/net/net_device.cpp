#include "virtio/net/net_device.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "vmm/log.h"

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

}  // namespace

NetDevice::NetDevice(std::unique_ptr<NetBackend> backend, NetDeviceOptions options)
    : backend_(std::move(backend)), options_(std::move(options)), rx_frame_(kNetHdrSize + kMaxFrameBytes) {
    config_.assign(kConfigSize, 0);
    std::memcpy(config_.data() + kCfgMac, options_.mac.data(), 6);
    const uint16_t status = kLinkUp, pairs = 1, mtu = options_.mtu.value_or(0);
    std::memcpy(config_.data() + kCfgStatus, &status, 2);
    std::memcpy(config_.data() + kCfgMaxPairs, &pairs, 2);
    std::memcpy(config_.data() + kCfgMtu, &mtu, 2);
}

NetDevice::~NetDevice() = default;

uint64_t NetDevice::available_features() const {
    uint64_t f = feature::kRingEventIdx | feature::kRingIndirectDesc | net_feature::kMac | net_feature::kStatus |
                 net_feature::kMrgRxbuf;
    f |= backend_->offload_features();
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

void NetDevice::activate(const memory::GuestMemory& mem, std::span<Queue> queues, uint64_t acked,
                         DeviceInterrupt& interrupt) {
    std::function<void()> resume;
    {
        std::lock_guard lock(mutex_);
        if (queues.size() < 2 || !queues[0].ready() || !queues[1].ready()) {
            throw QueueError("the receive and transmit queues must both be set up");
        }
        backend_->set_offloads(acked);
        mem_ = &mem;
        rxq_ = &queues[0];
        txq_ = &queues[1];
        interrupt_ = &interrupt;
        acked_ = acked;
        mrg_rxbuf_ = (acked & net_feature::kMrgRxbuf) != 0;
        broken_ = false;
        rx_waiting_ = false;
        rx_frame_len_ = 0;
        rx_chains_.clear();
        rx_chains_capacity_ = 0;
        resume = rx_resume_;
        log::info("{}: activated on {} (features {:#x}{})", name(), backend_->name(), acked,
                  mrg_rxbuf_ ? ", mergeable rx buffers" : "");
        // Frames the driver queued before DRIVER_OK (the transport drops kicks until then).
        process_tx_locked();
    }
    if (resume) resume();  // frames may have queued up in the TAP meanwhile
}

void NetDevice::reset() {
    std::lock_guard lock(mutex_);
    mem_ = nullptr;
    rxq_ = nullptr;
    txq_ = nullptr;
    interrupt_ = nullptr;
    acked_ = 0;
    broken_ = false;
    rx_waiting_ = false;
    rx_frame_len_ = 0;
    rx_chains_.clear();
    rx_chains_capacity_ = 0;
}

void NetDevice::set_rx_resume_hook(std::function<void()> hook) {
    std::lock_guard lock(mutex_);
    rx_resume_ = std::move(hook);
}

NetCounters NetDevice::counters() const {
    std::lock_guard lock(mutex_);
    return counters_;
}

void NetDevice::fail_locked(std::string_view reason) {
    broken_ = true;
    counters_.device_errors++;
    if (interrupt_ != nullptr) interrupt_->device_error(reason);
}

void NetDevice::signal_locked(uint16_t queue) {
    Queue* q = queue == 0 ? rxq_ : txq_;
    if (q->needs_notification(*mem_)) interrupt_->signal_used_queue(queue);
}

void NetDevice::queue_notify(uint16_t queue_index) {
    std::function<void()> resume;
    {
        std::lock_guard lock(mutex_);
        if (mem_ == nullptr || broken_) return;
        try {
            if (queue_index == 1) {
                process_tx_locked();
            } else if (queue_index == 0 && rx_waiting_) {
                // Buffers arrived: finish a frame that waited for them, then let the caller watch
                // the backend again (it stopped when process_rx() returned false).
                if (process_rx_locked()) {
                    rx_waiting_ = false;
                    resume = rx_resume_;
                }
            }
        } catch (const std::exception& e) {
            fail_locked(e.what());
        }
    }
    if (resume) resume();
}

bool NetDevice::process_rx() {
    std::lock_guard lock(mutex_);
    if (mem_ == nullptr || broken_) {
        return false;  // resumed by activate()
    }
    try {
        const bool more = process_rx_locked();
        rx_waiting_ = !more;
        return more;
    } catch (const std::exception& e) {
        fail_locked(e.what());
        return false;
    }
}

// Moves frames from the backend into receive buffers until the backend is empty (true) or the
// guest's buffers run out (false). A frame is read only once buffers for it are certain (one
// chain without MRG_RXBUF; with it, chains are gathered until they hold the whole frame), so
// running out of buffers never drops a frame: a frame already read waits in rx_frame_ with the
// chains gathered so far.
bool NetDevice::process_rx_locked() {
    Queue& q = *rxq_;
    bool delivered = false;
    bool more = true;
    for (;;) {
        if (rx_frame_len_ == 0) {
            // Need at least one buffer before reading a frame.
            q.disable_notification(*mem_);
            if (!q.has_available(*mem_) && !q.enable_notification(*mem_)) {
                counters_.rx_paused++;
                more = false;
                break;
            }
            const iovec iov{rx_frame_.data(), rx_frame_.size()};
            const ssize_t n = backend_->read_frame(std::span<const iovec>(&iov, 1));
            if (n == -EAGAIN || n == -EWOULDBLOCK) break;
            if (n < 0) {
                log::warn("{}: read from {} failed: {}", name(), backend_->name(), std::strerror(static_cast<int>(-n)));
                break;
            }
            if (static_cast<size_t>(n) <= kNetHdrSize) {
                counters_.rx_dropped++;
                continue;
            }
            rx_frame_len_ = static_cast<size_t>(n);
        }
        // Gather chains for the frame.
        while (rx_chains_capacity_ < rx_frame_len_) {
            q.disable_notification(*mem_);
            auto chain = q.pop_available(*mem_);
            if (!chain) {
                if (q.enable_notification(*mem_)) continue;  // buffers arrived meanwhile
                counters_.rx_paused++;
                if (delivered) signal_locked(0);
                return false;
            }
            if (!chain->readable().empty()) {
                fail_locked("receive buffer with a device-readable descriptor");
                return false;
            }
            const uint32_t cap = chain->writable_len();
            if (!mrg_rxbuf_ && cap < rx_frame_len_) {
                // Without MRG_RXBUF one buffer must hold the whole frame: drop the frame, keep
                // the buffer for the next one.
                q.undo_pop();
                counters_.rx_dropped++;
                rx_frame_len_ = 0;
                break;
            }
            if (mrg_rxbuf_ && cap < kNetHdrSize && rx_chains_.empty()) {
                fail_locked(fmt::format("receive buffer of {} bytes cannot hold the {}-byte header", cap, kNetHdrSize));
                return false;
            }
            rx_chains_.push_back(RxChain{std::move(chain), cap});
            rx_chains_capacity_ += cap;
        }
        if (rx_frame_len_ == 0) continue;  // dropped
        deliver_frame_locked();
        if (broken_) return false;
        delivered = true;
    }
    if (delivered) signal_locked(0);
    return more;
}

void NetDevice::deliver_frame_locked() {
    const uint16_t num_buffers = static_cast<uint16_t>(rx_chains_.size());
    std::memcpy(rx_frame_.data() + kNumBuffersOffset, &num_buffers, sizeof(num_buffers));
    size_t pos = 0;
    for (RxChain& c : rx_chains_) {
        Writer w = c.chain->writer(*mem_);
        const size_t n = std::min<size_t>(c.capacity, rx_frame_len_ - pos);
        w.write(std::span<const uint8_t>(rx_frame_.data() + pos, n));
        rxq_->add_used(*mem_, c.chain->head_index(), static_cast<uint32_t>(n));
        pos += n;
    }
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
        q.disable_notification(*mem_);
        while (auto chain = q.pop_available(*mem_)) {
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
            Reader r = chain->reader(*mem_);
            tx_iov_.clear();
            for (const auto& s : r.take_slices(len)) {
                tx_iov_.push_back({const_cast<uint8_t*>(s.data()), s.size()});
            }
            const ssize_t n = backend_->write_frame(tx_iov_);
            if (n < 0) {
                counters_.tx_dropped++;
                log::debug("{}: frame of {} bytes dropped: {}", name(), len, std::strerror(static_cast<int>(-n)));
            } else {
                counters_.tx_frames++;
                counters_.tx_bytes += len - kNetHdrSize;
            }
            q.add_used(*mem_, chain->head_index(), 0);
            returned = true;
        }
    } while (q.enable_notification(*mem_));
    if (returned) signal_locked(1);
}

}  // namespace embervm::virtio::net
