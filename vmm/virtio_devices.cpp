#include "vmm/virtio_devices.h"

#include <algorithm>

#include <fmt/format.h>

#include "boot/layout.h"
#include "virtio/block/backend.h"
#include "virtio/block/block_device.h"
#include "virtio/mmio_transport.h"
#include "virtio/virtio_defs.h"
#include "vmm/bus.h"
#include "vmm/error.h"
#include "vmm/eventfd.h"
#include "vmm/fd_watch.h"
#include "vmm/kvm.h"
#include "vmm/log.h"

namespace embervm::vmm {

struct VirtioMmioDevices::Slot {
    uint64_t base = 0;
    uint32_t gsi = 0;
    std::shared_ptr<EventFdIrq> irq;
    std::shared_ptr<virtio::MmioTransport> transport;
    std::vector<std::unique_ptr<EventFd>> notify;
    std::vector<std::unique_ptr<FdWatch>> watches;
};

VirtioMmioDevices::VirtioMmioDevices(KvmVm& vm, Bus& mmio_bus, boost::asio::io_context& io,
                                     const memory::GuestMemory& mem)
    : vm_(vm), mmio_bus_(mmio_bus), io_(io), mem_(mem) {}

VirtioMmioDevices::~VirtioMmioDevices() {
    // Watches first: no handler may run into a transport being destroyed.
    for (auto& slot : slots_) {
        slot->watches.clear();
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
        slot->watches.push_back(
            std::make_unique<FdWatch>(io_, blk->backend_completion_fd(), [blk] { blk->process_completions(); }));
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
            backend = virtio::block::open_block_backend(
                d->path_on_host, d->is_read_only,
                d->io_engine == IoEngineKind::Async ? virtio::block::IoEngine::Async : virtio::block::IoEngine::Sync);
        } catch (const std::exception& e) {
            throw ConfigError(fmt::format("drive {}: {}", d->drive_id, e.what()));
        }
        virtio::block::BlockDeviceOptions opts;
        opts.id = d->drive_id;
        opts.read_only = d->is_read_only;
        opts.flush = d->cache_type == CacheType::Writeback;
        log::info("drive {}: {} ({}, io_engine {}, cache_type {}{})", d->drive_id, d->path_on_host,
                  d->is_read_only ? "read-only" : "read-write", d->io_engine == IoEngineKind::Async ? "Async" : "Sync",
                  opts.flush ? "Writeback" : "Unsafe", d->is_root_device ? ", root" : "");
        attach(std::make_shared<virtio::block::BlockDevice>(std::move(backend), opts));
        if (d->is_root_device) {
            extra_args_.push_back(d->partuuid ? fmt::format("root=PARTUUID={}", *d->partuuid) : "root=/dev/vda");
            extra_args_.push_back(d->is_read_only ? "ro" : "rw");
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
