// virtio-pci transport, modern only (virtio 1.x, spec 4.1): one PCI function per device, with
// vendor 0x1AF4, device ID 0x1040 + the virtio device ID, and one 64-bit memory BAR (BAR 0)
// holding every region the vendor-specific capabilities point at:
//
//   0x0000  common configuration (features, status, queue set-up: virtio_pci_common_cfg)
//   0x1000  ISR status (one byte, read-to-clear)
//   0x2000  device configuration (the device's config space)
//   0x3000  notifications: queue i at 0x3000 + 4 * i (notify_off_multiplier 4, queue_notify_off i)
//   0x4000  MSI-X table (one vector per queue plus one for configuration changes)
//   0x5000  MSI-X pending bit array
//
// The transport-independent part (queues, features, status, activation, DEVICE_NEEDS_RESET) is
// TransportCore (virtio/transport_core.h), shared with virtio-mmio. Interrupts are MSI-X only
// (no INTx pin): a used buffer on queue i raises the vector the driver chose for queue i, a
// configuration change the config vector; with MSI-X disabled only the ISR bits are set.
//
// Notifications: the VMM binds one eventfd per queue with KVM_IOEVENTFD at the queue's notify
// address while the BAR is decoded there (a QueueEvents object moves them with the BAR); a
// notify write that reaches bar_write() instead goes to the device's queue_notify().
//
// Direct interrupts: a device whose queues are served outside the VMM (vhost-net, vhost-user)
// can have its backend write the queue's interrupt straight into KVM. The transport offers a
// queue the irqfd of its MSI-X vector (VirtioDevice::set_queue_irqfd) exactly while
//   the device is activated and not in DEVICE_NEEDS_RESET, MSI-X is enabled, the function is
//   not masked, the queue has a vector, and that vector is unmasked (so its message is routed),
// and withdraws it (-1) as soon as one of these stops being true; the device then takes its
// backend back to its relay eventfd, whose events go through deliver() and MSI-X's pending bit
// like every other interrupt. A new message for an unmasked vector needs no switch: the irqfd
// is bound to the vector's GSI and KVM delivers with the GSI's current route, which
// MsixTable set (KVM_SET_GSI_ROUTING) before the write returned.
//
// Where it runs: on the vCPU thread whose write changed one of the conditions (the MSI-X
// table in the BAR, the MSI-X message control in configuration space, queue_msix_vector,
// status), after the MSI-X table's lock is released and with mutex_ held (mutex_ -> device lock
// -> MSI-X lock, the order deliver() already implies), so the device's switch is done before
// the vCPU returns to the guest. Every change re-evaluates all queues from the current state
// under mutex_, so of two racing writers the later evaluation wins with the final state.
//
// Races, and why no interrupt is lost (virtio drivers take a spurious MSI without harm, a lost
// one hangs a queue):
//   irqfd -> relay (mask, MSI-X off, vector change): the backend writes the old irqfd until the
//     switch takes effect. KVM consumes such a write itself (irqfd wakeup) and injects the MSI
//     with the GSI's route, which stays in place: the interrupt is delivered, at worst while
//     the driver believes the vector masked -- the same as a message in flight when the mask
//     write was posted. Writes after the switch go to the relay, which sets the pending bit.
//   relay -> irqfd (unmask, MSI-X on): MsixTable delivers the pending bit as the unmask is
//     written; the backend writes the relay until the switch, and the device keeps watching
//     the relay for as long as it is activated, so such a write is still relayed afterwards
//     (delivered, or made pending) -- at worst one spurious interrupt.
//
// Every guest value is validated: accesses of the wrong width, selectors and vector numbers out
// of range, queue sizes that are not powers of two are ignored or read back as "none"
// (VIRTIO_MSI_NO_VECTOR), refused at DRIVER_OK (DEVICE_NEEDS_RESET), never trusted.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "devices/pci/config_space.h"
#include "devices/pci/msix.h"
#include "devices/pci/pci_bus.h"
#include "virtio/transport_core.h"

namespace embervm::virtio {

namespace pci_layout {
inline constexpr unsigned kBar = 0;
inline constexpr uint64_t kBarSize = 0x8000;
inline constexpr uint64_t kCommonCfg = 0x0000;
inline constexpr uint64_t kCommonCfgSize = 0x3c;
inline constexpr uint64_t kIsr = 0x1000;
inline constexpr uint64_t kDeviceCfg = 0x2000;
inline constexpr uint64_t kDeviceCfgSize = 0x1000;
inline constexpr uint64_t kNotify = 0x3000;
inline constexpr uint32_t kNotifyOffMultiplier = 4;
inline constexpr uint64_t kMsixTable = 0x4000;
inline constexpr uint64_t kMsixPba = 0x5000;
inline constexpr uint16_t kVendorId = 0x1af4;
inline constexpr uint16_t kDeviceIdBase = 0x1040;
inline constexpr uint16_t kNoVector = 0xffff;  // VIRTIO_MSI_NO_VECTOR
// virtio_pci_cap.cfg_type
inline constexpr uint8_t kCapCommon = 1;
inline constexpr uint8_t kCapNotify = 2;
inline constexpr uint8_t kCapIsr = 3;
inline constexpr uint8_t kCapDevice = 4;
}  // namespace pci_layout

// virtio_pci_common_cfg field offsets (spec 4.1.4.3).
namespace common_cfg {
inline constexpr uint64_t kDeviceFeatureSelect = 0x00;
inline constexpr uint64_t kDeviceFeature = 0x04;
inline constexpr uint64_t kDriverFeatureSelect = 0x08;
inline constexpr uint64_t kDriverFeature = 0x0c;
inline constexpr uint64_t kConfigMsixVector = 0x10;
inline constexpr uint64_t kNumQueues = 0x12;
inline constexpr uint64_t kDeviceStatus = 0x14;
inline constexpr uint64_t kConfigGeneration = 0x15;
inline constexpr uint64_t kQueueSelect = 0x16;
inline constexpr uint64_t kQueueSize = 0x18;
inline constexpr uint64_t kQueueMsixVector = 0x1a;
inline constexpr uint64_t kQueueEnable = 0x1c;
inline constexpr uint64_t kQueueNotifyOff = 0x1e;
inline constexpr uint64_t kQueueDesc = 0x20;
inline constexpr uint64_t kQueueDriver = 0x28;
inline constexpr uint64_t kQueueDevice = 0x30;
inline constexpr uint64_t kQueueNotifyData = 0x38;
inline constexpr uint64_t kQueueReset = 0x3a;
}  // namespace common_cfg

class PciTransport : public devices::pci::PciFunction, public TransportCore {
public:
    // Called when BAR 0 is decoded at a new address (nullopt: nowhere), with the mutex that
    // serialises config accesses held: the VMM moves the queue ioeventfds there.
    using NotifyMoved = std::function<void(std::optional<uint64_t> notify_base)>;

