// virtio-net with its queues served by the host kernel (vhost-net): the same device as
// NetDevice to the guest (configuration space, MAC, MTU, offloads), but once the driver
// activates it the VMM hands both virtqueues to /dev/vhost-net (vhost_kernel.h) with the TAP as
// backend and steps out of the data path:
//
//   activation  features (the driver's, restricted to the ring features vhost knows:
//               VERSION_1, MRG_RXBUF, EVENT_IDX, INDIRECT_DESC), the TAP's receive offloads
//               (TUNSETOFFLOAD, as NetDevice does), the memory table from guest memory's
//               regions, then per queue NUM, BASE, ADDR, KICK (the queue's ioeventfd itself:
//               the guest's notifications go straight to the kernel), CALL, ERR, and last
//               NET_SET_BACKEND with the TAP.
//   interrupts  vhost writes the queue's call eventfd when the driver wants an interrupt (it
//               applies EVENT_IDX / NO_INTERRUPT itself). That eventfd is one of two:
//               - the irqfd of the queue's MSI-X vector, while the transport offers it
//                 (virtio-pci with the vector deliverable: VirtioDevice::set_queue_irqfd and
//                 "Direct interrupts" in virtio/pci_transport.h): vhost -> KVM -> guest, the
//                 VMM out of the interrupt path too;
//               - otherwise the device's relay eventfd, which the event loop watches and turns
//                 into the used-buffer interrupt through the transport (virtio-mmio, whose
//                 driver ignores an interrupt without the InterruptStatus bit only the VMM sets;
//                 a masked MSI-X vector, whose pending bit only the VMM sets; MSI-X off).
//               Each offer or withdrawal is one SET_VRING_CALL, made before the vCPU that caused
//               it returns to the guest; the relay stays watched while the device is activated,
//               so a call written to it just before a switch is still relayed (the race
//               argument is in virtio/pci_transport.h). At DEVICE_NEEDS_RESET the calls go back
//               to the relay, which a broken device does not relay.
//   errors      vhost writes the ring's error eventfd when the guest broke the ring (a bad
//               address or descriptor): the device goes to DEVICE_NEEDS_RESET.
//   reset       NET_SET_BACKEND -1 (the kernel stops both rings) and GET_VRING_BASE, so the next
//               activation starts from the rings the driver sets up again.
//   snapshot    pause (VirtioDevice::pause): NET_SET_BACKEND -1 per ring (the kernel's worker
//               stops writing received frames into guest memory and flushes what it took),
//               GET_VRING_BASE (where it stopped), a check that the used index in guest memory
//               is that base (nothing in flight), the transport's queue set to it, and a call
//               the kernel wrote meanwhile turned into the interrupt status; resume:
//               SET_VRING_BASE with that index, the TAP back, a kick per ring. The saved state
//               (virtio/vhost_state.h) is the MAC, the features negotiated with vhost and per ring
//               the base; a restore opens a new /dev/vhost-net and the TAP by name (the config),
//               checks vhost still offers those features and the bases against the restored
//               queues and guest memory, and activates as at DRIVER_OK from those bases.
//
// The queue eventfds are not watched by the event loop (the kernel reads them); a kick that
// reaches the transport's registers instead is written to the queue's eventfd for the kernel.
// Rate limiters cannot apply (frames never pass the VMM): the configuration refuses them. The
// frame counters of NetDevice stay 0; the device counts the interrupts it forwarded.
//
// Threading: everything under the device lock (DeviceBase::mutex()); activation and reset run
// on vCPU threads, the call/error handlers on the event loop.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "virtio/device_base.h"
#include "virtio/net/backend.h"
#include "virtio/net/net_device.h"
#include "virtio/net/vhost_kernel.h"
#include "virtio/vhost_state.h"
#include "vmm/sys/eventfd.h"

