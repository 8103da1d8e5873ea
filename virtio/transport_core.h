// The transport-independent half of a virtio transport (virtio-mmio, virtio-pci): it owns the
// device's queues, negotiates features (VIRTIO_F_VERSION_1 required; the driver may only accept
// offered features), runs the status state machine (status 0 resets and releases everything),
// validates the queues at DRIVER_OK before activating the device, keeps DEVICE_NEEDS_RESET and
// the config generation, and implements DeviceInterrupt. A transport derives from it, decodes
// its own register file into these calls and delivers interrupts its own way (deliver()).
//
// Locking: one mutex (mutex_) serialises register accesses (vCPU threads) and every call into
// the device, which runs with the mutex held; the *_locked members and the queue/feature
// selectors expect it held. Status, the interrupt status bits, the config generation and the
// DeviceInterrupt methods use atomics only and never take the mutex: a device may call them
// from inside a transport call (mutex held) or from its event handlers without deadlock.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/device.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"
#include "vmm/sys/eventfd.h"
#include "vmm/sys/state_stream.h"

namespace embervm::vmm {
class EventLoop;
}

namespace embervm::virtio {

class TransportCore : public DeviceInterrupt {
public:
    // Resets an activated device so it lets go of the queues owned here.
    ~TransportCore() override;
    TransportCore(const TransportCore&) = delete;
    TransportCore& operator=(const TransportCore&) = delete;

    // The queue notification eventfds, one per queue (bound with KVM_IOEVENTFD by the caller),
    // handed to the device at each activation. Before the guest runs.
    void set_queue_events(std::vector<vmm::EventFd> events);

    // DeviceInterrupt (lock-free, any thread).
    void signal_used_queue(uint16_t queue_index) override;
    void signal_config_change() override;
    void device_error(std::string_view reason) override;
    bool needs_reset() const override { return needs_reset_.load(); }

    // Since when the used-buffer interrupt has been pending without the driver acknowledging it
    // (nullopt: none pending, or the transport cannot tell). A driver that took the interrupt
    // acknowledges it; one that did not get it leaves it set (the stall watchdog,
    // virtio/watchdog.h).
    std::optional<std::chrono::steady_clock::time_point> used_interrupt_pending_since() const;
    // Recovery for a lost interrupt (the stall watchdog): raises the used-buffer interrupt again
    // (every queue's), if the device is activated and not broken. Returns whether it raised.
    bool raise_used_again();

    // Snapshots (virtio/saved_state.h). pause(): the device completes what its backends hold
    // and stops handling events (VirtioDevice::pause); resume(): it goes on. save_state(): the
    // transport's and the device's state, while paused (vCPUs stopped); throws Error for a
    // device or transport that cannot be saved. restore_state(): into a transport just created
    // (never used) for a device of the same config, before any vCPU runs; activates the device
    // again if it was activated. Throws StateError naming the device and the field, the
    // transport then reset (as by the driver's status 0).
    void pause();
    void resume();
    std::vector<uint8_t> save_state() const;
    void restore_state(std::span<const uint8_t> bytes);

    // Introspection (for the VMM, metrics and tests).
    VirtioDevice& device() const { return *device_; }
    uint16_t num_queues() const { return static_cast<uint16_t>(queue_max_sizes_.size()); }
    uint32_t status() const;  // as the driver reads it, including DEVICE_NEEDS_RESET
    uint32_t interrupt_status() const { return interrupt_status_.load(); }
    uint32_t config_generation() const { return config_generation_.load(); }
    // Times the device entered DEVICE_NEEDS_RESET since the transport was created.
    uint64_t needs_reset_events() const { return needs_reset_events_.load(std::memory_order_relaxed); }
    bool is_activated() const;
    uint64_t offered_features() const { return offered_features_; }
    uint64_t driver_features() const;
    // A copy of queue `index`'s current state (std::out_of_range if there is no such queue).
    Queue queue(uint16_t index) const;

protected:
    // `mem` (and `loop`) must outlive the transport. The device's queue sizes and features are
    // read once. `loop` is where the device subscribes its events once activated.
    TransportCore(const memory::GuestMemory& mem, std::shared_ptr<VirtioDevice> device, vmm::EventLoop* loop);