    // `vectors` receives the MSI-X routes and triggers (one vector per queue, then config).
    PciTransport(const memory::GuestMemory& mem, std::shared_ptr<VirtioDevice> device,
                 std::shared_ptr<devices::pci::MsiVectors> vectors, vmm::EventLoop* loop = nullptr);
    ~PciTransport() override { release_device(); }

    // Set before the function is added to the root bus.
    void set_notify_moved(NotifyMoved callback) { notify_moved_ = std::move(callback); }
    // The MSI-X vector count: num_queues() + 1.
    uint16_t num_vectors() const { return msix_.num_vectors(); }
    const devices::pci::MsixTable& msix() const { return msix_; }
    // The config-space offset of the MSI-X capability (tests).
    uint16_t msix_capability() const { return msix_cap_; }

    // devices::pci::PciFunction
    std::string name() const override { return name_; }
    void config_read(uint16_t offset, std::span<uint8_t> data) override;
    void config_write(uint16_t offset, std::span<const uint8_t> data) override;
    std::array<std::optional<uint64_t>, devices::pci::kNumBars> bar_addresses() const override;
    std::array<uint64_t, devices::pci::kNumBars> bar_sizes() const override;
    void assign_bar(unsigned bar, uint64_t address) override;
    void bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) override;
    void bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) override;
    void bar_decoded(unsigned bar, std::optional<uint64_t> address) override;

private:
    void deliver(uint32_t interrupt_bits, std::optional<uint16_t> queue) override;
    void reset_transport_locked() override;
    void device_activated_locked() override;
    // Offers the device each queue's direct interrupt eventfd (or withdraws it) where that
    // changed: see "Direct interrupts" above. After every change of what it depends on.
    void update_queue_irqfds_locked();
    // Snapshots (virtio/saved_state.h): the common-config selectors, the config and queue
    // MSI-X vectors, the configuration space and the MSI-X table with its PBA. The restore
    // decodes and checks all of it first (restore_transport_locked), applies it once the core
    // and the device are restored (transport_restored_locked: the MSI-X routes are set then,
    // before the device is activated again and re-evaluates its direct interrupts), and
    // signals every queue's vector once at the end. Decoding the BAR at its restored address
    // (and so the notify ioeventfds) is the root's part (PciRoot::restore_decoding).
    void save_transport_locked(StateWriter& w) const override;
    void restore_transport_locked(StateReader& r) override;
    void transport_restored_locked() override;
    void raise_restored_interrupts_locked(uint32_t interrupt_bits) override;
    uint64_t read_common(uint64_t offset, size_t width);
    void write_common(uint64_t offset, size_t width, uint64_t value);
    // A vector number the driver wrote: itself if the table has it, else kNoVector.
    uint16_t checked_vector(uint64_t value) const;

    devices::pci::MsixTable msix_;
    NotifyMoved notify_moved_;
    mutable std::mutex config_mutex_;  // the PCI configuration space
    devices::pci::PciConfigSpace config_;
    uint16_t msix_cap_ = 0;

    // Common-config state (mutex_ held).
    uint32_t device_feature_select_ = 0;
    uint32_t driver_feature_select_ = 0;
    uint16_t queue_select_ = 0;
    // Vectors chosen by the driver (atomics: deliver() reads them lock-free).
    std::atomic<uint16_t> config_vector_{pci_layout::kNoVector};
    std::unique_ptr<std::atomic<uint16_t>[]> queue_vectors_;
    // Per queue, the direct interrupt eventfd the device was last offered (-1: none). mutex_.
    std::vector<int> queue_irqfds_;
    // What restore_transport_locked() decoded, until transport_restored_locked() applies it.
    struct Restored {
        uint32_t device_feature_select = 0;
        uint32_t driver_feature_select = 0;
        uint16_t queue_select = 0;
        uint16_t config_vector = pci_layout::kNoVector;
        std::vector<uint16_t> queue_vectors;
        devices::pci::PciConfigSpace::Bytes config{};
        devices::pci::MsixTable::Saved msix;
    };
    std::optional<Restored> restored_;
};

}  // namespace embervm::virtio
