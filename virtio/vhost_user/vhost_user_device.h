// A virtio device whose queues a vhost-user backend process serves (vhost-user-blk, virtio-fs). The VMM keeps the transport, feature negotiation and the configuration space; at the
// guest's DRIVER_OK it hands the backend the memory table (the memfds of guest RAM), the ring
// addresses and per queue two eventfds:
//   kick: the queue's ioeventfd itself, so a guest kick goes from KVM to the backend without
//         the VMM (a kick that reaches the transport's registers instead is forwarded);
//   call: at the start an eventfd of the device that the VMM's event loop watches (the relay);
//         a write sets the used-buffer bit of the interrupt status and raises the transport's
//         interrupt. With virtio-mmio this relay is required: Linux's virtio_mmio handler
//         ignores an interrupt whose InterruptStatus has no used-buffer bit, and only the VMM
//         sets that bit; so it is for a masked MSI-X vector (only the VMM sets the pending bit).
//         While the transport offers the queue its MSI-X vector's irqfd (virtio-pci, the vector
//         deliverable: VirtioDevice::set_queue_irqfd, "Direct interrupts" in
//         virtio/pci_transport.h) the device hands the backend that irqfd instead
//         (SET_VRING_CALL, acknowledged with REPLY_ACK before the vCPU returns to the guest),
//         so an interrupt goes backend -> KVM -> guest; a withdrawal hands it the relay again.
//         The relay stays watched while the device is activated: a call the backend wrote to
//         it before a switch is still relayed. Without REPLY_ACK the backend may use the old
//         eventfd a little longer (an interrupt delivered late or while masked, never lost).
//         When the device goes to DEVICE_NEEDS_RESET the calls stay where they are: it got
//         there through the backend (hung up, reported the ring broken, or broke the
//         protocol), which is not asked for anything more.
//   err:  an eventfd the loop watches; a write means the backend found the ring broken, which
//         puts the device in DEVICE_NEEDS_RESET.
// On reset the device asks GET_VRING_BASE for each started queue (the backend stops them), so
// the next activation starts clean.
//
// The backend is untrusted: a reply that breaks the protocol, a refused request, a backend
// that hangs up (seen on the event loop as EOF on the socket) or does not answer within the
// reply timeout puts this device (only) in DEVICE_NEEDS_RESET, with one log line. With
// VhostUserDeviceOptions::reconnect the next reset by the driver connects again (the backend may
// have been restarted) and the device works again if the new backend offers the same features
// and configuration; without it the device stays failed until the VM is restarted.
//
// Requests are synchronous with a deadline (Channel): they run on the vCPU thread that wrote the
// status register, which waits for the backend's answers (a few round trips on a local socket).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "virtio/device_base.h"
#include "virtio/vhost_state.h"
#include "virtio/vhost_user/frontend.h"
#include "vmm/sys/eventfd.h"

namespace embervm::virtio {
namespace device_id {
inline constexpr uint32_t kFs = 26;  // virtio-fs (spec 5.11)
}  // namespace device_id
}  // namespace embervm::virtio

namespace embervm::virtio::vhost_user {

struct VhostUserDeviceOptions {
    std::string id;           // the drive id or fs tag, for names and metrics
    std::string socket_path;  // where the backend listens
    std::chrono::milliseconds reply_timeout = std::chrono::seconds(5);
    // Connect again at the driver's reset after the backend failed. Off in the VMM for now: the
    // reset runs on a vCPU thread, whose seccomp filter (like every thread's) allows neither
    // socket() nor connect(). The unit tests, which run without filters, turn it on.
    bool reconnect = false;
    // virtio-blk: offer the backend's VIRTIO_BLK_F_FLUSH (the drive's cache_type Writeback);
    // without it the guest sends no flushes (Unsafe, as for an image-file drive).
    bool flush = true;
    // The size of every queue offered to the driver (a power of two, at most 32768).
    uint16_t queue_size = 256;
};

// virtio-fs: what the VMM (not the backend, which has no config space for fs) puts in the
// device's configuration space.
struct FsOptions {
    std::string tag;                  // 1 to kFsTagSize bytes, the name the guest mounts
    uint32_t num_request_queues = 1;  // request queues besides the high-priority queue
};

// virtio_fs_config.tag: the tag's bytes, NUL-padded (no NUL needed when it fills the field).
inline constexpr size_t kFsTagSize = 36;
// The most request queues a virtio-fs device takes (each one is a queue and an MSI-X vector).
inline constexpr uint32_t kMaxFsRequestQueues = 16;

class VhostUserDevice : public DeviceBase {
public:
    // A vhost-user-blk device: connects, negotiates, reads the backend's virtio_blk_config.
    // Throws Error (naming the socket) when the backend cannot be reached, lacks VERSION_1 or
    // the CONFIG protocol feature, or answers badly.
    static std::shared_ptr<VhostUserDevice> connect_block(const VhostUserDeviceOptions& opts);
    // A virtio-fs device (queue 0 high priority, then the request queues): connects and
    // negotiates; the configuration space is the tag and the request queue count. No DAX
    // window (no shared-memory region), no notification queue. Throws Error (naming the socket)
    // when the backend cannot be reached, lacks VERSION_1 or has fewer queues than asked for.
    static std::shared_ptr<VhostUserDevice> connect_fs(const VhostUserDeviceOptions& opts, const FsOptions& fs);

