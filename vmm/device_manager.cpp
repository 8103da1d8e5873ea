// The virtio device manager: windows, GSIs, ioeventfds and irqfds for each virtio device.
#include "vmm/device_manager.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <random>

#include <fmt/format.h>

#include "boot/layout.h"
#include "virtio/block/backend.h"
#include "virtio/balloon/balloon_device.h"
#include "virtio/vsock/vsock_device.h"
#include "virtio/block/block_device.h"
#include "virtio/console/console_device.h"
#include "virtio/net/net_device.h"
#include "virtio/net/tap.h"
#include "virtio/net/vhost_net_device.h"
#include "devices/pci/msix.h"
#include "devices/pci/pci_bus.h"
#include "virtio/mmio_transport.h"
#include "virtio/pci_transport.h"
#include "virtio/vhost_user/vhost_user_device.h"
#include "virtio/virtio_defs.h"
#include "virtio/watchdog.h"
#include "devices/bus.h"
#include "vmm/sys/error.h"
#include "vmm/sys/eventfd.h"
#include "vmm/kvm/event_routing.h"
#include "vmm/sys/log.h"
#include "vmm/metrics.h"

namespace embervm::vmm {

namespace {

// The first GSI for MSI-X vectors: above the IOAPIC's 24 pins. KVM allows 4096 routes.
constexpr uint32_t kFirstMsiGsi = 24;
constexpr uint32_t kLastMsiGsi = 4095;

// The MSI-X vectors of one virtio-pci function on consecutive GSIs, each an irqfd; a vector's
// MSI route is set when the driver programs (and unmasks) it.
class GsiMsiVectors : public devices::pci::MsiVectors {
public:
    GsiMsiVectors(VmEventRouting& vm, std::string name, uint32_t first_gsi, uint16_t count)
        : vm_(vm), name_(std::move(name)), first_gsi_(first_gsi), events_(count), sent_(count) {
        for (uint16_t i = 0; i < count; ++i) vm_.register_irqfd(events_[i].fd(), first_gsi + i);
    }
    void route(uint16_t index, const devices::pci::MsiMessage& message) override {
        if (index >= events_.size()) return;
        try {
            vm_.set_msi_route(first_gsi_ + index, message.address, message.data);
        } catch (const std::exception& e) {
            // The guest's vector stays unrouted: its interrupts are lost, nothing else is.
            log::error("{}: MSI-X vector {}: {}", name_, index, e.what());
        }
    }
    void trigger(uint16_t index) override {
        if (index >= events_.size()) return;
        events_[index].signal();
        sent_[index].fetch_add(1, std::memory_order_relaxed);
    }
    // "vector 0: N, vector 1: M, ...": the MSIs signalled to KVM, for the log at the end (a guest
    // that missed one can be told from a device that did not send it).
    std::string sent() const {
        std::string out;
        for (size_t i = 0; i < sent_.size(); ++i) {
            out += fmt::format("{}vector {}: {}", i ? ", " : "", i, sent_[i].load(std::memory_order_relaxed));
        }
        return out;
    }
    int irqfd(uint16_t index) const override { return index < events_.size() ? events_[index].fd() : -1; }

private:
    VmEventRouting& vm_;
    const std::string name_;
    const uint32_t first_gsi_;
    std::vector<EventFd> events_;
    std::vector<std::atomic<uint64_t>> sent_;  // per vector
};

}  // namespace

struct DeviceManager::Slot {
    uint64_t base = 0;  // virtio-mmio: the window; 0 for PCI
    uint32_t gsi = 0;
    std::shared_ptr<EventFdIrq> irq;
    std::shared_ptr<virtio::TransportCore> transport;
    // virtio-pci: the queue eventfds (owned by the transport) and where they are bound now.
    std::vector<int> notify_fds;
    std::optional<uint64_t> notify_base;
    std::string metrics_key;  // "block_<drive_id>", "net_<iface_id>", "balloon", "console", "vsock", "fs_<tag>"
    // virtio-blk: the device (created here, so its type is known), the drive and the image it
    // uses now.
    std::shared_ptr<virtio::block::BlockDevice> block;
    std::string drive_id;
    // virtio-net: the device and its interface.
    std::shared_ptr<virtio::net::NetDevice> net;
    std::string iface_id;
    std::unique_ptr<virtio::StallWatchdog> watchdog;
    std::shared_ptr<GsiMsiVectors> msi;  // virtio-pci
};

DeviceManager::DeviceManager(VmEventRouting& vm, Bus& mmio_bus, boost::asio::io_context& io,
                                     const memory::GuestMemory& mem)
    : vm_(vm),
      mmio_bus_(mmio_bus),
      loop_(io),
      mem_(mem),
      next_msi_gsi_(kFirstMsiGsi),
      watchdog_timer_(io, [this](std::chrono::nanoseconds) { check_progress(); }) {}

DeviceManager::~DeviceManager() { watchdog_timer_.stop(); }

void DeviceManager::enable_pci(Bus& pio_bus) {
    if (!slots_.empty()) throw Error("PCI must be enabled before devices are attached");
    pci_ = std::make_unique<devices::pci::PciRoot>(boot::layout::kPciMmioStart, boot::layout::kPciMmioSize);
    pio_bus.insert(pci_->config_io(), devices::pci::PciRoot::kConfigAddressPort, 8);
    mmio_bus_.insert(pci_->mmio_window(), boot::layout::kPciMmioStart, boot::layout::kPciMmioSize);
    static_assert(boot::layout::kPciEcamSize == devices::pci::kEcamBusSize);
    mmio_bus_.insert(pci_->ecam(), boot::layout::kPciEcamStart, boot::layout::kPciEcamSize);
}

virtio::TransportCore& DeviceManager::attach(std::shared_ptr<virtio::VirtioDevice> device) {
    return pci_ ? attach_pci(std::move(device)) : attach_mmio(std::move(device));
}

virtio::TransportCore& DeviceManager::attach_mmio(std::shared_ptr<virtio::VirtioDevice> device) {
    const size_t index = slots_.size();
    const uint32_t gsi = kFirstVirtioGsi + static_cast<uint32_t>(index);
    const uint64_t base = boot::layout::kVirtioMmioStart + index * boot::layout::kVirtioMmioSize;
    if (gsi > kLastVirtioGsi || base + boot::layout::kVirtioMmioSize > boot::layout::kMmioHoleEnd) {
        throw Error(fmt::format("{}: no free virtio-mmio slot (at most {} devices)", device->name(),
                                kLastVirtioGsi - kFirstVirtioGsi + 1));
    }
    auto slot = std::make_unique<Slot>();
    slot->base = base;
    slot->gsi = gsi;
    slot->irq = std::make_shared<EventFdIrq>();
    vm_.register_irqfd(slot->irq->fd(), gsi);
    auto transport = std::make_shared<virtio::MmioTransport>(mem_, device, slot->irq, &loop_);
    slot->transport = transport;
    // A lost interrupt on an IOAPIC pin: the re-raise warnings show the pin's state in KVM.
    slot->watchdog = std::make_unique<virtio::StallWatchdog>(
        device->name(), virtio::WatchdogTimes{}, [this, gsi] { return vm_.describe_gsi(gsi); },
        [this, gsi] { return vm_.gsi_masked(gsi); });
    std::vector<EventFd> queue_events(slot->transport->num_queues());
    for (uint16_t q = 0; q < queue_events.size(); q++) {
        vm_.register_ioeventfd(queue_events[q].fd(), base + virtio::mmio::kQueueNotify, 4, false, q);
    }
    slot->transport->set_queue_events(std::move(queue_events));
    mmio_bus_.insert(transport, base, boot::layout::kVirtioMmioSize);
    log::info("{} at {:#x}, GSI {}", device->name(), base, gsi);
    slots_.push_back(std::move(slot));
    return *transport;
}

virtio::TransportCore& DeviceManager::attach_pci(std::shared_ptr<virtio::VirtioDevice> device) {
    const size_t vectors = device->queue_max_sizes().size() + 1;
    if (next_msi_gsi_ + vectors - 1 > kLastMsiGsi) {
        throw Error(fmt::format("{}: no GSIs left for {} MSI-X vectors", device->name(), vectors));
    }
    auto slot = std::make_unique<Slot>();
    auto msi = std::make_shared<GsiMsiVectors>(vm_, device->name(), next_msi_gsi_, static_cast<uint16_t>(vectors));
    auto transport = std::make_shared<virtio::PciTransport>(mem_, device, msi, &loop_);
    slot->transport = transport;
    slot->msi = msi;
    slot->watchdog = std::make_unique<virtio::StallWatchdog>(device->name());
    std::vector<EventFd> queue_events(transport->num_queues());
    for (const auto& e : queue_events) slot->notify_fds.push_back(e.fd());
    transport->set_queue_events(std::move(queue_events));
    transport->set_notify_moved([this, s = slot.get()](std::optional<uint64_t> at) { move_notify(*s, at); });
    const uint8_t pci_slot = pci_->add(transport);
    log::info("{} at PCI 00:{:02x}.0, BAR 0 {:#x}, MSI-X GSIs {}-{}", device->name(), pci_slot,
              transport->bar_addresses()[virtio::pci_layout::kBar].value_or(0), next_msi_gsi_,
              next_msi_gsi_ + vectors - 1);
    next_msi_gsi_ += static_cast<uint32_t>(vectors);
    slots_.push_back(std::move(slot));
    return *transport;
}

void DeviceManager::move_notify(Slot& slot, std::optional<uint64_t> notify_base) {
    // A 16-bit write of the queue index at the queue's notify address (virtio-pci 4.1.4.4).
    constexpr uint32_t kLen = 2;
    const std::string& name = slot.transport->device().name();
    for (size_t q = 0; q < slot.notify_fds.size(); ++q) {
        const uint64_t off = q * virtio::pci_layout::kNotifyOffMultiplier;
        try {
            if (slot.notify_base) vm_.unregister_ioeventfd(slot.notify_fds[q], *slot.notify_base + off, kLen, false, {});
            if (notify_base) vm_.register_ioeventfd(slot.notify_fds[q], *notify_base + off, kLen, false, {});
        } catch (const std::exception& e) {
            // Kicks then reach the transport through the BAR instead: slower, still correct.
            log::error("{}: queue {} notification: {}", name, q, e.what());
        }
    }
    slot.notify_base = notify_base;
}

void DeviceManager::attach_drives(const std::vector<DriveConfig>& drives) {
    std::vector<const DriveConfig*> order;
    for (const auto& d : drives) order.push_back(&d);
    std::stable_partition(order.begin(), order.end(), [](const DriveConfig* d) { return d->is_root_device; });
    for (const DriveConfig* d : order) {
        if (d->socket) {
            attach_vhost_user_drive(*d);
            continue;
        }
        std::unique_ptr<virtio::block::BlockBackend> backend;
        try {
            backend = virtio::block::open_block_backend(d->path_on_host, d->is_read_only, d->io_engine);
        } catch (const std::exception& e) {
            throw ConfigError(fmt::format("drive {}: {}", d->drive_id, e.what()));
        }
        virtio::block::BlockDeviceOptions opts;
        opts.id = d->drive_id;
        opts.read_only = d->is_read_only;
        opts.flush = d->cache_type == CacheType::Writeback;
        if (d->rate_limiter) opts.rate_limiter = *d->rate_limiter;
        log::info("drive {}: {} ({}, io_engine {}, cache_type {}{})", d->drive_id, d->path_on_host,
                  d->is_read_only ? "read-only" : "read-write", to_string(d->io_engine),
                  opts.flush ? "Writeback" : "Unsafe", d->is_root_device ? ", root" : "");
        auto device = std::make_shared<virtio::block::BlockDevice>(std::move(backend), opts);
        attach(device);
        slots_.back()->block = std::move(device);
        slots_.back()->metrics_key = "block_" + d->drive_id;
        slots_.back()->drive_id = d->drive_id;
        add_root_args(*d, d->is_read_only);
    }
}

void DeviceManager::attach_fs(const std::vector<FsConfig>& fs) {
    static_assert(kMaxFsTagBytes == virtio::vhost_user::kFsTagSize);
    static_assert(kMaxFsRequestQueues == virtio::vhost_user::kMaxFsRequestQueues);
    for (size_t i = 0; i < fs.size(); i++) {
        const FsConfig& f = fs[i];
        virtio::vhost_user::VhostUserDeviceOptions opts;
        opts.id = f.tag;
        opts.socket_path = f.socket;
        opts.queue_size = static_cast<uint16_t>(f.queue_size);
        std::shared_ptr<virtio::vhost_user::VhostUserDevice> device;
        try {
            device = virtio::vhost_user::VhostUserDevice::connect_fs(opts, {f.tag, f.num_request_queues});
        } catch (const std::exception& e) {
            throw ConfigError(fmt::format("fs[{}].socket: {}", i, e.what()));
        }
        log::info("fs {}: virtio-fs on the vhost-user backend at {} ({} request queue{} of {}, no DAX window)", f.tag,
                  f.socket, f.num_request_queues, f.num_request_queues == 1 ? "" : "s", f.queue_size);
        attach(device);
        slots_.back()->metrics_key = "fs_" + f.tag;
    }
}

void DeviceManager::add_root_args(const DriveConfig& d, bool read_only) {
    if (!d.is_root_device) return;
    extra_args_.push_back(d.partuuid ? fmt::format("root=PARTUUID={}", *d.partuuid) : "root=/dev/vda");
    extra_args_.push_back(read_only ? "ro" : "rw");
}

void DeviceManager::attach_vhost_user_drive(const DriveConfig& d) {
    virtio::vhost_user::VhostUserDeviceOptions opts;
    opts.id = d.drive_id;
    opts.socket_path = *d.socket;
    opts.flush = d.cache_type == CacheType::Writeback;
    std::shared_ptr<virtio::vhost_user::VhostUserDevice> device;
    try {
        device = virtio::vhost_user::VhostUserDevice::connect_block(opts);
    } catch (const std::exception& e) {
        throw ConfigError(fmt::format("drive {}: {}", d.drive_id, e.what()));
    }
    const bool read_only = device->read_only();
    log::info("drive {}: vhost-user-blk backend at {} ({}, {} sectors, cache_type {}{})", d.drive_id, *d.socket,
              read_only ? "read-only" : "read-write", device->capacity_sectors(), opts.flush ? "Writeback" : "Unsafe",
              d.is_root_device ? ", root" : "");
    attach(device);
    slots_.back()->metrics_key = "block_" + d.drive_id;
    slots_.back()->drive_id = d.drive_id;
    add_root_args(d, read_only);
}

namespace {

// Whether two paths name the same file now (the same image opened again, e.g. after a resize).
bool same_file(const std::string& a, const std::string& b) {
    struct stat sa {}, sb {};
    return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

}  // namespace

void DeviceManager::update_drive(const DriveConfig& drive, const std::string& path_on_host) {
    const std::string where = fmt::format("drives.{}", drive.drive_id);
    const auto it = std::find_if(slots_.begin(), slots_.end(), [&](const std::unique_ptr<Slot>& s) {
        return !s->drive_id.empty() && s->drive_id == drive.drive_id;
    });
    if (it == slots_.end() || (*it)->block == nullptr) {
        throw Error(fmt::format("{}: no virtio-blk device serves this drive", where));
    }
    Slot& slot = **it;
    virtio::block::BlockDevice* const blk = slot.block.get();
    const std::string field = where + ".path_on_host";
    const auto open = [&]() -> std::unique_ptr<virtio::block::BlockBackend> {
        try {
            return virtio::block::open_block_backend(path_on_host, drive.is_read_only, drive.io_engine);
        } catch (const std::exception& e) {
            throw ConfigError(fmt::format("{}: {}", field, e.what()));
        }
    };
    bool notified = false;
    try {
        // The current backend holds the image's lock: opening the same image again needs it
        // released first (reopen_backend takes it back if the open fails).
        notified = same_file(path_on_host, drive.path_on_host) ? blk->reopen_backend(open)
                                                                   : blk->replace_backend(open());
    } catch (const ConfigError&) {
        throw;
    } catch (const std::exception& e) {
        throw ConfigError(fmt::format("{}: {}", field, e.what()));
    }
    // Not activated: the driver is not there yet (it reads the new capacity when it comes) or
    // is setting the device up; once it has started, it learns of the change like an
    // activated driver (Linux defers a config change until its probe is done).
    if (!notified && slot.transport->status() != 0) {
        slot.transport->signal_config_change();
    }
    log::info("drive {}: now {} ({} sectors)", drive.drive_id, path_on_host, blk->capacity_sectors());
}

void DeviceManager::update_drive_rate_limiter(const std::string& drive_id, const RateLimiterConfig& limiter) {
    const auto it = std::find_if(slots_.begin(), slots_.end(), [&](const std::unique_ptr<Slot>& s) {
        return s->block != nullptr && s->drive_id == drive_id;
    });
    if (it == slots_.end()) throw Error(fmt::format("drives.{}: no virtio-blk device serves this drive", drive_id));
    (*it)->block->update_rate_limiter(limiter);
}

void DeviceManager::update_network_rate_limiters(const std::string& iface_id,
                                                 const std::optional<RateLimiterConfig>& rx,
                                                 const std::optional<RateLimiterConfig>& tx) {
    const auto it = std::find_if(slots_.begin(), slots_.end(), [&](const std::unique_ptr<Slot>& s) {
        return s->net != nullptr && s->iface_id == iface_id;
    });
    if (it == slots_.end()) {
        throw Error(fmt::format("network-interfaces.{}: no virtio-net device with rate limiters serves this "
                                "interface (a vhost interface has none)",
                                iface_id));
    }
    (*it)->net->update_rate_limiters(rx, tx);
}

void DeviceManager::attach_network_interfaces(const std::vector<NetworkInterfaceConfig>& ifaces) {
    for (const NetworkInterfaceConfig& n : ifaces) {
        std::unique_ptr<virtio::net::Tap> tap;
        try {
            tap = std::make_unique<virtio::net::Tap>(n.host_dev_name);
        } catch (const std::exception& e) {
            throw ConfigError(fmt::format("network interface {}: {}", n.iface_id, e.what()));
        }
        virtio::net::NetDeviceOptions opts;
        opts.id = n.iface_id;
        if (n.guest_mac) {
            opts.mac = *n.guest_mac;
        } else {
            // Locally administered, unicast, random.
            std::random_device rd;
            opts.mac = {0x06, 0x00, 0, 0, 0, 0};
            for (size_t i = 2; i < 6; i++) opts.mac[i] = static_cast<uint8_t>(rd());
        }
        if (n.mtu) opts.mtu = static_cast<uint16_t>(*n.mtu);
        if (n.rx_rate_limiter) opts.rx_rate_limiter = *n.rx_rate_limiter;
        if (n.tx_rate_limiter) opts.tx_rate_limiter = *n.tx_rate_limiter;
        log::info("network interface {}: TAP {}, MAC {}{}", n.iface_id, n.host_dev_name, format_mac(opts.mac),
                  n.mtu ? fmt::format(", MTU {}", *n.mtu) : std::string());
        if (n.vhost) {
            attach_vhost_net(n, std::move(tap), opts);
            continue;
        }
        auto device = std::make_shared<virtio::net::NetDevice>(std::move(tap), opts);
        attach(device);
        slots_.back()->net = std::move(device);
        slots_.back()->metrics_key = "net_" + n.iface_id;
        slots_.back()->iface_id = n.iface_id;
    }
}

void DeviceManager::attach_vhost_net(const NetworkInterfaceConfig& n, std::unique_ptr<virtio::net::Tap> tap,
                                     const virtio::net::NetDeviceOptions& opts) {
    std::shared_ptr<virtio::net::VhostNetDevice> device;
    try {
        auto vhost = std::make_unique<virtio::net::VhostNetFd>();
        device = std::make_shared<virtio::net::VhostNetDevice>(
            std::move(tap), std::move(vhost), virtio::net::VhostNetOptions{opts.id, opts.mac, opts.mtu});
    } catch (const std::exception& e) {
        throw ConfigError(fmt::format("network interface {}: vhost: {}", n.iface_id, e.what()));
    }
    attach(device);
    slots_.back()->metrics_key = "net_" + n.iface_id;
    slots_.back()->iface_id = n.iface_id;
}

std::shared_ptr<virtio::balloon::BalloonDevice> DeviceManager::attach_balloon(const BalloonConfig& config) {
    virtio::balloon::BalloonOptions opts;
    opts.amount_mib = config.amount_mib;
    opts.deflate_on_oom = config.deflate_on_oom;
    opts.stats_polling_interval_s = config.stats_polling_interval_s;
    opts.free_page_reporting = config.free_page_reporting;
    auto balloon = std::make_shared<virtio::balloon::BalloonDevice>(opts);
    attach(balloon);
    slots_.back()->metrics_key = "balloon";
    return balloon;
}

std::shared_ptr<virtio::console::ConsoleDevice> DeviceManager::attach_console(
    std::unique_ptr<virtio::console::ConsoleSink> sink) {
    auto console = std::make_shared<virtio::console::ConsoleDevice>(std::move(sink));
    attach(console);
    slots_.back()->metrics_key = "console";
    return console;
}

std::shared_ptr<virtio::vsock::VsockDevice> DeviceManager::attach_vsock(const VsockConfig& config) {
    std::shared_ptr<virtio::vsock::VsockDevice> vsock;
    try {
        vsock = std::make_shared<virtio::vsock::VsockDevice>(config.guest_cid, config.uds_path);
    } catch (const Error& e) {
        throw ConfigError(fmt::format("vsock.uds_path: {}", e.what()));
    }
    log::info("vsock: guest CID {}, host socket {}", config.guest_cid, config.uds_path);
    attach(vsock);
    slots_.back()->metrics_key = "vsock";
    return vsock;
}

void DeviceManager::start_watchdog(std::function<bool()> guest_running, std::chrono::milliseconds interval) {
    guest_running_ = std::move(guest_running);
    watchdog_timer_.start(interval);
}

void DeviceManager::stop_watchdog() { watchdog_timer_.stop(); }

void DeviceManager::check_progress() {
    const bool running = !guest_running_ || guest_running_();
    const auto now = std::chrono::steady_clock::now();
    for (const auto& slot : slots_) {
        const virtio::DeviceProgress p = slot->transport->device().progress();
        const auto pending_since = slot->transport->used_interrupt_pending_since();
        virtio::StallWatchdog::Result r;
        {
            std::lock_guard lock(watchdog_mutex_);
            r = slot->watchdog->check(p, pending_since, now, running);
        }
        if (r.reraise) slot->transport->raise_used_again();
    }
}

void DeviceManager::add_metrics(nlohmann::json& out) const {
    for (const auto& slot : slots_) {
        if (slot->metrics_key.empty()) continue;
        nlohmann::json j = slot->transport->device().metrics_json();
        j["needs_reset"] = slot->transport->needs_reset_events();
        virtio::WatchdogReport r;
        {
            std::lock_guard lock(watchdog_mutex_);
            r = slot->watchdog->report();
        }
        add_watchdog_metrics(j, r);
        out[slot->metrics_key] = std::move(j);
    }
}

void DeviceManager::log_counters() const {
    for (const auto& slot : slots_) {
        const auto& dev = slot->transport->device();
        {
            std::lock_guard lock(watchdog_mutex_);
            const virtio::WatchdogReport& r = slot->watchdog->report();
            if (r.interrupts_reraised != 0 || r.driver_stalls != 0 || r.slow_request_warnings != 0) {
                log::warn("{}: watchdog: {} interrupts raised again, {} driver stalls, {} slow-request warnings, "
                          "{} not raised (line masked)",
                          dev.name(), r.interrupts_reraised, r.driver_stalls, r.slow_request_warnings,
                          r.interrupts_masked);
            } else if (r.interrupts_masked != 0) {
                log::info("{}: watchdog: {} interrupts not raised again: the guest masks the line and polls",
                          dev.name(), r.interrupts_masked);
            }
        }
        dev.log_counters();
        if (slot->msi) log::info("{}: MSI-X interrupts sent: {}", dev.name(), slot->msi->sent());
    }
}

std::vector<DeviceState> DeviceManager::pause_and_save_devices() {
    for (const auto& slot : slots_) slot->transport->pause();
    std::vector<DeviceState> out;
    try {
        for (const auto& slot : slots_) {
            out.push_back(DeviceState{slot->transport->device().name(), slot->transport->save_state()});
        }
    } catch (...) {
        resume_devices();
        throw;
    }
    return out;
}

void DeviceManager::resume_devices() {
    for (const auto& slot : slots_) slot->transport->resume();
}

std::optional<std::vector<uint8_t>> DeviceManager::save_pci_root() const {
    if (!pci_) return std::nullopt;
    StateWriter w;
    pci_->save_state(w);
    return w.take();
}

void DeviceManager::restore_devices(std::span<const DeviceState> states,
                                    std::optional<std::span<const uint8_t>> pci_root) {
    if (pci_root.has_value() != (pci_ != nullptr)) {
        throw StateError(pci_ ? "snapshot: no saved state for the PCI root (the VM has enable_pci)"
                              : "snapshot: saved state of a PCI root, which this VM does not have");
    }
    std::optional<devices::pci::PciRoot::Saved> root;
    if (pci_) {
        StateReader r(*pci_root, "pci-root");
        root = pci_->decode_state(r);
        r.expect_end();
    }
    std::map<std::string, const DeviceState*> by_id;
    for (const DeviceState& s : states) {
        if (!by_id.emplace(s.id, &s).second) throw StateError(fmt::format("snapshot: device '{}' saved twice", s.id));
    }
    for (const auto& slot : slots_) {
        if (!by_id.contains(slot->transport->device().name())) {
            throw StateError(fmt::format("snapshot: no saved state for {}", slot->transport->device().name()));
        }
    }
    if (by_id.size() != slots_.size()) {
        for (const DeviceState& s : states) {
            const bool known = std::any_of(slots_.begin(), slots_.end(),
                                           [&](const auto& slot) { return slot->transport->device().name() == s.id; });
            if (!known) throw StateError(fmt::format("snapshot: saved state of '{}', which this VM does not have", s.id));
        }
    }
    for (const auto& slot : slots_) slot->transport->restore_state(by_id.at(slot->transport->device().name())->bytes);
    if (root) {
        pci_->restore(*root);
        pci_->restore_decoding();
    }
}

std::vector<DeviceManager::Window> DeviceManager::windows() const {
    std::vector<Window> out;
    for (const auto& slot : slots_) {
        if (slot->base != 0) out.push_back({slot->base, boot::layout::kVirtioMmioSize, slot->gsi});
    }
    return out;
}

std::string DeviceManager::kernel_cmdline_args() const {
    std::string out;
    for (const auto& slot : slots_) {
        if (slot->base == 0) continue;  // PCI: the guest finds it by scanning
        if (!out.empty()) out += ' ';
        out += virtio::mmio_cmdline_entry(slot->base, slot->gsi);
    }
    for (const auto& a : extra_args_) {
        if (!out.empty()) out += ' ';
        out += a;
    }
    return out;
}

}  // namespace embervm::vmm
