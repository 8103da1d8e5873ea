// virtio-mmio transport, version 2 ("modern", spec 4.2.2): the register file in a 4 KiB MMIO
// window in front of one VirtioDevice.
//
// The transport-independent part (queues, features, status, activation, DEVICE_NEEDS_RESET) is
// TransportCore (virtio/transport_core.h); this class decodes the register file into it and
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
#include "virtio/transport_core.h"
#include "virtio/virtio_defs.h"

namespace embervm::vmm {
class EventLoop;
}

namespace embervm::virtio {

class MmioTransport : public vmm::BusDevice, public TransportCore {
public:
    // `mem` (and `loop`) must outlive the transport. The device's queue sizes and features are
    // read once. `loop` is where the device subscribes its events once activated (nullptr:
    // nowhere; kicks then come through QueueNotify writes only).
    MmioTransport(const memory::GuestMemory& mem, std::shared_ptr<VirtioDevice> device,
                  std::shared_ptr<devices::IrqLine> irq, vmm::EventLoop* loop = nullptr);
    ~MmioTransport() override { release_device(); }

    // vmm::BusDevice: registers (offset < 0x100) take 32-bit aligned accesses only (others
    // read as 0 / are ignored, logged at debug level); the config space at 0x100 takes any
    // width and is forwarded to the device.
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    // One interrupt line for every cause: InterruptStatus says which.
    void deliver(uint32_t interrupt_bits, std::optional<uint16_t> queue) override;
    void reset_transport_locked() override;
    void save_transport_locked(StateWriter& w) const override;
    void restore_transport_locked(StateReader& r) override;
    uint32_t read_register(uint64_t offset);
    void write_register(uint64_t offset, uint32_t value);

    const std::shared_ptr<devices::IrqLine> irq_;
    uint32_t device_features_sel_ = 0;  // the selectors: mutex_ held
    uint32_t driver_features_sel_ = 0;
    uint32_t queue_sel_ = 0;
};

// The kernel command-line entry announcing a virtio-mmio device in a 4 KiB window:
// "virtio_mmio.device=4K@0xd0001000:5".
std::string mmio_cmdline_entry(uint64_t base, uint32_t gsi);

}  // namespace embervm::virtio