    ~VhostUserDevice() override;

    uint32_t device_type() const override { return type_; }
    uint64_t available_features() const override { return features_; }
    std::vector<uint16_t> queue_max_sizes() const override;
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    std::string name() const override { return name_; }
    DeviceProgress progress() const override;
    nlohmann::json metrics_json() const override;
    void log_counters() const override;

    // The backend offers VIRTIO_BLK_F_RO (blk only).
    bool read_only() const;
    // The backend's virtio-blk capacity in 512-byte sectors (blk only).
    uint64_t capacity_sectors() const;
    // Whether the connection to the backend works (false after it failed, until a reset
    // reconnects).
    bool connected() const;

protected:
    void on_activate_locked(const Activation& a) override;
    void on_queue_locked(uint16_t queue_index) override;
    void on_reset_locked() override;
    // Snapshots: pause stops every started ring (SET_VRING_ENABLE 0 where negotiated, then
    // GET_VRING_BASE), waits until the used ring caught up with the returned base (requests the
    // backend took are completed, at most the reply timeout) and sets the transport's queue to
    // it; resume starts the rings again from there (start_vring with that base) and kicks them.
    // The saved state (virtio/vhost_state.h) is the configuration space, the negotiated
    // features and the bases; a restore connects to the backend at the config's socket (a new
    // backend process, on the same image or directory), checks it offers the same configuration
    // and at least those features, and the activation starts the rings from the bases, then
    // kicks each once. virtio-fs is refused by name: its FUSE session lives in the virtiofsd
    // process (a new one knows none of the guest's inodes or open files).
    void on_pause_locked() override;
    void on_resume_locked() override;
    void save_state_locked(StateWriter& w) const override;
    void restore_state_locked(StateReader& r) override;
    std::vector<EventSource> event_sources_locked() override;
    bool backend_reads_queue_events_locked() const override { return true; }
    void on_queue_irqfd_locked(uint16_t queue_index) override;

private:
    // A queue's eventfds, made once with the device (no eventfd2 or close on the vCPU threads
    // that activate and reset it) and handed to the backend at each activation.
    struct QueueFds {
        vmm::EventFd own_kick;  // the kick when the queue has no ioeventfd
        vmm::EventFd call;
        vmm::EventFd err;
    };

    VhostUserDevice(uint32_t type, std::string name, VhostUserDeviceOptions opts, FsOptions fs = {});
    static std::shared_ptr<VhostUserDevice> connect_new(std::shared_ptr<VhostUserDevice> d);
    // Connects and negotiates; fills features_ and config_. Throws.
    void connect_locked();
    // The offered features and the configuration space, per device type.
    std::pair<uint64_t, std::vector<uint8_t>> negotiate_block_locked(Frontend& frontend) const;
    std::pair<uint64_t, std::vector<uint8_t>> negotiate_fs_locked(const Frontend& frontend) const;
    void fail_backend_locked(const std::string& what);
    // Started queues whose backend has an irqfd as call eventfd now.
    uint32_t irqfd_queues_locked() const;

    uint32_t type_;
    std::string name_;
    VhostUserDeviceOptions opts_;
    FsOptions fs_;
    // The connection; kept after a failure (closing it on a vCPU thread is not allowed) with
    // backend_ok_ false, replaced by a reconnect.
    std::unique_ptr<Frontend> frontend_;
    bool backend_ok_ = false;
    uint64_t backend_features_ = 0;
    uint64_t features_ = 0;  // offered to the driver
    uint16_t num_queues_ = 1;
    std::vector<uint8_t> config_;
    std::vector<std::unique_ptr<QueueFds>> queue_fds_;  // one per queue
    std::vector<uint16_t> started_;  // queues handed to the backend in this activation
    std::vector<bool> own_kick_;     // per queue: kicks come through queue_notify
    std::vector<int> call_now_;      // per queue: the call eventfd the backend has (-1: not started)
    std::vector<VringSetup> vrings_;  // per queue: how it was started (for a resume)
    uint64_t negotiated_ = 0;         // the driver's features the backend got
    // Between on_pause_locked and on_resume_locked: the started rings stopped at these bases.
    bool stopped_ = false;
    std::vector<uint16_t> bases_;
    std::string snapshot_blocker_;  // why this pause cannot be saved ("" if it can)
    // A restored activation's saved rings, checked and used by the next activation.
    std::optional<VhostDeviceState> restored_;
    // Counters (under the device lock).
    uint64_t activations_ = 0;
    uint64_t call_relays_ = 0;
    uint64_t call_switches_ = 0;  // SET_VRING_CALL after a queue's start (relay <-> irqfd)
    uint64_t backend_failures_ = 0;
    uint64_t reconnects_ = 0;
};

}  // namespace embervm::virtio::vhost_user
