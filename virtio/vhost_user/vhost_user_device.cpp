// A virtio device whose queues a vhost-user backend serves.
#include "virtio/vhost_user/vhost_user_device.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "virtio/saved_state.h"
#include "virtio/virtio_defs.h"
#include "vmm/sys/log.h"

namespace embervm::virtio::vhost_user {

namespace {

// virtio-blk: the config space size embervm reads (through write_zeroes_may_unmap) and the
// feature bits it passes on.
constexpr uint32_t kBlockConfigSize = 60;
constexpr uint64_t kBlockFeatureRo = uint64_t{1} << 5;
constexpr uint64_t kBlockFeatureFlush = uint64_t{1} << 9;
constexpr uint64_t kBlockFeatureMq = uint64_t{1} << 12;
// Device-specific bits (0-23) but MQ (one queue for now), and the ring features the backend
// implements; VERSION_1 the transport adds. Transport bits embervm's transports lack (packed
// rings, ACCESS_PLATFORM, NOTIFICATION_DATA, ...) are never offered.
constexpr uint64_t kBlockPassedFeatures =
    (uint64_t{0xffffff} & ~kBlockFeatureMq) | feature::kRingIndirectDesc | feature::kRingEventIdx;

// virtio-fs: VIRTIO_FS_F_NOTIFICATION (bit 0) would need a notification queue embervm does not
// make; only the ring features pass.
constexpr uint64_t kFsPassedFeatures = feature::kRingIndirectDesc | feature::kRingEventIdx;

constexpr uint64_t kWantedProtocol =
    (uint64_t{1} << kProtocolConfig) | (uint64_t{1} << kProtocolReplyAck) | (uint64_t{1} << kProtocolMq);

// The user address of [addr, addr + len) of guest memory, which must lie in one region.
uint64_t user_address(const memory::GuestMemory& mem, memory::GuestAddress addr, uint64_t len, const char* what) {
    const auto slice = mem.get_slice(addr, len);
    if (!slice) {
        throw QueueError(fmt::format("{} at {:#x} (+{:#x}) is not inside one guest memory region", what, addr.value,
                                     len));
    }
    return reinterpret_cast<uint64_t>(slice->data());
}

}  // namespace

VhostUserDevice::VhostUserDevice(uint32_t type, std::string name, VhostUserDeviceOptions opts, FsOptions fs)
    : type_(type), name_(std::move(name)), opts_(std::move(opts)), fs_(std::move(fs)) {}

VhostUserDevice::~VhostUserDevice() = default;

std::shared_ptr<VhostUserDevice> VhostUserDevice::connect_new(std::shared_ptr<VhostUserDevice> d) {
    std::lock_guard lock(d->mutex());
    try {
        d->connect_locked();
    } catch (const std::exception& e) {
        const char* kind = d->type_ == device_id::kFs ? "vhost-user-fs" : "vhost-user-blk";
        throw Error(fmt::format("{} socket {}: {}", kind, d->opts_.socket_path, e.what()));
    }
    return d;
}

std::shared_ptr<VhostUserDevice> VhostUserDevice::connect_block(const VhostUserDeviceOptions& opts) {
    return connect_new(std::shared_ptr<VhostUserDevice>(
        new VhostUserDevice(device_id::kBlock, fmt::format("vhost-user-blk {}", opts.id), opts)));
}

std::shared_ptr<VhostUserDevice> VhostUserDevice::connect_fs(const VhostUserDeviceOptions& opts, const FsOptions& fs) {
    if (fs.tag.empty() || fs.tag.size() > kFsTagSize) {
        throw Error(fmt::format("virtio-fs tag '{}': 1 to {} bytes", fs.tag, kFsTagSize));
    }
    if (fs.num_request_queues == 0 || fs.num_request_queues > kMaxFsRequestQueues) {
        throw Error(fmt::format("virtio-fs {}: num_request_queues {} (1 to {})", fs.tag, fs.num_request_queues,
                                kMaxFsRequestQueues));
    }
    return connect_new(std::shared_ptr<VhostUserDevice>(
        new VhostUserDevice(device_id::kFs, fmt::format("virtio-fs {}", opts.id), opts, fs)));
}

std::pair<uint64_t, std::vector<uint8_t>> VhostUserDevice::negotiate_block_locked(Frontend& frontend) const {
    if (!frontend.has_protocol_feature(kProtocolConfig)) {
        throw ProtocolError("the backend does not offer its configuration space (protocol feature CONFIG)");
    }
    auto config = frontend.get_config(0, kBlockConfigSize);
    uint64_t offered = frontend.backend_features() & kBlockPassedFeatures;
    if (!opts_.flush) offered &= ~kBlockFeatureFlush;
    return {offered, std::move(config)};
}

std::pair<uint64_t, std::vector<uint8_t>> VhostUserDevice::negotiate_fs_locked(const Frontend& frontend) const {
    // struct virtio_fs_config: u8 tag[36]; le32 num_request_queues. (No notify_buf_size: no
    // VIRTIO_FS_F_NOTIFICATION.)
    const uint32_t queues = 1 + fs_.num_request_queues;
    if (frontend.has_protocol_feature(kProtocolMq) && frontend.queue_num() < queues) {
        throw ProtocolError(fmt::format("the backend serves {} queues, {} wanted (the high-priority queue and {} "
                                        "request queues)",
                                        frontend.queue_num(), queues, fs_.num_request_queues));
    }
    std::vector<uint8_t> config(kFsTagSize + 4, 0);
    std::memcpy(config.data(), fs_.tag.data(), fs_.tag.size());
    const uint32_t n = fs_.num_request_queues;  // little-endian host
    std::memcpy(config.data() + kFsTagSize, &n, sizeof(n));
    return {frontend.backend_features() & kFsPassedFeatures, std::move(config)};
}

void VhostUserDevice::connect_locked() {
    auto frontend = std::make_unique<Frontend>(Channel::connect(opts_.socket_path, opts_.reply_timeout));
    frontend->connect(kWantedProtocol);
    const uint64_t features = frontend->backend_features();
    if ((features & feature::kVersion1) == 0) {
        throw ProtocolError("the backend does not offer VIRTIO_F_VERSION_1 (legacy backends are not supported)");
    }
    auto [offered, config] = type_ == device_id::kFs ? negotiate_fs_locked(*frontend) : negotiate_block_locked(*frontend);
    if (!config_.empty() && (offered != features_ || config != config_)) {
        // A reconnect to a backend that changed under the driver: the driver negotiated with
        // the old one. (Capacity changes would need a config-change interrupt; refuse instead.)
        throw ProtocolError("the backend came back with other features or another configuration");
    }
    backend_features_ = features;
    features_ = offered;
    config_ = std::move(config);
    num_queues_ = type_ == device_id::kFs ? static_cast<uint16_t>(1 + fs_.num_request_queues) : 1;
    while (queue_fds_.size() < num_queues_) queue_fds_.push_back(std::make_unique<QueueFds>());
    own_kick_.assign(num_queues_, false);
    call_now_.assign(num_queues_, -1);
    vrings_.assign(num_queues_, VringSetup{0, 0, 0, 0, 0, 0, -1, -1, -1});
    bases_.assign(num_queues_, 0);
    frontend_ = std::move(frontend);
    backend_ok_ = true;
}

std::vector<uint16_t> VhostUserDevice::queue_max_sizes() const {
    return std::vector<uint16_t>(num_queues_, opts_.queue_size);
}

void VhostUserDevice::read_config(uint64_t offset, std::span<uint8_t> data) const {
    std::lock_guard lock(mutex());
    read_config_space(config_, offset, data);
}

void VhostUserDevice::write_config(uint64_t offset, std::span<const uint8_t> data) {
    // virtio-blk's only writable field is `wce` (CONFIG_WCE), which embervm does not offer;
    // virtio-fs has none.
    log::debug("{}: config write of {} bytes at {} ignored", name_, data.size(), offset);
}

bool VhostUserDevice::read_only() const {
    std::lock_guard lock(mutex());
    if (type_ != device_id::kBlock) return false;
    return (backend_features_ & kBlockFeatureRo) != 0;
}

uint64_t VhostUserDevice::capacity_sectors() const {
    std::lock_guard lock(mutex());
    if (type_ != device_id::kBlock) return 0;
    uint64_t c = 0;
    std::memcpy(&c, config_.data(), sizeof(c));
    return c;
}

bool VhostUserDevice::connected() const {
    std::lock_guard lock(mutex());
    return backend_ok_;
}

void VhostUserDevice::fail_backend_locked(const std::string& what) {
    backend_failures_++;
    backend_ok_ = false;
    fail_locked(fmt::format("vhost-user backend {}: {}", opts_.socket_path, what));
}

void VhostUserDevice::on_activate_locked(const Activation& a) {
    if (!backend_ok_) {
        throw ProtocolError(fmt::format("no connection to the vhost-user backend {}", opts_.socket_path));
    }
    const auto regions = a.mem.shared_regions();
    if (regions.empty()) {
        // The VMM turns on memfd-backed memory when it configures a vhost-user device.
        throw Error("guest memory is not shared (memfd) and cannot be handed to the backend");
    }
    if (restored_) {
        // A restore: the saved rings must be the transport's queues as restored, before the
        // backend is told anything.
        if (restored_->features != a.acked_features) {
            throw StateError(fmt::format("{}: saved state field 'vhost features': {:#x} were negotiated, the driver's "
                                         "are {:#x}",
                                         name_, restored_->features, a.acked_features));
        }
        for (uint16_t q = 0; q < restored_->rings.size(); q++) {
            const Queue idle(1);
            check_restored_ring(name_, a.mem, q < a.queues.size() && q < num_queues_ ? a.queues[q] : idle, q,
                                restored_->rings[q]);
        }
        restored_.reset();
    }
    activations_++;
    negotiated_ = a.acked_features;
    try {
        frontend_->set_features(a.acked_features);
        frontend_->set_mem_table(regions);
        for (uint16_t q = 0; q < a.queues.size() && q < num_queues_; q++) {
            const Queue& queue = a.queues[q];
            if (!queue.ready()) continue;
            const uint64_t n = queue.size();
            QueueFds& fds = *queue_fds_[q];
            own_kick_[q] = q >= a.queue_events.size() || a.queue_events[q] < 0;
            const VringSetup v{q,
                               queue.size(),
                               queue.next_avail(),
                               user_address(a.mem, queue.desc_table(), 16 * n, "the descriptor table"),
                               user_address(a.mem, queue.avail_ring(), 6 + 2 * n, "the available ring"),
                               user_address(a.mem, queue.used_ring(), 6 + 8 * n, "the used ring"),
                               own_kick_[q] ? fds.own_kick.fd() : a.queue_events[q],
                               fds.call.fd(),
                               fds.err.fd()};
            started_.push_back(q);
            vrings_[q] = v;
            frontend_->start_vring(v);
            call_now_[q] = fds.call.fd();
        }
    } catch (const ProtocolError& e) {
        // The backend, not the driver, failed: the connection is of no use any more.
        backend_failures_++;
        backend_ok_ = false;
        started_.clear();
        throw;
    }
}

void VhostUserDevice::on_queue_locked(uint16_t queue_index) {
    // A kick through the transport's registers (no ioeventfd), or the look at every queue after
    // a resume or restore: pass it on to the kick eventfd the backend has.
    if (queue_index >= vrings_.size() || vrings_[queue_index].kick_fd < 0) return;
    if (std::find(started_.begin(), started_.end(), queue_index) == started_.end()) return;
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(vrings_[queue_index].kick_fd, &one, sizeof(one));
}

void VhostUserDevice::on_pause_locked() {
    snapshot_blocker_.clear();
    if (!backend_ok_ || started_.empty()) return;
    std::vector<uint16_t> used_before;
    for (const uint16_t q : started_) used_before.push_back(used_index(mem(), queues()[q]));
    try {
        for (const uint16_t q : started_) {
            frontend_->disable_vring(q);
            const uint32_t base = frontend_->stop_vring(q);
            if (base > 0xffff) throw ProtocolError(fmt::format("GET_VRING_BASE of queue {}: {} is not a ring index", q, base));
            bases_[q] = static_cast<uint16_t>(base);
        }
    } catch (const ProtocolError& e) {
        // The rings that did stop are restarted by nobody: the device fails, as on any backend
        // failure, and is saved as DEVICE_NEEDS_RESET.
        fail_backend_locked(e.what());
        return;
    }
    stopped_ = true;
    for (size_t i = 0; i < started_.size(); i++) {
        const uint16_t q = started_[i];
        Queue& queue = queues()[q];
        // A backend may complete requests it took after GET_VRING_BASE answered (the spec lets
        // it; qemu-storage-daemon does): the used ring catches up, without a call.
        const std::string in_flight = wait_until_used(mem(), queue, bases_[q], opts_.reply_timeout);
        if (!in_flight.empty() && snapshot_blocker_.empty()) snapshot_blocker_ = fmt::format("queue {}: {}", q, in_flight);
        const uint16_t used = used_index(mem(), queue);
        queue.set_next_avail(bases_[q]);
        queue.set_next_used(used);
        const bool called = call_now_[q] == queue_fds_[q]->call.fd() && queue_fds_[q]->call.consume() != 0;
        if (called || used != used_before[i]) {
            // Into the interrupt status now (the relay is not watched while paused), so the
            // snapshot holds it.
            call_relays_++;
            interrupt().signal_used_queue(q);
        }
        log::debug("{}: queue {} paused at available index {}", name_, q, bases_[q]);
    }
}

void VhostUserDevice::on_resume_locked() {
    if (!stopped_) return;
    stopped_ = false;
    snapshot_blocker_.clear();
    if (!backend_ok_) return;
    try {
        for (const uint16_t q : started_) {
            VringSetup v = vrings_[q];
            v.base = bases_[q];
            v.call_fd = call_now_[q];
            frontend_->start_vring(v);
        }
    } catch (const ProtocolError& e) {
        fail_backend_locked(e.what());
    }
    // resume() then looks at every queue: a kick for the backend (on_queue_locked).
}

void VhostUserDevice::on_reset_locked() {
    restored_.reset();
    snapshot_blocker_.clear();
    // Rings stopped by a pause are stopped already.
    const bool stopped = std::exchange(stopped_, false);
    if (backend_ok_ && !stopped) {
        try {
            for (const uint16_t q : started_) frontend_->stop_vring(q);
        } catch (const ProtocolError& e) {
            log::warn("{}: stopping the backend's queues: {}", name_, e.what());
            backend_failures_++;
            backend_ok_ = false;
        }
    }
    started_.clear();
    std::fill(call_now_.begin(), call_now_.end(), -1);
    if (!backend_ok_ && opts_.reconnect) {
        try {
            connect_locked();
            reconnects_++;
            log::info("{}: connected to the vhost-user backend {} again", name_, opts_.socket_path);
        } catch (const std::exception& e) {
            log::warn("{}: reconnecting to the vhost-user backend {}: {}", name_, opts_.socket_path, e.what());
        }
    }
}

void VhostUserDevice::on_queue_irqfd_locked(uint16_t q) {
    // A broken device leaves the backend alone (see the header); the driver's reset restarts.
    if (!backend_ok_ || broken() || q >= call_now_.size() || call_now_[q] < 0) return;
    const int irqfd = queue_irqfd(q);
    const int want = irqfd >= 0 ? irqfd : queue_fds_[q]->call.fd();
    if (want == call_now_[q]) return;
    try {
        frontend_->set_vring_call(q, want);
    } catch (const ProtocolError& e) {
        fail_backend_locked(e.what());
        return;
    }
    call_now_[q] = want;
    call_switches_++;
    log::debug("{}: queue {} interrupts {}", name_, q, irqfd >= 0 ? "straight to KVM" : "through the VMM");
}

uint32_t VhostUserDevice::irqfd_queues_locked() const {
    uint32_t n = 0;
    for (size_t q = 0; q < call_now_.size(); q++) {
        if (call_now_[q] >= 0 && call_now_[q] != queue_fds_[q]->call.fd()) n++;
    }
    return n;
}

std::vector<DeviceBase::EventSource> VhostUserDevice::event_sources_locked() {
    std::vector<EventSource> sources;
    for (const uint16_t q : started_) {
        vmm::EventFd* call = &queue_fds_[q]->call;
        sources.push_back({call->fd(), [this, call, q] {
                               if (call->consume() != 0) {
                                   call_relays_++;
                                   interrupt().signal_used_queue(q);
                               }
                               return true;
                           }});
        vmm::EventFd* err = &queue_fds_[q]->err;
        sources.push_back({err->fd(), [this, err, q] {
                               if (err->consume() != 0) {
                                   fail_locked(fmt::format("the vhost-user backend reports queue {} broken", q));
                               }
                               return true;
                           }});
    }
    if (backend_ok_) {
        // Nothing arrives on the socket unasked; readable means the backend hung up (EOF) or
        // broke the protocol.
        const int sock = frontend_->socket_fd();
        sources.push_back({sock, [this, sock] {
                               uint8_t byte;
                               const ssize_t n = ::recv(sock, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
                               if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
                               fail_backend_locked(n == 0 ? "closed the connection"
                                                          : "sent a message nobody asked for");
                               return false;
                           }});
    }
    return sources;
}

DeviceProgress VhostUserDevice::progress() const {
    // The backend's requests in flight are invisible to the VMM: nothing for the watchdog.
    return {};
}

nlohmann::json VhostUserDevice::metrics_json() const {
    std::lock_guard lock(mutex());
    return {{"activations", activations_},
            {"call_relays", call_relays_},
            {"call_switches", call_switches_},
            {"irqfd_queues", irqfd_queues_locked()},
            {"backend_failures", backend_failures_},
            {"reconnects", reconnects_},
            {"connected", backend_ok_},
            {"device_errors", device_errors()}};
}

void VhostUserDevice::log_counters() const {
    std::lock_guard lock(mutex());
    log::info("{}: {} activations, {} interrupts relayed, {} backend failures, {} reconnects, {} call switches, {} "
              "queues interrupting straight through KVM",
              name_, activations_, call_relays_, backend_failures_, reconnects_, call_switches_,
              irqfd_queues_locked());
}

void VhostUserDevice::save_state_locked(StateWriter& w) const {
    if (type_ == device_id::kFs) {
        // The rings could be carried over, the FUSE session could not: the inodes, file handles
        // and the FUSE_INIT the guest's driver holds live in that virtiofsd only, and a new one
        // would answer the restored guest's requests with errors.
        throw Error(fmt::format("snapshot: {}: its FUSE session (inodes, open files) lives in the virtiofsd "
                                "process and cannot be carried to a new one",
                                name_));
    }
    if (!snapshot_blocker_.empty()) throw Error(fmt::format("snapshot: {}: {}", name_, snapshot_blocker_));
    const bool running = active() && !broken();
    if (running && !started_.empty() && !stopped_) {
        throw Error(fmt::format("snapshot: {}: its rings were not stopped (not paused)", name_));
    }
    w.put<uint32_t>(state_version::kVhostUser);
    w.put_blob(config_);
    VhostDeviceState s;
    s.features = running ? negotiated_ : 0;
    s.rings.resize(num_queues_);
    if (running) {
        for (const uint16_t q : started_) s.rings[q] = {true, bases_[q]};
    }
    encode_vhost_state(w, s);
}

void VhostUserDevice::restore_state_locked(StateReader& r) {
    r.get_version(state_version::kVhostUser);
    // The configuration space comes from the new backend (GET_CONFIG): a different one (another
    // capacity, another tag) is another device.
    const auto config = r.get_blob("config space");
    if (!std::equal(config.begin(), config.end(), config_.begin(), config_.end())) {
        r.fail("config space", fmt::format("differs from what the backend at {} gives now (another image size?)",
                                           opts_.socket_path));
    }
    if (!backend_ok_) r.fail("vhost features", fmt::format("no connection to the backend at {}", opts_.socket_path));
    restored_ = decode_vhost_state(r, num_queues_, frontend_->backend_features(),
                                   fmt::format("the backend at {}", opts_.socket_path));
    // Saved while not running (never activated, or broken): the next activation is the driver's
    // own, from scratch.
    if (!any_started(*restored_)) restored_.reset();
}

}  // namespace embervm::virtio::vhost_user
