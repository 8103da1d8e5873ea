// DeviceBase: the activation life cycle every virtio device shares, so a device only implements
// its request processing. It keeps
//   - the activation (memory, queues, features, interrupt) between activate() and reset(),
//   - "broken": the transport's DEVICE_NEEDS_RESET (DeviceInterrupt::needs_reset), nothing of
//     its own; fail_locked() reports a guest error there and counts it,
//   - the device's event subscriptions on the event loop, the model being one subscriber per
//     device: the queue ioeventfds, the extra sources the device names (event_sources_locked:
//     a backend's completion fd, a TAP fd) and its timer (timer_interval_locked). They exist
//     while the device is activated and are dropped on reset.
//
// Every entry into the device (transport calls, event handlers, the device's own run-time
// methods) takes the one device lock, mutex(). The per-device hooks run with it held, and only
// while the device is activated and not broken (on_activate_locked and on_reset_locked aside).
//
// Threading: activate() and reset() run on vCPU threads; the subscriptions are created and
// destroyed on the loop thread (posted from there; FdWatch is not synchronised). A handler
// checks, under the lock, that the device still exists and is activated, so none runs into a
// reset or destroyed device; an event that fired while nothing watched is not lost (the fds
// are level-triggered: a queue eventfd written before its watch exists is seen once watched),
// and a queue kick that a stale watch consumes goes to the current activation. Destroy a
// device on the loop thread or while the loop does not run.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "virtio/device.h"

namespace embervm::vmm {
class FdWatch;
class PeriodicTimer;
}

namespace embervm::virtio {

class DeviceBase : public VirtioDevice {
public:
    DeviceBase();
    ~DeviceBase() override;

    void activate(const Activation& a) final;
    using VirtioDevice::activate;
    void queue_notify(uint16_t queue_index) final;
    void reset() final;
    void set_queue_irqfd(uint16_t queue_index, int irqfd) final;

    // Snapshots (virtio/device.h, virtio/saved_state.h): pause() runs on_pause_locked() and
    // drops the subscriptions; resume() makes them again and looks at every ready queue once.
    // save_state()/restore_state() frame the device's hooks with the reader's checks (everything
    // read, nothing left over).
    void pause() final;
    void resume() final;
    std::vector<uint8_t> save_state() const final;
    void restore_state(std::span<const uint8_t> bytes) final;

    // Guest errors that put the device in DEVICE_NEEDS_RESET since it was created.
    uint64_t device_errors() const { return device_errors_.load(std::memory_order_relaxed); }

protected:
    // An fd the device watches while activated, and what to do when it is readable (lock
    // held). The handler returns false to stop watching until resume_source_locked(index) (a
    // source that must not be read now, e.g. a TAP while the guest has no receive buffers).
    struct EventSource {
        int fd;
        std::function<bool()> on_readable;
    };

    // The device lock: every hook below runs with it held.
    std::mutex& mutex() const;

    // Per-device hooks.
    // Takes what it needs from `a` (check the queues its features need: throw QueueError);
    // may process queues the driver filled before DRIVER_OK. active() is already true.
    virtual void on_activate_locked(const Activation& a) = 0;
    // A kick of ready queue `queue_index` (from its eventfd or from the transport).
    virtual void on_queue_locked(uint16_t queue_index) = 0;
    // Back to the pre-activate state (the base clears the activation afterwards).
    virtual void on_reset_locked() = 0;
    // The sources besides the queue eventfds, asked each time the subscriptions are made.
    virtual std::vector<EventSource> event_sources_locked() { return {}; }
    // True for a device whose queues something else serves (the host kernel's vhost-net, a
    // vhost-user backend process): the queue eventfds go there, so the loop must not read them
    // and take its kicks. Asked when the subscriptions are made.
    virtual bool backend_reads_queue_events_locked() const { return false; }
    // The transport offered (irqfd >= 0) or withdrew (-1) a direct interrupt eventfd for queue
    // `queue_index` (VirtioDevice::set_queue_irqfd); also runs while broken. The offers stand
    // in queue_irqfd() until reset.
    virtual void on_queue_irqfd_locked(uint16_t /*queue_index*/) {}
    // The device just went to DEVICE_NEEDS_RESET (fail_locked), lock held.
    virtual void on_broken_locked() {}
    // A periodic timer while activated (nullopt: none) and its handler.
    virtual std::optional<std::chrono::nanoseconds> timer_interval_locked() const { return std::nullopt; }
    virtual void on_timer_locked() {}

