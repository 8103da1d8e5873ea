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
//               applies EVENT_IDX / NO_INTERRUPT itself). The device watches those eventfds on
//               the event loop and raises the used-buffer interrupt through the transport, which
//               works for both transports: virtio-mmio's driver reads InterruptStatus and
//               ignores an interrupt without the used-buffer bit, so the VMM must set it. The
//               VMM is in the interrupt path, not in the data path.
//   errors      vhost writes the ring's error eventfd when the guest broke the ring (a bad
//               address or descriptor): the device goes to DEVICE_NEEDS_RESET.
//   reset       NET_SET_BACKEND -1 (the kernel stops both rings) and GET_VRING_BASE, so the next
//               activation starts from the rings the driver sets up again.
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
    uint64_t used_interrupts = 0;  // call eventfd events forwarded as used-buffer interrupts
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
    // Snapshots are refused by name: the rings' positions are not the VMM's (reading them back
    // would need GET_VRING_BASE).
    void save_state_locked(StateWriter& w) const override;
    bool backend_reads_queue_events_locked() const override { return true; }
    std::vector<EventSource> event_sources_locked() override;
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
    bool attached_ = false;  // the rings were handed to the kernel (maybe partly): stop them on reset
    VhostNetCounters counters_;
};

}  // namespace embervm::virtio::net
