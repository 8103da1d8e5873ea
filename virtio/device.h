// The interface between a virtio device model (virtio-blk, -net, -balloon) and the transport
// that exposes it to the guest (virtio-mmio today, virtio-pci later).
//
// The device model knows its type, features, queues and configuration space; the transport
// knows the register file, feature negotiation, the status state machine, queue setup and
// interrupts. A device never sees transport registers, and a transport never parses requests;
// backends (file I/O, TAP, ...) sit behind the device and are invisible to the transport.
//
// Life cycle, driven by the transport:
//   read_config/write_config   any time (the driver reads config during feature negotiation)
//   activate(Activation)       once the driver set DRIVER_OK with features accepted and every
//                              ready queue valid (Queue::validate)
//   queue_notify(i)            the driver kicked queue i by a QueueNotify write that reached the
//                              transport (no ioeventfd); only while activated and not broken
//   reset()                    the driver wrote status 0 (also before any activation): stop
//                              using the queues and the interrupt, release backend resources
//
// Events: every other way into a device goes through the event loop it gets at activation
// (Activation::loop). The device subscribes there itself: the queue ioeventfds it is handed,
// its backend's fds (block completions, TAP readiness) and its timers, and drops them again on
// reset (virtio/device_base.h does this for every device). One way out: used buffers and
// errors go to the DeviceInterrupt, which the transport turns into an interrupt.
//
// Threading: the transport serialises its calls into the device (one mutex, held during the
// call), so activate/queue_notify/reset/read_config/write_config never run concurrently with
// each other; they run on vCPU threads. The device's event handlers run on the event-loop
// thread and synchronise with those calls under the device's own lock. DeviceInterrupt methods
// are lock-free and may be called from any thread, with or without the transport's mutex held.
//
// Errors: guest errors inside a device are reported with DeviceInterrupt::device_error(), which
// sets the one "needs reset" flag (DeviceInterrupt::needs_reset()); a QueueError (or any
// std::exception) escaping activate() or queue_notify() is caught by the transport and turned
// into device_error().
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "memory/guest_memory.h"
#include "virtio/queue.h"
#include "vmm/sys/state_stream.h"

namespace embervm::vmm {
class EventLoop;
}

namespace embervm::virtio {

// Implemented by the transport; handed to the device at activation.
class DeviceInterrupt {
public:
    virtual ~DeviceInterrupt() = default;
    // The device added used buffers to queue `queue_index` and the driver wants to know
    // (Queue::needs_notification): sets the used-buffer interrupt bit and raises the irq.
    virtual void signal_used_queue(uint16_t queue_index) = 0;
    // The device changed its configuration space: bumps the config generation, sets the
    // config-change interrupt bit and raises the irq.
    virtual void signal_config_change() = 0;
    // The driver broke the rules (or the backend failed irrecoverably): sets
    // DEVICE_NEEDS_RESET, raises a config-change interrupt, logs the reason once. The device
    // should stop processing its queues until reset().
    virtual void device_error(std::string_view reason) = 0;
    // Whether the device is in DEVICE_NEEDS_RESET (device_error() since the last reset): the
    // one place that state is kept. A device processes no queue while it is set.
    virtual bool needs_reset() const = 0;
};

// What a device gets when the driver activates it. Everything stays valid and unchanged until
// the device's reset().
struct Activation {
    const memory::GuestMemory& mem;
    // Owned by the transport; queues the driver did not set up have ready() == false and must
    // not be used.
    std::span<Queue> queues;
    // What the driver accepted (a subset of the offered features, always with kVersion1).
    uint64_t acked_features;
    DeviceInterrupt& interrupt;
    // One eventfd per queue, readable when the driver kicked it (KVM_IOEVENTFD; owned by the
    // transport), or -1; empty when kicks only come through queue_notify().
    std::span<const int> queue_events = {};
    // Where the device subscribes its event sources; nullptr: none (unit tests drive the
    // device by hand).
    vmm::EventLoop* loop = nullptr;
};

// A read of `out.size()` bytes at `offset` from a device's configuration space `config`;
// bytes beyond its end read as zero (spec: reads past the config size are undefined, zeros
// are the safe answer).
inline void read_config_space(std::span<const uint8_t> config, uint64_t offset, std::span<uint8_t> out) {
    for (size_t i = 0; i < out.size(); i++) {
        out[i] = offset + i < config.size() ? config[offset + i] : 0;
    }
}

// What a device holds at one moment, for the stall watchdog and the metrics
// (virtio/watchdog.h): its ready queues, and the requests it handed to a backend and has not
// completed yet.
struct DeviceProgress {
    std::vector<QueueProgress> queues;  // ready queues, in queue order
    uint64_t in_flight = 0;
    // When the oldest request in flight went to the backend (nullopt: none in flight).
    std::optional<std::chrono::steady_clock::time_point> oldest_submitted;
};

class VirtioDevice {
public:
    virtual ~VirtioDevice() = default;

