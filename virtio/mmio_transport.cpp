// virtio-mmio (version 2) transport: register file, feature negotiation, status state
// machine, queue configuration and interrupts in front of one VirtioDevice.
#include "virtio/mmio_transport.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <stdexcept>

#include <fmt/format.h>

#include "virtio/saved_state.h"
#include "vmm/sys/log.h"

namespace embervm::virtio {

MmioTransport::MmioTransport(const memory::GuestMemory& mem, std::shared_ptr<VirtioDevice> device,
                             std::shared_ptr<devices::IrqLine> irq, vmm::EventLoop* loop)
    : TransportCore(mem, std::move(device), loop), irq_(std::move(irq)) {}

void MmioTransport::reset_transport_locked() {
    device_features_sel_ = 0;
    driver_features_sel_ = 0;
    queue_sel_ = 0;
}

void MmioTransport::save_transport_locked(StateWriter& w) const {
    w.put<uint32_t>(state_version::kMmio);
    w.put(device_features_sel_);
    w.put(driver_features_sel_);
    w.put(queue_sel_);
}

void MmioTransport::restore_transport_locked(StateReader& r) {
    r.get_version(state_version::kMmio);
    // Any value is one a driver can write (out-of-range selectors read as 0).
    const auto device_sel = r.get<uint32_t>("device features select");
    const auto driver_sel = r.get<uint32_t>("driver features select");
    const auto queue_sel = r.get<uint32_t>("queue select");
    device_features_sel_ = device_sel;
    driver_features_sel_ = driver_sel;
    queue_sel_ = queue_sel;
}

void MmioTransport::deliver(uint32_t interrupt_bits, std::optional<uint16_t> /*queue: one line for all*/) {
    set_interrupt_bits(interrupt_bits);
    irq_->trigger();
}

// ---------------------------------------------------------------------------------------
// Bus access

void MmioTransport::read(uint64_t offset, std::span<uint8_t> data) {
    if (offset >= mmio::kConfig) {
        std::lock_guard lock(mutex_);
        device_->read_config(offset - mmio::kConfig, data);
        return;
    }
    std::fill(data.begin(), data.end(), uint8_t{0});
    if (data.size() != 4 || offset % 4 != 0) {
        log::debug("{}: ignoring {}-byte read of register {:#x}", name_, data.size(), offset);
        return;
    }
    const uint32_t value = read_register(offset);
    std::memcpy(data.data(), &value, sizeof(value));
}

void MmioTransport::write(uint64_t offset, std::span<const uint8_t> data) {
    if (offset >= mmio::kConfig) {
        std::lock_guard lock(mutex_);
        device_->write_config(offset - mmio::kConfig, data);
        return;
    }
    if (data.size() != 4 || offset % 4 != 0) {
        log::debug("{}: ignoring {}-byte write of register {:#x}", name_, data.size(), offset);
        return;
    }
    uint32_t value = 0;
    std::memcpy(&value, data.data(), sizeof(value));
    write_register(offset, value);
}

uint32_t MmioTransport::read_register(uint64_t offset) {
    // Registers that need no lock.
    switch (offset) {
        case mmio::kMagicValue: return mmio::kMagic;
        case mmio::kVersionReg: return mmio::kVersion;
        case mmio::kDeviceId: return device_->device_type();
        case mmio::kVendorIdReg: return mmio::kVendorId;
        case mmio::kInterruptStatus: return interrupt_status();
        case mmio::kStatus: return status();
        case mmio::kConfigGeneration: return config_generation();
        // No shared memory regions: a length (and base) of all ones means "no such region".
        case mmio::kShmLenLow:
        case mmio::kShmLenHigh:
        case mmio::kShmBaseLow:
        case mmio::kShmBaseHigh: return 0xffffffff;
        default: break;
    }
    std::lock_guard lock(mutex_);
    switch (offset) {
        case mmio::kDeviceFeatures: return device_features_word(device_features_sel_);
        case mmio::kQueueNumMax:
            return queue_sel_ < queues_.size() ? queues_[queue_sel_].max_size() : 0;
        case mmio::kQueueReady:
            return queue_sel_ < queues_.size() && queues_[queue_sel_].ready() ? 1 : 0;
        default:
            log::debug("{}: read of write-only or unknown register {:#x}", name_, offset);
            return 0;
    }
}

void MmioTransport::write_register(uint64_t offset, uint32_t value) {
    if (offset == mmio::kInterruptAck) {
        clear_interrupt_bits(value);
        return;
    }
    std::lock_guard lock(mutex_);
    switch (offset) {
        case mmio::kDeviceFeaturesSel: device_features_sel_ = value; return;
        case mmio::kDriverFeaturesSel: driver_features_sel_ = value; return;
        case mmio::kDriverFeatures: write_driver_features_word(driver_features_sel_, value); return;
        case mmio::kQueueSel: queue_sel_ = value; return;
        case mmio::kQueueNum:
            if (Queue* q = configurable_queue("QueueNum", queue_sel_, true)) {
                q->set_size(value <= 0xffff ? static_cast<uint16_t>(value) : 0);  // 0: refused at DRIVER_OK
            }
            return;
        case mmio::kQueueReady:
            if (Queue* q = configurable_queue("QueueReady", queue_sel_, false)) {
                if (value > 1) {
                    log::debug("{}: QueueReady write of {} ignored", name_, value);
                    return;
                }
                q->set_ready(value == 1);
            }
            return;
        case mmio::kQueueDescLow:
            if (Queue* q = configurable_queue("QueueDescLow", queue_sel_, true)) {
                q->set_desc_table(memory::GuestAddress(replace_low(q->desc_table().value, value)));
            }
            return;
        case mmio::kQueueDescHigh:
            if (Queue* q = configurable_queue("QueueDescHigh", queue_sel_, true)) {
                q->set_desc_table(memory::GuestAddress(replace_high(q->desc_table().value, value)));
            }
            return;
        case mmio::kQueueDriverLow:
            if (Queue* q = configurable_queue("QueueDriverLow", queue_sel_, true)) {
                q->set_avail_ring(memory::GuestAddress(replace_low(q->avail_ring().value, value)));
            }
            return;
        case mmio::kQueueDriverHigh:
            if (Queue* q = configurable_queue("QueueDriverHigh", queue_sel_, true)) {
                q->set_avail_ring(memory::GuestAddress(replace_high(q->avail_ring().value, value)));
            }
            return;
        case mmio::kQueueDeviceLow:
            if (Queue* q = configurable_queue("QueueDeviceLow", queue_sel_, true)) {
                q->set_used_ring(memory::GuestAddress(replace_low(q->used_ring().value, value)));
            }
            return;
        case mmio::kQueueDeviceHigh:
            if (Queue* q = configurable_queue("QueueDeviceHigh", queue_sel_, true)) {
                q->set_used_ring(memory::GuestAddress(replace_high(q->used_ring().value, value)));
            }
            return;
        case mmio::kQueueNotify: notify_locked(value); return;
        case mmio::kStatus: write_status(value); return;
        case mmio::kShmSel: return;  // no regions; reads report "absent" for every id
        default:
            log::debug("{}: write of {:#x} to read-only or unknown register {:#x} ignored", name_, value, offset);
            return;
    }
}

std::string mmio_cmdline_entry(uint64_t base, uint32_t gsi) {
    return fmt::format("virtio_mmio.device=4K@{:#x}:{}", base, gsi);
}

}  // namespace embervm::virtio
