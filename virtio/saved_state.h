// Snapshots of the virtio devices: what each layer saves, how a device is paused for it and how
// a restored device comes back to life without the guest doing anything.
//
// Layers, each with a version number of its own first (vmm/sys/state_stream.h):
//   - the transport core (TransportCore::save_state): the device type, the offered features
//     and the queue count (all three must match the device the restore targets), status,
//     driver features, whether the device was activated, interrupt status, config generation,
//     DEVICE_NEEDS_RESET, and per queue its saved state (below); then a blob of the transport's
//     own registers and a blob of the device's state.
//   - virtio-mmio (MmioTransport): the three selectors (device features, driver features, queue).
//   - virtio-pci (PciTransport): the common-config selectors (device features, driver features,
//     queue), the configuration-change and per-queue MSI-X vectors, the function's 256-byte
//     configuration space as the driver programmed it (command register, BAR 0's address, the
//     MSI-X message control: every bit the driver cannot write must equal this build's, which
//     also catches a changed layout), and the MSI-X table (address, data and vector control of
//     every entry) with its PBA. The PCI root's own state (the 0xCF8 address latch, the host
//     bridge's configuration space) is a snapshot section of its own (PciRoot::save_state).
//     On restore the MSI-X routes are set before the device is activated again (so its direct
//     interrupts are re-evaluated with them), the BAR is decoded at its saved address by the
//     root (which moves the notify ioeventfds there) and every queue's vector is signalled
//     once, as deliver() sets no ISR bit to remember a used-buffer interrupt by.
//   - a queue (Queue::save_state): size, ready, the descriptor/available/used addresses,
//     next_avail, next_used, the event-idx and indirect flags and the last used index an
//     interrupt was decided for (event-idx suppression).
//   - the device (VirtioDevice::save_state): its configuration space as far as it changes and
//     what it keeps beyond it: virtio-blk nothing beyond the capacity (checked against the
//     drive re-opened from the config: a changed size is an error naming the drive); virtio-net
//     the MAC and link status; the balloon its target and the driver's `actual`; the console
//     nothing (output goes straight to the sink, input waits in the host's fd); vsock the guest
//     CID (checked) and nothing of its connections: as Firecracker does, every connection is
//     dropped and the restored device sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on its event queue
//     at activation, so the guest drops its side too and reconnects.
//   - vhost-net and vhost-user devices (virtio/vhost_state.h): their rings' positions live in the
//     kernel or another process, so pause stops the rings (vhost-net: NET_SET_BACKEND -1;
//     vhost-user: SET_VRING_ENABLE 0 and GET_VRING_BASE), waits until the used index reaches
//     the index the backend returned (nothing in flight) and writes it into the transport's
//     queue; the device saves the features negotiated with the backend and per queue that
//     index (vhost-net also the MAC, vhost-user the configuration space it got from the
//     backend). A restore reaches a new backend from the config (a new /dev/vhost-net and the
//     TAP by name; the vhost-user socket, where the orchestrator started a new backend), checks
//     it offers those features (and, for vhost-user, the same configuration) and that the
//     indexes match the restored queues and guest memory, then activates from those indexes.
//     Their writes to guest memory are not in KVM's dirty log: track_dirty_pages (so Diff) is
//     refused next to them (vmm/config/validate.cpp). virtio-fs is refused by name: its FUSE
//     session lives in the virtiofsd process and cannot be carried to a new one.
//
// Pause (VirtioDevice::pause, with every vCPU stopped): every request handed to a backend
// completes and is put on the used ring first (virtio-blk waits for its backend; the balloon
// hands back the statistics buffer it holds, which the driver refills later); then the device's
// subscriptions are dropped and every handler (queue eventfd, TAP, socket, timer, rate-limiter
// timer) returns without doing anything until resume(). The device lock makes that exact: a
// handler that already runs finishes before pause() returns. A kick consumed while paused is
// not lost: resume() (and a restore) look at every ready queue once, as a kick would. A device
// whose backend serves the rings itself stops them in on_pause_locked and starts them again in
// on_resume_locked (DeviceBase), before that look (which kicks the backend).
//
// Restore (TransportCore::restore_state), into a transport and device just created from the
// snapshot's config and never used: everything is read and checked first (a wrong device type,
// feature set or queue count, a status with bits a driver cannot have set, a queue size that
// is not a power of two within the maximum, driver features beyond the offered ones, a ready
// queue that does not fit in guest memory), then the device's own state, and then, if the
// device was activated, it is activated as at DRIVER_OK: the queues are validated against the
// restored guest memory, the device gets its queue eventfds and the event loop again and
// subscribes its queues, backends (already re-opened from the config) and timers. Pending
// interrupt status bits are delivered again (the guest may have missed the edge). Any error
// resets the transport (as a driver's status 0 would) and throws StateError naming the device
// and the field: the device is then unusable until the driver resets it, never unsafe.
#pragma once

#include <cstdint>

namespace embervm::virtio::state_version {
inline constexpr uint32_t kTransport = 1;
inline constexpr uint32_t kMmio = 1;
inline constexpr uint32_t kPci = 1;
inline constexpr uint32_t kQueue = 1;
inline constexpr uint32_t kBlock = 1;
inline constexpr uint32_t kNet = 1;
inline constexpr uint32_t kBalloon = 1;
inline constexpr uint32_t kConsole = 1;
inline constexpr uint32_t kVsock = 1;
inline constexpr uint32_t kVhostNet = 1;
inline constexpr uint32_t kVhostUser = 1;
}  // namespace embervm::virtio::state_version