    // Raises the interrupt for `interrupt_bits` (interrupt::kUsedBuffer, kConfigChange); `queue`
    // is the queue with new used buffers (nullopt with kUsedBuffer: every queue). Lock-free.
    virtual void deliver(uint32_t interrupt_bits, std::optional<uint16_t> queue) = 0;
    // Sets bits in the interrupt status (MMIO InterruptStatus, PCI ISR) for deliver().
    void set_interrupt_bits(uint32_t interrupt_bits);
    // The driver acknowledged (MMIO InterruptACK) or read-and-cleared (PCI ISR) `bits`.
    void clear_interrupt_bits(uint32_t bits);
    // Resets the device if it is activated (idempotent). Every transport's destructor calls it
    // first, while deliver() still reaches the transport.
    void release_device();
    // Reads and clears the interrupt status at once (PCI ISR semantics).
    uint32_t take_interrupt_bits();
    // Called by reset_locked() so the transport resets its own registers (mutex_ held).
    virtual void reset_transport_locked() {}
    // Called when the device was activated (by the driver's DRIVER_OK or a restore), mutex_ held.
    virtual void device_activated_locked() {}
    // The transport's own registers in a snapshot (mutex_ held), with a version first.
    // restore_transport_locked checks everything it reads (StateError) before it changes
    // anything.
    virtual void save_transport_locked(StateWriter& w) const = 0;
    virtual void restore_transport_locked(StateReader& r) = 0;
    // A restore, once everything was read and checked and the core's and the device's state
    // are in place, before the device is activated again (mutex_ held): a transport that only
    // decoded in restore_transport_locked() applies it here, with its side effects.
    virtual void transport_restored_locked() {}
    // The last step of a restore (mutex_ held, the device activated again if it was): raises
    // what the guest may not have taken before the snapshot. Here: the saved interrupt status
    // bits, set again and delivered.
    virtual void raise_restored_interrupts_locked(uint32_t interrupt_bits);

    // The rest run with mutex_ held.
    // Word `sel` (0: bits 0-31, 1: 32-63, else 0) of the offered features.
    uint32_t device_features_word(uint32_t sel) const;
    // A driver write of word `sel` of the features it accepts (ignored outside the DRIVER,
    // !FEATURES_OK window).
    void write_driver_features_word(uint32_t sel, uint32_t value);
    void write_status(uint32_t value);
    // Queue `index` if queue configuration may be written now, else nullptr (logged). `reg`
    // names the register for the log.
    Queue* configurable_queue(const char* reg, uint32_t index, bool require_not_ready);
    // A kick that reached the registers (no ioeventfd).
    void notify_locked(uint32_t queue_index);
    void reset_locked();
    bool activated_locked() const { return activated_; }
    uint64_t driver_features_locked() const { return driver_features_; }

    const memory::GuestMemory& mem_;
    const std::shared_ptr<VirtioDevice> device_;
    const std::string name_;
    mutable std::mutex mutex_;
    std::vector<Queue> queues_;

private:
    void activate_locked();
    // Activates the device for the driver's features and ready queues; the reason if a queue is
    // invalid or the device refused (the device is then not activated).
    std::optional<std::string> activate_device_locked();
    // restore_state without the reset on error.
    void restore_state_locked(std::span<const uint8_t> bytes);
    bool features_acceptable() const;

    vmm::EventLoop* const loop_;
    const uint64_t offered_features_;
    const std::vector<uint16_t> queue_max_sizes_;

    std::vector<vmm::EventFd> queue_events_;
    uint64_t driver_features_ = 0;
    bool driver_features_beyond_64_ = false;  // a non-zero write to a features word >= 2
    bool activated_ = false;

    std::atomic<uint32_t> status_{0};  // written with mutex_ held; without DEVICE_NEEDS_RESET
    std::atomic<uint32_t> interrupt_status_{0};
    // steady_clock nanoseconds when the used-buffer bit went from clear to set (0: clear).
    std::atomic<int64_t> used_pending_since_ns_{0};
    std::atomic<uint32_t> config_generation_{0};
    std::atomic<bool> needs_reset_{false};
    std::atomic<uint64_t> needs_reset_events_{0};
};

// 64-bit register halves, for transports that expose 64-bit values as two 32-bit registers.
inline uint64_t replace_low(uint64_t old, uint32_t low) { return (old & 0xffffffff00000000ULL) | low; }
inline uint64_t replace_high(uint64_t old, uint32_t high) { return (old & 0xffffffffULL) | (uint64_t{high} << 32); }

}  // namespace embervm::virtio
