// virtio-console device model (virtio 1.2, 5.3): one port (no VIRTIO_CONSOLE_F_MULTIPORT, so no
// control queues; VIRTIO_CONSOLE_F_SIZE and EMERG_WRITE not offered), Linux's hvc0. Queue 0,
// receiveq, carries host input to the guest; queue 1, transmitq, the guest's output. Knows
// nothing of the transport; once activated it watches its queue eventfds and its own wake-up
// eventfd on the event loop (virtio/device_base.h).
//
//   TX   a kick of queue 1: each chain (device-readable only) is written to the ConsoleSink
//        (sink.h) and returned with used length 0. Throttled: one pass takes at most
//        kTxBuffersPerPass chains and kTxBytesPerPass bytes; the rest waits for the next pass,
//        which the device asks for through its wake-up eventfd, so every other event source
//        of the loop (other devices, the API, timers) is served in between. A chain cut by
//        the byte budget or by a sink that took part of it is kept and resumed where it
//        stopped. When the sink is full (-EAGAIN) the device stops taking chains and waits for
//        the sink's when_writable(), which also signals the wake-up eventfd: nothing is
//        buffered in the VMM beyond the chain in hand, and the guest's driver sees a full
//        queue. A sink that is gone (EPIPE, EIO) drops the output (counted, logged every 10 s):
//        the guest never stalls on it.
//   RX   enqueue_input() (devices/console_input.h; StdinConsole calls it on the loop) copies
//        host input into receive chains (device-writable only) and returns them with the bytes
//        written. Without receive buffers (or before activation) it takes nothing and calls
//        the input-ready callback once the driver adds buffers (its kick of queue 0) or
//        activates the device: StdinConsole stops reading the host meanwhile.
//
// Guest errors (DEVICE_NEEDS_RESET, through DeviceBase::fail_locked): a device-writable
// descriptor on the transmit queue, a device-readable one or an empty chain on the receive
// queue, and every QueueError (bad indices, loops, buffers outside guest memory, ...).
//
// Threading: everything runs under the device lock (DeviceBase::mutex()).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/console_input.h"
#include "virtio/console/sink.h"
#include "virtio/device_base.h"
#include "vmm/sys/log_limiter.h"

namespace embervm::vmm {
class EventFd;
}

namespace embervm::virtio::console {

inline constexpr uint16_t kConsoleQueueSize = 256;
inline constexpr uint16_t kReceiveQueue = 0;
inline constexpr uint16_t kTransmitQueue = 1;
// One transmit pass: at most this many chains and bytes, then the loop serves others.
inline constexpr uint32_t kTxBuffersPerPass = 64;
inline constexpr uint64_t kTxBytesPerPass = 64 * 1024;

// Counters for metrics (monotonic).
struct ConsoleCounters {
    uint64_t rx_bytes = 0, rx_buffers = 0;      // host input into the guest
    uint64_t tx_bytes = 0, tx_buffers = 0;      // guest output taken by the sink
    uint64_t tx_dropped_bytes = 0;              // output the sink refused for good (EPIPE, ...)
    uint64_t tx_throttled = 0;                  // passes cut by the budget (continued later)
    uint64_t tx_sink_full = 0;                  // times the sink was full and the device waited
    uint64_t rx_waits = 0;                      // times input waited for receive buffers
    uint64_t device_errors = 0;                 // guest errors: the device went to NEEDS_RESET
};
// The counters as a metrics section (vmm/metrics.h), without device_errors (the VMM adds the
// transport's "needs_reset" count).
nlohmann::json counters_json(const ConsoleCounters& c);

class ConsoleDevice : public DeviceBase, public devices::ConsoleInput {
public:
    explicit ConsoleDevice(std::unique_ptr<ConsoleSink> sink);
    ~ConsoleDevice() override;

    uint32_t device_type() const override { return device_id::kConsole; }
    uint64_t available_features() const override;
    std::vector<uint16_t> queue_max_sizes() const override { return {kConsoleQueueSize, kConsoleQueueSize}; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    std::string name() const override { return "virtio-console"; }
    DeviceProgress progress() const override;
    nlohmann::json metrics_json() const override;
    void log_counters() const override;

    // devices::ConsoleInput (loop thread). The callback is called with the device lock held.
    size_t enqueue_input(std::span<const uint8_t> bytes) override;
    void set_input_ready_callback(std::function<void()> callback) override;

    ConsoleCounters counters() const;

private:
    void on_activate_locked(const Activation& a) override;
    void on_queue_locked(uint16_t queue_index) override;
    void on_reset_locked() override;
    std::vector<EventSource> event_sources_locked() override;
    // Snapshots: pause puts a transmit chain written in part back on the ring and keeps how far
    // it was written (the state), so the output goes on where it stopped, nothing twice.
    void on_pause_locked() override;
    void save_state_locked(StateWriter& w) const override;
    void restore_state_locked(StateReader& r) override;

    // One throttled transmit pass (see the file comment).
    void process_tx_locked();
    // Writes what is left of tx_chain_ from tx_offset_, within `budget` bytes. true: the chain
    // is done (returned to the guest); false: the sink is full or the budget ran out.
    bool transmit_chain_locked(uint64_t& budget, bool& sink_full);
    // Returns tx_chain_ to the guest (used length 0: the device wrote nothing into it).
    void complete_chain_locked();
    // Asks the loop for another transmit pass (the wake-up eventfd).
    void wake_locked();
    // Input that was turned away may come now: tell the host side.
    void input_may_resume_locked();

    std::unique_ptr<ConsoleSink> sink_;
    // Written to ask for a transmit pass (the budget ran out, the sink can take more); shared
    // with the sink's when_writable() callback, which may outlive the device.
    std::shared_ptr<vmm::EventFd> wake_;

    // The rest under mutex().
    Queue* rxq_ = nullptr;
    Queue* txq_ = nullptr;
    std::optional<DescriptorChain> tx_chain_;  // the transmit chain in hand
    uint64_t tx_offset_ = 0;                   // bytes of it already written
    uint64_t tx_resume_offset_ = 0;            // of the next chain taken (one put back by pause)
    bool tx_returned_ = false;                 // used buffers not yet signalled
    bool waiting_for_sink_ = false;
    bool input_refused_ = false;               // enqueue_input() turned bytes away
    std::function<void()> input_ready_;
    ConsoleCounters counters_;
    log::Limiter sink_error_log_;
};

}  // namespace embervm::virtio::console
