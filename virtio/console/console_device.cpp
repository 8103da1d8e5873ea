// virtio-console: the guest's output from the transmit queue to the sink, host input into the
// receive queue (virtio/console/console_device.h).
#include "virtio/console/console_device.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "vmm/sys/eventfd.h"
#include "virtio/saved_state.h"
#include "vmm/sys/log.h"

namespace embervm::virtio::console {

namespace log = embervm::log;

namespace {
// struct virtio_console_config (5.3.4): cols, rows, max_nr_ports, emerg_wr. None of its fields
// is valid without the features that go with them, which the device does not offer: all zeros.
constexpr size_t kConfigSize = 12;
}  // namespace

ConsoleDevice::ConsoleDevice(std::unique_ptr<ConsoleSink> sink)
    : sink_(std::move(sink)), wake_(std::make_shared<vmm::EventFd>()) {}

ConsoleDevice::~ConsoleDevice() = default;

uint64_t ConsoleDevice::available_features() const { return feature::kRingEventIdx | feature::kRingIndirectDesc; }

void ConsoleDevice::read_config(uint64_t offset, std::span<uint8_t> data) const {
    static constexpr uint8_t kZeros[kConfigSize] = {};
    read_config_space(kZeros, offset, data);
}

void ConsoleDevice::write_config(uint64_t offset, std::span<const uint8_t> data) {
    // emerg_wr is only writable with VIRTIO_CONSOLE_F_EMERG_WRITE, which is not offered.
    log::debug("{}: ignored config write of {} bytes at offset {:#x}", name(), data.size(), offset);
}

void ConsoleDevice::on_activate_locked(const Activation& a) {
    if (a.queues.size() < 2 || !a.queues[kReceiveQueue].ready() || !a.queues[kTransmitQueue].ready()) {
        throw QueueError("the receive and transmit queues must both be set up");
    }
    rxq_ = &a.queues[kReceiveQueue];
    txq_ = &a.queues[kTransmitQueue];
    log::info("{}: activated, output to {} (features {:#x})", name(), sink_->name(), a.acked_features);
    try {
        process_tx_locked();  // output the driver queued before DRIVER_OK
    } catch (const std::exception& e) {
        fail_locked(e.what());
        return;
    }
    // Input that waited for the driver.
    if (input_refused_) input_may_resume_locked();
}

void ConsoleDevice::on_reset_locked() {
    rxq_ = nullptr;
    txq_ = nullptr;
    tx_chain_.reset();  // the driver resets its queues too: the chain in hand is gone
    tx_offset_ = 0;
    tx_returned_ = false;
    waiting_for_sink_ = false;
    tx_resume_offset_ = 0;
}

void ConsoleDevice::on_pause_locked() {
    if (tx_chain_) {
        txq_->set_next_avail(static_cast<uint16_t>(txq_->next_avail() - 1));  // the chain in hand is the last taken
        tx_resume_offset_ = tx_offset_;
        tx_chain_.reset();
        tx_offset_ = 0;
    }
    if (tx_returned_) {
        tx_returned_ = false;
        if (txq_->needs_notification(mem())) interrupt().signal_used_queue(kTransmitQueue);
    }
    waiting_for_sink_ = false;  // resume() tries the sink again
}

void ConsoleDevice::save_state_locked(StateWriter& w) const {
    w.put<uint32_t>(state_version::kConsole);
    w.put<uint64_t>(tx_resume_offset_);
}

void ConsoleDevice::restore_state_locked(StateReader& r) {
    r.get_version(state_version::kConsole);
    // Any offset is safe: a chain shorter than it is skipped to its end.
    tx_resume_offset_ = r.get<uint64_t>("transmit offset");
}

std::vector<DeviceBase::EventSource> ConsoleDevice::event_sources_locked() {
    return {EventSource{wake_->fd(), [this] {
                            wake_->consume();
                            waiting_for_sink_ = false;
                            process_tx_locked();
                            return true;
                        }}};
}

void ConsoleDevice::on_queue_locked(uint16_t queue_index) {
    if (queue_index == kTransmitQueue) {
        process_tx_locked();
    } else if (queue_index == kReceiveQueue && input_refused_) {
        input_may_resume_locked();  // receive buffers came
    }
}

void ConsoleDevice::wake_locked() { wake_->signal(); }

void ConsoleDevice::input_may_resume_locked() {
    input_refused_ = false;
    if (input_ready_) input_ready_();
}

void ConsoleDevice::process_tx_locked() {
    if (waiting_for_sink_) return;  // the sink's when_writable() asks for the next pass
    Queue& q = *txq_;
    uint32_t buffers = 0;
    uint64_t budget = kTxBytesPerPass;
    bool sink_full = false;
    bool throttled = false;
    q.disable_notification(mem());
    for (;;) {
        if (!tx_chain_) {
            if (buffers == kTxBuffersPerPass || budget == 0) {
                throttled = q.has_available(mem());
                if (!throttled) throttled = q.enable_notification(mem());
                break;
            }
            auto chain = q.pop_available(mem());
            if (!chain) {
                if (q.enable_notification(mem())) {  // buffers came meanwhile
                    q.disable_notification(mem());
                    continue;
                }
                break;  // drained; kicks are on
            }
            if (!chain->writable().empty()) {
                fail_locked("transmit buffer with a device-writable descriptor");
                return;
            }
            tx_offset_ = std::min<uint64_t>(std::exchange(tx_resume_offset_, 0), chain->readable_len());
            tx_chain_ = std::move(chain);
            buffers++;
        }
        if (!transmit_chain_locked(budget, sink_full)) {
            throttled = !sink_full;
            break;
        }
    }
    if (sink_full) {
        // Nothing more is taken from the guest until the sink drains; kicks stay off.
        counters_.tx_sink_full++;
        waiting_for_sink_ = true;
        sink_->when_writable([wake = wake_] { wake->signal(); });
    } else if (throttled) {
        // More is waiting: another pass once the loop served what else is ready.
        counters_.tx_throttled++;
        wake_locked();
    }
    if (tx_returned_) {
        tx_returned_ = false;
        if (q.needs_notification(mem())) interrupt().signal_used_queue(kTransmitQueue);
    }
}

bool ConsoleDevice::transmit_chain_locked(uint64_t& budget, bool& sink_full) {
    Reader r = tx_chain_->reader(mem());
    r.skip(tx_offset_);
    while (r.available() > 0) {
        if (budget == 0) return false;
        for (const auto& slice : r.take_slices(std::min(r.available(), budget))) {
            size_t done = 0;
            while (done < slice.size()) {
                const ssize_t n = sink_->write(slice.subspan(done));
                if (n == -EAGAIN || n == -EWOULDBLOCK) {
                    sink_full = true;
                    return false;  // tx_offset_ says where to go on
                }
                if (n <= 0) {
                    // Gone for good: the rest of the chain is dropped, the guest goes on.
                    const uint64_t dropped = tx_chain_->readable_len() - tx_offset_;
                    counters_.tx_dropped_bytes += dropped;
                    uint64_t not_logged = 0;
                    if (sink_error_log_.admit(&not_logged)) {
                        log::warn("{}: {} bytes of output dropped: write to {} failed: {}{}", name(), dropped,
                                  sink_->name(), n == 0 ? "no progress" : std::strerror(static_cast<int>(-n)),
                                  not_logged ? fmt::format(" ({} more since the last report)", not_logged) : "");
                    }
                    budget -= std::min(budget, dropped);
                    complete_chain_locked();
                    return true;
                }
                const auto k = static_cast<size_t>(n);
                done += k;
                tx_offset_ += k;
                budget -= k;
                counters_.tx_bytes += k;
            }
        }
    }
    complete_chain_locked();
    return true;
}

void ConsoleDevice::complete_chain_locked() {
    txq_->add_used(mem(), tx_chain_->head_index(), 0);
    tx_chain_.reset();
    tx_offset_ = 0;
    counters_.tx_buffers++;
    tx_returned_ = true;
}

size_t ConsoleDevice::enqueue_input(std::span<const uint8_t> bytes) {
    std::lock_guard lock(mutex());
    if (bytes.empty()) return 0;
    if (!active() || paused() || broken()) {
        input_refused_ = true;  // taken up again at the next activation
        return 0;
    }
    Queue& q = *rxq_;
    size_t taken = 0;
    bool returned = false;
    try {
        q.disable_notification(mem());
        while (taken < bytes.size()) {
            auto chain = q.pop_available(mem());
            if (!chain) {
                // No buffers: kicks on (and a re-check), so the driver's next ones are seen.
                if (q.enable_notification(mem())) {
                    q.disable_notification(mem());
                    continue;
                }
                break;
            }
            if (!chain->readable().empty()) {
                fail_locked("receive buffer with a device-readable descriptor");
                break;
            }
            if (chain->writable_len() == 0) {
                fail_locked("receive buffer of 0 bytes");
                break;
            }
            Writer w = chain->writer(mem());
            const size_t n = w.write(bytes.subspan(taken));
            q.add_used(mem(), chain->head_index(), static_cast<uint32_t>(n));
            taken += n;
            counters_.rx_bytes += n;
            counters_.rx_buffers++;
            returned = true;
        }
        if (returned && !broken() && q.needs_notification(mem())) interrupt().signal_used_queue(kReceiveQueue);
    } catch (const std::exception& e) {
        fail_locked(fmt::format("queue {}: {}", kReceiveQueue, e.what()));
    }
    if (taken < bytes.size()) {
        input_refused_ = true;
        counters_.rx_waits++;
    }
    return taken;
}

void ConsoleDevice::set_input_ready_callback(std::function<void()> callback) {
    std::lock_guard lock(mutex());
    input_ready_ = std::move(callback);
}

DeviceProgress ConsoleDevice::progress() const {
    std::lock_guard lock(mutex());
    return queues_progress_locked();  // a chain waiting for the sink is no backend request: nothing in flight
}

ConsoleCounters ConsoleDevice::counters() const {
    std::lock_guard lock(mutex());
    ConsoleCounters c = counters_;
    c.device_errors = device_errors();
    return c;
}

nlohmann::json ConsoleDevice::metrics_json() const { return counters_json(counters()); }

nlohmann::json counters_json(const ConsoleCounters& c) {
    return {{"rx_bytes", c.rx_bytes},
            {"rx_buffers", c.rx_buffers},
            {"rx_waits", c.rx_waits},
            {"tx_bytes", c.tx_bytes},
            {"tx_buffers", c.tx_buffers},
            {"tx_dropped_bytes", c.tx_dropped_bytes},
            {"tx_throttled", c.tx_throttled},
            {"tx_sink_full", c.tx_sink_full}};
}

void ConsoleDevice::log_counters() const {
    const ConsoleCounters c = counters();
    log::info("{}: rx {} bytes in {} buffers (waited for buffers {} times), tx {} bytes in {} buffers ({} dropped, "
              "throttled {} times, sink full {} times), {} device errors",
              name(), c.rx_bytes, c.rx_buffers, c.rx_waits, c.tx_bytes, c.tx_buffers, c.tx_dropped_bytes,
              c.tx_throttled, c.tx_sink_full, c.device_errors);
}

}  // namespace embervm::virtio::console