    // device_id::kBlock, kNet, ...
    virtual uint32_t device_type() const = 0;
    // Features the device offers: device-specific bits plus the ring features it handles
    // (feature::kRingEventIdx, kRingIndirectDesc: Queue supports both). The transport adds
    // feature::kVersion1 itself.
    virtual uint64_t available_features() const = 0;
    // One entry per queue: its maximum size (a power of two, at most kMaxQueueSize).
    virtual std::vector<uint16_t> queue_max_sizes() const = 0;

    // Device configuration space. Reads beyond the config size return zeros; invalid writes
    // are ignored (and logged at debug level). Any offset and width (1, 2, 4 or 8 bytes).
    virtual void read_config(uint64_t offset, std::span<uint8_t> data) const = 0;
    virtual void write_config(uint64_t offset, std::span<const uint8_t> data) = 0;

    // DRIVER_OK with valid queues: the device may now use them and subscribes its event
    // sources on `a.loop`. May throw (e.g. a backend that cannot start): the transport reports
    // it as device_error().
    virtual void activate(const Activation& a) = 0;
    // The same without queue events or a loop (unit tests).
    void activate(const memory::GuestMemory& mem, std::span<Queue> queues, uint64_t acked_features,
                  DeviceInterrupt& interrupt) {
        activate(Activation{mem, queues, acked_features, interrupt});
    }
    // The driver made buffers available on queue `queue_index` (a ready queue) and the kick came
    // through the transport's registers rather than the queue's eventfd.
    virtual void queue_notify(uint16_t queue_index) = 0;
    // Back to the pre-activate state; release everything taken in activate(), including the
    // event subscriptions. Idempotent: also called when the device was never activated.
    virtual void reset() = 0;
    // While activated: the transport offers `irqfd`, an eventfd whose writes deliver queue
    // `queue_index`'s interrupt to the guest without the VMM (KVM's irqfd for the queue's MSI-X
    // vector, virtio-pci), or withdraws the offer (-1): from then on the interrupt must go
    // through DeviceInterrupt::signal_used_queue again. A device whose queues something outside
    // the VMM serves (vhost) hands it over; the default ignores it. Called with the transport's
    // lock held, on a vCPU thread; forgotten at reset().
    virtual void set_queue_irqfd(uint16_t /*queue_index*/, int /*irqfd*/) {}

    // For logs: "virtio-blk rootfs".
    virtual std::string name() const = 0;
    // A snapshot for the watchdog (any thread; the device takes its own lock, so the call
    // may wait for a queue pass, never for I/O). Nothing while not activated.
    virtual DeviceProgress progress() const = 0;

    // The device's counters as a metrics section (vmm/metrics.h; any thread).
    virtual nlohmann::json metrics_json() const = 0;
    // One info line with the counters, at the end of a run.
    virtual void log_counters() const = 0;

    // Snapshots (virtio/saved_state.h). pause(): completes every request handed to a backend
    // (into the used ring) and stops every event handler of the device until resume(); a
    // no-op while not activated. save_state(): the device's own state (configuration space and
    // what it keeps beyond it), while paused or not activated; a device that cannot be saved
    // throws Error naming itself. restore_state(): into a device just created from the same
    // config and not activated, before the transport activates it again; throws StateError
    // naming the device and the field.
    virtual void pause() {}
    virtual void resume() {}
    virtual std::vector<uint8_t> save_state() const {
        throw Error(fmt::format("snapshot: {} cannot be saved", name()));
    }
    virtual void restore_state(std::span<const uint8_t> /*bytes*/) {
        throw StateError(fmt::format("snapshot: {} cannot be restored", name()));
    }
};

}  // namespace embervm::virtio
