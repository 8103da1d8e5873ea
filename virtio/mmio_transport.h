// virtio-mmio transport, version 2 ("modern", spec 4.2.2): the register file in a 4 KiB MMIO
// window in front of one VirtioDevice.
//
// It owns the device's queues, negotiates features (VIRTIO_F_VERSION_1 required; the driver
// may only accept offered features), runs the status state machine (status 0 resets and
// releases everything), validates the queues at DRIVER_OK before activating the device, and
// raises the device's interrupt through an IrqLine (an irqfd-backed EventFdIrq in the VMM).
//
// Queue notifications: the VMM binds one eventfd per queue with KVM_IOEVENTFD at base +
// mmio::kQueueNotify (datamatch = queue index) and hands them to the transport
// (set_queue_events), which owns them and passes them to the device at activation with the
// event loop: the device watches them itself (virtio/device_base.h), the transport is not on
// that path. A QueueNotify write that reaches write() (no ioeventfd) is forwarded to the
// device's queue_notify().
//
// Locking: one mutex serialises register accesses (vCPU threads) and every call into the
// device, which runs with the mutex held. InterruptStatus, InterruptACK, Status and
// ConfigGeneration reads, and the DeviceInterrupt methods, use atomics only and never take the
// mutex: a device may call them from inside a transport call (mutex held) or from its event
// handlers without deadlock, and the guest's interrupt handler never waits for a device that
// is busy processing a queue.
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

#include "devices/bus.h"
#include "devices/irq.h"
#include "memory/guest_memory.h"
#include "virtio/device.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"
#include "vmm/sys/eventfd.h"

namespace embervm::vmm {
class EventLoop;
}

namespace embervm::virtio {

class MmioTransport : public vmm::BusDevice, public DeviceInterrupt {
public:
    // `mem` (and `loop`) must outlive the transport. The device's queue sizes and features are
    // read once. `loop` is where the device subscribes its events once activated (nullptr:
    // nowhere; kicks then come through QueueNotify writes only).
    MmioTransport(const memory::GuestMemory& mem, std::shared_ptr<VirtioDevice> device,
                  std::shared_ptr<devices::IrqLine> irq, vmm::EventLoop* loop = nullptr);
    // Resets an activated device so it lets go of the queues owned here.
    ~MmioTransport() override;
    MmioTransport(const MmioTransport&) = delete;
    MmioTransport& operator=(const MmioTransport&) = delete;

    // vmm::BusDevice: registers (offset < 0x100) take 32-bit aligned accesses only (others
    // read as 0 / are ignored, logged at debug level); the config space at 0x100 takes any
    // width and is forwarded to the device.
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // The queue notification eventfds, one per queue (bound with KVM_IOEVENTFD by the caller),
    // handed to the device at each activation. Before the guest runs.
    void set_queue_events(std::vector<vmm::EventFd> events);

    // DeviceInterrupt (lock-free, any thread).
    void signal_used_queue(uint16_t queue_index) override;
    void signal_config_change() override;
    // Since when the used-buffer bit of InterruptStatus has been set without the driver
    // acknowledging it (nullopt: it is clear). A driver that took the interrupt acknowledges
    // it; one that did not get it leaves it set (the stall watchdog, virtio/watchdog.h).
    std::optional<std::chrono::steady_clock::time_point> used_interrupt_pending_since() const;
    // Recovery for a lost interrupt (the stall watchdog): sets the used-buffer bit and raises
    // the irq again, if the device is activated and not broken. Spurious for a driver that was
    // only slow, which the spec allows. Returns whether it raised.
    bool raise_used_again();
    void device_error(std::string_view reason) override;
    bool needs_reset() const override { return needs_reset_.load(); }

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

private:
    uint32_t read_register(uint64_t offset);
    void write_register(uint64_t offset, uint32_t value);
    // The rest run with mutex_ held.
    void write_status(uint32_t value);
    void reset_locked();
    void activate_locked();
    void notify_locked(uint32_t queue_index);
    bool features_acceptable() const;
    // The selected queue if queue configuration may be written now, else nullptr (logged).
    Queue* configurable_queue(const char* reg, bool require_not_ready);
    void raise(uint32_t interrupt_bits);

    const memory::GuestMemory& mem_;
    const std::shared_ptr<VirtioDevice> device_;
    const std::shared_ptr<devices::IrqLine> irq_;
    vmm::EventLoop* const loop_;
    const std::string name_;
    const uint64_t offered_features_;
    const std::vector<uint16_t> queue_max_sizes_;

    mutable std::mutex mutex_;
    std::vector<Queue> queues_;
    std::vector<vmm::EventFd> queue_events_;
    uint32_t device_features_sel_ = 0;
    uint32_t driver_features_sel_ = 0;
    uint32_t queue_sel_ = 0;
    uint64_t driver_features_ = 0;
    bool driver_features_beyond_64_ = false;  // a non-zero write to DriverFeatures with sel >= 2
    bool activated_ = false;

    std::atomic<uint32_t> status_{0};  // written with mutex_ held; without DEVICE_NEEDS_RESET
    std::atomic<uint32_t> interrupt_status_{0};
    // steady_clock nanoseconds when the used-buffer bit went from clear to set (0: clear).
    std::atomic<int64_t> used_pending_since_ns_{0};
    std::atomic<uint32_t> config_generation_{0};
    std::atomic<bool> needs_reset_{false};
    std::atomic<uint64_t> needs_reset_events_{0};
};

// The kernel command-line entry announcing a virtio-mmio device in a 4 KiB window:
// "virtio_mmio.device=4K@0xd0001000:5".
std::string mmio_cmdline_entry(uint64_t base, uint32_t gsi);

}  // namespace embervm::virtio
