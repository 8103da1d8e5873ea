// virtio-net served by the host kernel's vhost-net: the rings handed over at activation and
// taken back at reset (see vhost_net_device.h).
#include "virtio/net/vhost_net_device.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <exception>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "virtio/saved_state.h"
#include "vmm/sys/error.h"
#include "vmm/sys/log.h"

namespace embervm::virtio::net {

namespace log = embervm::log;

namespace {

// Bytes of the split ring's parts for a queue of `size` entries (2.7): descriptor table,
// driver area (flags, idx, ring, used_event), device area (flags, idx, ring, avail_event).
uint64_t desc_bytes(uint64_t size) { return 16 * size; }
uint64_t avail_bytes(uint64_t size) { return 6 + 2 * size; }
uint64_t used_bytes(uint64_t size) { return 6 + 8 * size; }

uint64_t host_address(const memory::GuestMemory& mem, memory::GuestAddress addr, uint64_t len, const char* what) {
    const auto slice = mem.get_slice(addr, len);
    // Queue::validate checked the rings at DRIVER_OK; a ring across two regions is refused here.
    if (!slice) throw QueueError(fmt::format("{} at {:#x} is not inside one guest memory region", what, addr.value));
    return reinterpret_cast<uint64_t>(slice->data());
}

}  // namespace

VhostNetDevice::VhostNetDevice(std::unique_ptr<NetBackend> tap, std::unique_ptr<VhostKernel> vhost,
                               VhostNetOptions options)
    : tap_(std::move(tap)), vhost_(std::move(vhost)), options_(std::move(options)) {
    config_ = net_config_space(options_.mac, options_.mtu);
    vhost_features_ = vhost_->get_features();
    if ((vhost_features_ & feature::kVersion1) == 0) {
        throw Error(fmt::format("/dev/vhost-net does not offer VIRTIO_F_VERSION_1 (features {:#x})", vhost_features_));
    }
}

VhostNetDevice::~VhostNetDevice() = default;

uint64_t VhostNetDevice::available_features() const {
    uint64_t f = net_feature::kMac | net_feature::kStatus;
    f |= kVhostRingFeatures & vhost_features_ & ~feature::kVersion1;  // the transport adds VERSION_1
    f |= tap_->supported_offload_features();
    if (options_.mtu) f |= net_feature::kMtu;
    return f;
}

void VhostNetDevice::read_config(uint64_t offset, std::span<uint8_t> data) const {
    read_config_space(config_, offset, data);
}

void VhostNetDevice::write_config(uint64_t offset, std::span<const uint8_t> data) {
    log::debug("{}: ignored config write of {} bytes at offset {:#x}", name(), data.size(), offset);
}

void VhostNetDevice::on_activate_locked(const Activation& a) {
    if (a.queues.size() < kNumQueues || !a.queues[0].ready() || !a.queues[1].ready()) {
        throw QueueError("the receive and transmit queues must both be set up");
    }
    if (a.queue_events.size() < kNumQueues || a.queue_events[0] < 0 || a.queue_events[1] < 0) {
        throw Error("vhost-net needs an ioeventfd for each queue");
    }
    const uint64_t negotiated = a.acked_features & kVhostRingFeatures & vhost_features_;
    if (restored_) {
        // A restore: the saved rings must be the transport's queues as restored, before
        // anything is handed to the kernel.
        if (restored_->features != negotiated) {
            throw StateError(fmt::format("{}: saved state field 'vhost features': {:#x} were negotiated, {:#x} would "
                                         "be now",
                                         name(), restored_->features, negotiated));
        }
        for (uint16_t ring = 0; ring < kNumQueues; ring++) {
            check_restored_ring(name(), a.mem, a.queues[ring], ring, restored_->rings[ring]);
        }
        restored_.reset();
    }
    kicks_ = {a.queue_events[0], a.queue_events[1]};
    tap_->set_offloads(a.acked_features);
    vhost_->set_features(negotiated);
    negotiated_ = negotiated;
    std::vector<VhostMemoryRegion> table;
    for (const memory::GuestRegion& r : a.mem.regions()) {
        table.push_back({r.start().value, r.size(), reinterpret_cast<uint64_t>(r.host_base())});
    }
    vhost_->set_mem_table(table);
    attached_ = true;  // from here on a reset (or a failure below) takes the rings back
    for (uint32_t ring = 0; ring < kNumQueues; ring++) {
        calls_[ring].consume();  // stale events of an earlier activation
        errors_[ring].consume();
        start_ring_locked(a, ring);
    }
    for (uint32_t ring = 0; ring < kNumQueues; ring++) {
        vhost_->set_backend(ring, tap_->fd());
    }
    counters_.activations++;
    log::info("{}: activated on {} through /dev/vhost-net (features {:#x}, vhost {:#x})", name(), tap_->name(),
              a.acked_features, a.acked_features & kVhostRingFeatures & vhost_features_);
}

void VhostNetDevice::start_ring_locked(const Activation& a, uint32_t ring) {
    const Queue& q = a.queues[ring];
    vhost_->set_vring_num(ring, q.size());
    vhost_->set_vring_base(ring, q.next_avail());
    VhostVringAddr addr{};
    addr.desc = host_address(a.mem, q.desc_table(), desc_bytes(q.size()), "descriptor table");
    addr.avail = host_address(a.mem, q.avail_ring(), avail_bytes(q.size()), "driver area");
    addr.used = host_address(a.mem, q.used_ring(), used_bytes(q.size()), "device area");
    vhost_->set_vring_addr(ring, addr);
    vhost_->set_vring_kick(ring, kicks_[ring]);
    vhost_->set_vring_call(ring, calls_[ring].fd());
    call_now_[ring] = calls_[ring].fd();
    vhost_->set_vring_err(ring, errors_[ring].fd());
}

void VhostNetDevice::update_call_locked(uint32_t ring) {
    if (!attached_ || call_now_[ring] < 0) return;  // the activation sets it
    const int irqfd = broken() ? -1 : queue_irqfd(static_cast<uint16_t>(ring));
    const int want = irqfd >= 0 ? irqfd : calls_[ring].fd();
    if (want == call_now_[ring]) return;
    try {
        vhost_->set_vring_call(ring, want);
    } catch (const std::exception& e) {
        // vhost keeps the old eventfd: interrupts may go where they should not any more.
        fail_locked(e.what());
        return;
    }
    call_now_[ring] = want;
    counters_.call_switches++;
    log::debug("{}: ring {} interrupts {}", name(), ring, irqfd >= 0 ? "straight to KVM" : "through the VMM");
}

void VhostNetDevice::on_queue_irqfd_locked(uint16_t queue_index) {
    if (queue_index < kNumQueues) update_call_locked(queue_index);
}

void VhostNetDevice::on_broken_locked() {
    for (uint32_t ring = 0; ring < kNumQueues; ring++) update_call_locked(ring);
}

void VhostNetDevice::stop_rings_locked() {
    if (!attached_) return;
    attached_ = false;
    for (uint32_t ring = 0; ring < kNumQueues; ring++) {
        try {
            vhost_->set_backend(ring, -1);
            const uint32_t base = vhost_->get_vring_base(ring);
            log::debug("{}: ring {} stopped at available index {}", name(), ring, base);
        } catch (const std::exception& e) {
            log::error("{}: {}", name(), e.what());
        }
    }
}

void VhostNetDevice::on_reset_locked() {
    // Also after a failed activation: whatever was handed over is taken back.
    stop_rings_locked();
    kicks_ = {-1, -1};
    call_now_ = {-1, -1};
    stopped_ = false;
    snapshot_blocker_.clear();
    restored_.reset();
}

void VhostNetDevice::on_pause_locked() {
    snapshot_blocker_.clear();
    if (!attached_) return;
    // Detach the TAP first from both rings: the kernel's worker flushes what it took (a frame
    // being received is completed into the used ring) and stops.
    for (uint32_t ring = 0; ring < kNumQueues; ring++) vhost_->set_backend(ring, -1);
    attached_ = false;
    stopped_ = true;
    for (uint32_t ring = 0; ring < kNumQueues; ring++) {
        const uint32_t base = vhost_->get_vring_base(ring);
        if (base > 0xffff) throw Error(fmt::format("VHOST_GET_VRING_BASE (ring {}): {} is not a ring index", ring, base));
        bases_[ring] = static_cast<uint16_t>(base);
        Queue& q = queues()[ring];
        // vhost-net completes in order once detached: the used index is the base at once (the
        // short wait covers a used-index write the flush may still be making).
        const std::string in_flight = wait_until_used(mem(), q, bases_[ring], std::chrono::milliseconds(100));
        if (!in_flight.empty() && snapshot_blocker_.empty()) snapshot_blocker_ = fmt::format("queue {}: {}", ring, in_flight);
        q.set_next_avail(bases_[ring]);
        q.set_next_used(used_index(mem(), q));
        log::debug("{}: ring {} paused at available index {}", name(), ring, base);
    }
    // Interrupts the kernel asked for before it stopped: into the interrupt status now, so the
    // snapshot holds them (the relay is not watched while paused).
    for (uint16_t ring = 0; ring < kNumQueues; ring++) {
        if (call_now_[ring] == calls_[ring].fd() && calls_[ring].consume() != 0) {
            counters_.used_interrupts++;
            interrupt().signal_used_queue(ring);
        }
    }
}

void VhostNetDevice::on_resume_locked() {
    if (!stopped_) return;
    stopped_ = false;
    snapshot_blocker_.clear();
    for (uint32_t ring = 0; ring < kNumQueues; ring++) vhost_->set_vring_base(ring, bases_[ring]);
    attached_ = true;
    for (uint32_t ring = 0; ring < kNumQueues; ring++) vhost_->set_backend(ring, tap_->fd());
    // resume() then looks at every queue: a kick for the kernel (on_queue_locked).
}

void VhostNetDevice::on_queue_locked(uint16_t queue_index) {
    // A notification that reached the registers rather than the ioeventfd: pass it on.
    if (queue_index < kNumQueues && kicks_[queue_index] >= 0) {
        const uint64_t one = 1;
        [[maybe_unused]] const ssize_t n = ::write(kicks_[queue_index], &one, sizeof(one));
    }
}

std::vector<DeviceBase::EventSource> VhostNetDevice::event_sources_locked() {
    std::vector<EventSource> sources;
    for (uint16_t ring = 0; ring < kNumQueues; ring++) {
        sources.push_back({calls_[ring].fd(), [this, ring] {
                               if (calls_[ring].consume() != 0) {
                                   counters_.used_interrupts++;
                                   interrupt().signal_used_queue(ring);
                               }
                               return true;
                           }});
        sources.push_back({errors_[ring].fd(), [this, ring] {
                               if (errors_[ring].consume() != 0) {
                                   counters_.ring_errors++;
                                   fail_locked(fmt::format("vhost-net: the guest broke queue {} (a bad address, "
                                                           "descriptor or index)",
                                                           ring));
                               }
                               return true;
                           }});
    }
    return sources;
}

DeviceProgress VhostNetDevice::progress() const {
    std::lock_guard lock(mutex());
    return queues_progress_locked();  // the kernel's buffers in flight are not visible here
}

VhostNetCounters VhostNetDevice::counters() const {
    std::lock_guard lock(mutex());
    VhostNetCounters c = counters_;
    for (uint32_t ring = 0; ring < kNumQueues; ring++) {
        if (call_now_[ring] >= 0 && call_now_[ring] != calls_[ring].fd()) c.irqfd_queues++;
    }
    return c;
}

nlohmann::json VhostNetDevice::metrics_json() const {
    // NetDevice's frame and byte counters would all stay 0: the frames never pass the VMM.
    const VhostNetCounters c = counters();
    return {{"vhost", 1},
            {"vhost_used_interrupts", c.used_interrupts},
            {"vhost_call_switches", c.call_switches},
            {"vhost_irqfd_queues", c.irqfd_queues},
            {"vhost_ring_errors", c.ring_errors},
            {"vhost_activations", c.activations}};
}

void VhostNetDevice::log_counters() const {
    const VhostNetCounters c = counters();
    log::info("{}: {} activations, {} used-buffer interrupts forwarded, {} ring errors, {} device errors, {} call "
              "switches, {} queues interrupting straight through KVM",
              name(), c.activations, c.used_interrupts, c.ring_errors, device_errors(), c.call_switches,
              c.irqfd_queues);
}

void VhostNetDevice::save_state_locked(StateWriter& w) const {
    if (!snapshot_blocker_.empty()) throw Error(fmt::format("snapshot: {}: {}", name(), snapshot_blocker_));
    const bool running = active() && !broken();
    if (running && !stopped_) throw Error(fmt::format("snapshot: {}: its rings were not stopped (not paused)", name()));
    w.put<uint32_t>(state_version::kVhostNet);
    w.put_bytes(options_.mac);
    VhostDeviceState s;
    s.features = running ? negotiated_ : 0;
    for (uint32_t ring = 0; ring < kNumQueues; ring++) s.rings.push_back({running, running ? bases_[ring] : uint16_t{0}});
    encode_vhost_state(w, s);
}

void VhostNetDevice::restore_state_locked(StateReader& r) {
    r.get_version(state_version::kVhostNet);
    const auto mac = r.get_bytes(options_.mac.size(), "mac");
    if (!std::equal(mac.begin(), mac.end(), options_.mac.begin())) {
        r.fail("mac", fmt::format("{:02x} where the interface's guest_mac is {:02x}", fmt::join(mac, ":"),
                                  fmt::join(options_.mac, ":")));
    }
    restored_ = decode_vhost_state(r, kNumQueues, vhost_features_, "/dev/vhost-net");
    // Saved while not running (never activated, or broken): the next activation is the driver's
    // own, from scratch.
    if (!any_started(*restored_)) restored_.reset();
}

}  // namespace embervm::virtio::net