namespace embervm::virtio::net {

// The ring features vhost negotiates with the driver (everything else the device offers is the
// device's and the TAP's business).
inline constexpr uint64_t kVhostRingFeatures =
    feature::kVersion1 | net_feature::kMrgRxbuf | feature::kRingEventIdx | feature::kRingIndirectDesc;

struct VhostNetOptions {
    std::string id;                // iface_id, for logs
    std::array<uint8_t, 6> mac{};  // VIRTIO_NET_F_MAC
    std::optional<uint16_t> mtu;   // VIRTIO_NET_F_MTU when set
};

struct VhostNetCounters {
    uint64_t used_interrupts = 0;  // relay eventfd events forwarded as used-buffer interrupts
    uint64_t call_switches = 0;    // SET_VRING_CALL after the activation's (relay <-> irqfd)
    uint32_t irqfd_queues = 0;     // queues whose call eventfd is now an irqfd (not counted above)
    uint64_t ring_errors = 0;      // error eventfd events (the guest broke a ring)
    uint64_t activations = 0;      // times the rings were handed to the kernel
};

class VhostNetDevice : public DeviceBase {
public:
    // `tap` is the backend whose fd the kernel reads and writes (a TAP opened with
    // IFF_VNET_HDR and a 12-byte header); `vhost` an owned vhost-net instance. Throws Error when
    // vhost cannot serve a virtio 1.x device (no VIRTIO_F_VERSION_1).
    VhostNetDevice(std::unique_ptr<NetBackend> tap, std::unique_ptr<VhostKernel> vhost, VhostNetOptions options);
    ~VhostNetDevice() override;

    uint32_t device_type() const override { return device_id::kNet; }
    uint64_t available_features() const override;
    std::vector<uint16_t> queue_max_sizes() const override { return {kNetQueueSize, kNetQueueSize}; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    std::string name() const override { return "virtio-net " + options_.id + " (vhost)"; }
    DeviceProgress progress() const override;
    nlohmann::json metrics_json() const override;
    void log_counters() const override;

    VhostNetCounters counters() const;

private:
    static constexpr uint32_t kNumQueues = 2;

    void on_activate_locked(const Activation& a) override;
    void on_queue_locked(uint16_t queue_index) override;
    void on_reset_locked() override;
    // Snapshots (see the header comment).
    void on_pause_locked() override;
    void on_resume_locked() override;
    void save_state_locked(StateWriter& w) const override;
    void restore_state_locked(StateReader& r) override;
    bool backend_reads_queue_events_locked() const override { return true; }
    std::vector<EventSource> event_sources_locked() override;
    void on_queue_irqfd_locked(uint16_t queue_index) override;
    void on_broken_locked() override;
    // Gives vhost the call eventfd `ring` should have now: the transport's irqfd while offered
    // and the device is not broken, else the relay.
    void update_call_locked(uint32_t ring);
    void start_ring_locked(const Activation& a, uint32_t ring);
    // Detaches the TAP from every ring that has it and reads back where the kernel stopped.
    void stop_rings_locked();

    std::unique_ptr<NetBackend> tap_;
    std::unique_ptr<VhostKernel> vhost_;
    VhostNetOptions options_;
    std::vector<uint8_t> config_;
    uint64_t vhost_features_ = 0;  // what GET_FEATURES offered

    // The rest under mutex().
    std::array<vmm::EventFd, kNumQueues> calls_;
    std::array<vmm::EventFd, kNumQueues> errors_;
    std::array<int, kNumQueues> kicks_{-1, -1};  // the activation's queue eventfds (the transport's)
    std::array<int, kNumQueues> call_now_{-1, -1};  // what vhost has as each ring's call (-1: not set)
    bool attached_ = false;  // the rings were handed to the kernel (maybe partly): stop them on reset
    uint64_t negotiated_ = 0;  // the features vhost got at activation
    // Between on_pause_locked and on_resume_locked: the rings stopped at these bases.
    bool stopped_ = false;
    std::array<uint16_t, kNumQueues> bases_{};
    std::string snapshot_blocker_;  // why this pause cannot be saved ("" if it can)
    // A restored activation's saved rings, checked and used by the next activation.
    std::optional<VhostDeviceState> restored_;
    VhostNetCounters counters_;
};

}  // namespace embervm::virtio::net
