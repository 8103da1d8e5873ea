#include "vmm/virtio_devices.h"

#include <sys/stat.h>

#include <algorithm>
#include <random>

#include <fmt/format.h>

#include "boot/layout.h"
#include "virtio/block/backend.h"
#include "virtio/balloon/balloon_device.h"
#include "virtio/block/block_device.h"
#include "virtio/net/net_device.h"
#include "virtio/net/tap.h"
#include "virtio/mmio_transport.h"
#include "virtio/virtio_defs.h"
#include "virtio/watchdog.h"
#include "devices/bus.h"
#include "vmm/sys/error.h"
#include "vmm/sys/eventfd.h"
#include "vmm/sys/fd_watch.h"
#include "vmm/kvm/kvm.h"
#include "vmm/sys/log.h"
#include "vmm/metrics.h"

namespace embervm::vmm {

struct VirtioMmioDevices::Slot {
    uint64_t base = 0;
    uint32_t gsi = 0;
    std::shared_ptr<EventFdIrq> irq;
    std::shared_ptr<virtio::MmioTransport> transport;
    std::vector<std::unique_ptr<EventFd>> notify;
    std::vector<std::unique_ptr<FdWatch>> watches;
    // virtio-net: the TAP watch that the device pauses and resumes (null once tearing down).
    std::shared_ptr<FdWatch*> rx_watch;
    std::string metrics_key;  // "block_<drive_id>", "net_<iface_id>", "balloon"
    // virtio-blk: the backend's completion watch (replaced with the backend at run time) and
    // the drive (its image is in the run-time configuration, vmm/runtime_config.h).
    std::unique_ptr<FdWatch> completion_watch;
    std::string drive_id;
    std::unique_ptr<virtio::StallWatchdog> watchdog;
};

VirtioMmioDevices::VirtioMmioDevices(KvmVm& vm, Bus& mmio_bus, boost::asio::io_context& io,
                                     const memory::GuestMemory& mem)
    : vm_(vm),
      mmio_bus_(mmio_bus),
      io_(io),
      mem_(mem),
      watchdog_timer_(io, [this](std::chrono::nanoseconds) { check_progress(); }) {}

VirtioMmioDevices::~VirtioMmioDevices() {
    watchdog_timer_.stop();
    // Watches first: no handler may run into a transport being destroyed.
    for (auto& slot : slots_) {
        if (slot->rx_watch) *slot->rx_watch = nullptr;
        slot->watches.clear();
        slot->completion_watch.reset();
    }
}

virtio::MmioTransport& VirtioMmioDevices::attach(std::shared_ptr<virtio::VirtioDevice> device) {
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
    slot->transport = std::make_shared<virtio::MmioTransport>(mem_, device, slot->irq);
    slot->watchdog = std::make_unique<virtio::StallWatchdog>(device->name());
    mmio_bus_.insert(slot->transport, base, boot::layout::kVirtioMmioSize);

    virtio::MmioTransport* transport = slot->transport.get();
    for (uint16_t q = 0; q < transport->num_queues(); q++) {
        auto event = std::make_unique<EventFd>();
        vm_.register_ioeventfd(event->fd(), base + virtio::mmio::kQueueNotify, 4, false, q);
        EventFd* ev = event.get();
        slot->watches.push_back(std::make_unique<FdWatch>(io_, ev->fd(), [ev, transport, q] {
            if (ev->consume() != 0) {
                transport->notify_queue(q);
            }
        }));
        slot->notify.push_back(std::move(event));
    }
    if (auto* blk = dynamic_cast<virtio::block::BlockDevice*>(device.get())) {
        slot->completion_watch =
            std::make_unique<FdWatch>(io_, blk->backend_completion_fd(), [blk] { blk->process_completions(); });
    }
    if (auto* net = dynamic_cast<virtio::net::NetDevice*>(device.get())) {
        // The TAP is watched while the guest has receive buffers; process_rx() returning false
        // pauses the watch (the frame stays in the TAP), the device's resume hook restarts it.
        auto holder = std::make_shared<FdWatch*>(nullptr);
        auto watch = std::make_unique<FdWatch>(io_, net->backend_fd(), [net, holder] {
            if (!net->process_rx() && *holder != nullptr) (*holder)->pause();
        });
        *holder = watch.get();
        net->set_rx_resume_hook([holder] {
            if (*holder != nullptr) (*holder)->resume();
        });
        slot->rx_watch = holder;
        slot->watches.push_back(std::move(watch));
    }
    log::info("{} at {:#x}, GSI {}", device->name(), base, gsi);
    slots_.push_back(std::move(slot));
    return *transport;
}

void VirtioMmioDevices::attach_drives(const std::vector<DriveConfig>& drives) {
    std::vector<const DriveConfig*> order;
    for (const auto& d : drives) order.push_back(&d);
    std::stable_partition(order.begin(), order.end(), [](const DriveConfig* d) { return d->is_root_device; });
    for (const DriveConfig* d : order) {
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
        log::info("drive {}: {} ({}, io_engine {}, cache_type {}{})", d->drive_id, d->path_on_host,
                  d->is_read_only ? "read-only" : "read-write", to_string(d->io_engine),
                  opts.flush ? "Writeback" : "Unsafe", d->is_root_device ? ", root" : "");
        attach(std::make_shared<virtio::block::BlockDevice>(std::move(backend), opts));
        slots_.back()->metrics_key = "block_" + d->drive_id;
        slots_.back()->drive_id = d->drive_id;
        if (d->is_root_device) {
            extra_args_.push_back(d->partuuid ? fmt::format("root=PARTUUID={}", *d->partuuid) : "root=/dev/vda");
            extra_args_.push_back(d->is_read_only ? "ro" : "rw");
        }
    }
}

namespace {

// Whether two paths name the same file now (the same image opened again, e.g. after a resize).
bool same_file(const std::string& a, const std::string& b) {
    struct stat sa {}, sb {};
    return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

}  // namespace

void VirtioMmioDevices::update_drive(const DriveConfig& drive, const std::string& path_on_host) {
    const std::string where = fmt::format("drives.{}", drive.drive_id);
    const auto it = std::find_if(slots_.begin(), slots_.end(), [&](const std::unique_ptr<Slot>& s) {
        return !s->drive_id.empty() && s->drive_id == drive.drive_id;
    });
    auto* blk = it == slots_.end() ? nullptr : dynamic_cast<virtio::block::BlockDevice*>(&(*it)->transport->device());
    if (blk == nullptr) {
        throw Error(fmt::format("{}: no virtio-blk device serves this drive", where));
    }
    Slot& slot = **it;
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
    try {
        slot.completion_watch = std::make_unique<FdWatch>(io_, blk->backend_completion_fd(),
                                                          [blk] { blk->process_completions(); });
    } catch (const std::exception& e) {
        // The old watch sees nothing of the new backend: the device cannot complete requests.
        slot.transport->device_error(fmt::format("cannot watch the new backend's completions: {}", e.what()));
        throw;
    }
    log::info("drive {}: now {} ({} sectors)", drive.drive_id, path_on_host, blk->capacity_sectors());
}

void VirtioMmioDevices::attach_network_interfaces(const std::vector<NetworkInterfaceConfig>& ifaces) {
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
        log::info("network interface {}: TAP {}, MAC {}{}", n.iface_id, n.host_dev_name, format_mac(opts.mac),
                  n.mtu ? fmt::format(", MTU {}", *n.mtu) : std::string());
        attach(std::make_shared<virtio::net::NetDevice>(std::move(tap), opts));
        slots_.back()->metrics_key = "net_" + n.iface_id;
    }
}

std::shared_ptr<virtio::balloon::BalloonDevice> VirtioMmioDevices::attach_balloon(const BalloonConfig& config) {
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

void VirtioMmioDevices::start_watchdog(std::function<bool()> guest_running, std::chrono::milliseconds interval) {
    guest_running_ = std::move(guest_running);
    watchdog_timer_.start(interval);
}

void VirtioMmioDevices::stop_watchdog() { watchdog_timer_.stop(); }

void VirtioMmioDevices::check_progress() {
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

void VirtioMmioDevices::add_metrics(nlohmann::json& out) const {
    for (const auto& slot : slots_) {
        if (slot->metrics_key.empty()) continue;
        const auto& dev = slot->transport->device();
        const uint64_t needs_reset = slot->transport->needs_reset_events();
        nlohmann::json j;
        if (const auto* blk = dynamic_cast<const virtio::block::BlockDevice*>(&dev)) {
            j = device_metrics_json(blk->counters(), needs_reset);
        } else if (const auto* net = dynamic_cast<const virtio::net::NetDevice*>(&dev)) {
            j = device_metrics_json(net->counters(), needs_reset);
        } else if (const auto* balloon = dynamic_cast<const virtio::balloon::BalloonDevice*>(&dev)) {
            j = device_metrics_json(balloon->counters(), needs_reset);
        } else {
            continue;
        }
        virtio::WatchdogReport r;
        {
            std::lock_guard lock(watchdog_mutex_);
            r = slot->watchdog->report();
        }
        add_watchdog_metrics(j, r);
        out[slot->metrics_key] = std::move(j);
    }
}

void VirtioMmioDevices::log_counters() const {
    for (const auto& slot : slots_) {
        const auto& dev = slot->transport->device();
        {
            std::lock_guard lock(watchdog_mutex_);
            const virtio::WatchdogReport& r = slot->watchdog->report();
            if (r.interrupts_reraised != 0 || r.driver_stalls != 0 || r.slow_request_warnings != 0) {
                log::warn("{}: watchdog: {} interrupts raised again, {} driver stalls, {} slow-request warnings",
                          dev.name(), r.interrupts_reraised, r.driver_stalls, r.slow_request_warnings);
            }
        }
        if (const auto* blk = dynamic_cast<const virtio::block::BlockDevice*>(&dev)) {
            const auto c = blk->counters();
            log::info("{}: {} reads ({} bytes), {} writes ({} bytes), {} flushes, {} discards, {} write-zeroes, {} "
                      "GET_IDs, {} I/O errors, {} unsupported requests, {} device errors",
                      blk->name(), c.read_requests, c.read_bytes, c.write_requests, c.write_bytes, c.flush_requests,
                      c.discard_requests, c.write_zeroes_requests, c.get_id_requests, c.io_errors,
                      c.unsupported_requests, c.device_errors);
        } else if (const auto* net = dynamic_cast<const virtio::net::NetDevice*>(&dev)) {
            const auto c = net->counters();
            log::info("{}: rx {} frames ({} bytes, {} dropped, {} read errors, waited for buffers {} times), tx {} "
                      "frames ({} bytes, {} dropped, {} write errors), {} device errors",
                      net->name(), c.rx_frames, c.rx_bytes, c.rx_dropped, c.rx_errors, c.rx_paused, c.tx_frames,
                      c.tx_bytes, c.tx_dropped, c.tx_errors, c.device_errors);
        } else if (const auto* balloon = dynamic_cast<const virtio::balloon::BalloonDevice*>(&dev)) {
            const auto c = balloon->counters();
            log::info("{}: inflated {} pages, deflated {}, {} MiB given back to the host, {} invalid PFNs, {} reports, "
                      "{} statistics updates",
                      balloon->name(), c.inflated_pages, c.deflated_pages, c.discarded_bytes >> 20, c.invalid_pfns,
                      c.reported_ranges, c.stats_updates);
        }
    }
}

std::string VirtioMmioDevices::kernel_cmdline_args() const {
    std::string out;
    for (const auto& slot : slots_) {
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