    // Snapshot hooks (lock held). on_pause_locked: complete what a backend holds (activated,
    // not broken); a backend that serves the rings itself stops them there. save_state_locked/restore_state_locked: the device's own state, with a version
    // first; the default refuses ("snapshot: NAME cannot be saved").
    virtual void on_pause_locked() {}
    // resume() after pause() (activated, not broken): start again what on_pause_locked stopped.
    // Before the look at every queue that resume() makes.
    virtual void on_resume_locked() {}
    virtual void save_state_locked(StateWriter& w) const;
    virtual void restore_state_locked(StateReader& r);

    // State of the activation (lock held).
    bool active() const { return active_; }
    // Between pause() and resume(): no handler may touch the queues or the backends.
    bool paused() const { return paused_; }
    bool broken() const { return interrupt_ != nullptr && interrupt_->needs_reset(); }
    const memory::GuestMemory& mem() const { return *mem_; }
    std::span<Queue> queues() const { return queues_; }
    uint64_t acked_features() const { return acked_features_; }
    DeviceInterrupt& interrupt() const { return *interrupt_; }
    // The transport's direct interrupt eventfd for queue `queue_index` (set_queue_irqfd), or -1.
    int queue_irqfd(uint16_t queue_index) const {
        return queue_index < queue_irqfds_.size() ? queue_irqfds_[queue_index] : -1;
    }

    // The positions of the activation's ready queues (queue index = position in queues()), with
    // nothing in flight: progress() of a device that completes every buffer in the call that
    // takes it. Lock held; empty while not activated.
    DeviceProgress queues_progress_locked() const;
    // A guest error (or an irrecoverable backend failure): the device needs a reset; counted
    // once per breakage. Lock held.
    void fail_locked(std::string_view reason);
    // Asks for the subscriptions to be made anew (the backend's fd changed). Lock held.
    void resubscribe_locked();
    // Watches event source `index` (of event_sources_locked) again after its handler returned
    // false. Lock held; any thread.
    void resume_source_locked(size_t index);

private:
    struct Link;
    struct Subscriptions;
    // Loop thread: makes the subscriptions match the activation (none while not activated).
    static void sync(const std::shared_ptr<Link>& link);
    void sync_locked(const std::shared_ptr<Link>& link);
    void post_sync_locked();
    void on_queue_event_locked(uint16_t queue_index);
    void on_source_event_locked(size_t index, uint64_t generation, vmm::FdWatch* watch);

    std::shared_ptr<Link> link_;  // the lock, and the way handlers find the device
    bool active_ = false;
    bool paused_ = false;
    const memory::GuestMemory* mem_ = nullptr;
    std::span<Queue> queues_;
    uint64_t acked_features_ = 0;
    DeviceInterrupt* interrupt_ = nullptr;
    std::vector<int> queue_events_;
    std::vector<int> queue_irqfds_;  // set_queue_irqfd's offers, -1: none
    std::unique_ptr<vmm::EventLoop> loop_;  // a copy of the activation's (its owner may go first)
    // Bumped by activate(), reset() and resubscribe_locked(): subscriptions made for an older
    // value are replaced.
    uint64_t generation_ = 0;
    std::unique_ptr<Subscriptions> subscriptions_;  // loop thread (under the lock)
    std::atomic<uint64_t> device_errors_{0};
};

}  // namespace embervm::virtio
