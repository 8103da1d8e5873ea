// virtio-mmio (version 2) transport: register file, feature negotiation, status state
// machine, queue configuration and interrupts in front of one VirtioDevice.
#include "virtio/mmio_transport.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <stdexcept>

#include <fmt/format.h>

#include "vmm/sys/log.h"

namespace embervm::virtio {

namespace {

constexpr uint32_t kKnownStatusBits =
    status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk | status::kFailed;

uint64_t replace_low(uint64_t old, uint32_t low) { return (old & 0xffffffff00000000ULL) | low; }
uint64_t replace_high(uint64_t old, uint32_t high) { return (old & 0xffffffffULL) | (uint64_t{high} << 32); }

}  // namespace

MmioTransport::MmioTransport(const memory::GuestMemory& mem, std::shared_ptr<VirtioDevice> device,
                             std::shared_ptr<devices::IrqLine> irq, vmm::EventLoop* loop)
    : mem_(mem),
      device_(std::move(device)),
      irq_(std::move(irq)),
      loop_(loop),
      name_(device_->name()),
      offered_features_(device_->available_features() | feature::kVersion1),
      queue_max_sizes_(device_->queue_max_sizes()) {
    if (queue_max_sizes_.size() > 0xffff) {
        throw std::invalid_argument(fmt::format("{}: too many queues ({})", name_, queue_max_sizes_.size()));
    }
    queues_.reserve(queue_max_sizes_.size());
    for (const uint16_t max : queue_max_sizes_) {
        queues_.emplace_back(max);  // throws std::invalid_argument on a bad max size
    }
}

MmioTransport::~MmioTransport() {
    std::lock_guard lock(mutex_);
    if (activated_) {
        try {
            device_->reset();
        } catch (const std::exception& e) {
            log::error("{}: reset on teardown failed: {}", name_, e.what());
        }
    }
}

void MmioTransport::set_queue_events(std::vector<vmm::EventFd> events) {
    std::lock_guard lock(mutex_);
    queue_events_ = std::move(events);
}

uint32_t MmioTransport::status() const {
    return status_.load() | (needs_reset_.load() ? status::kDeviceNeedsReset : 0);
}

bool MmioTransport::is_activated() const {
    std::lock_guard lock(mutex_);
    return activated_;
}

uint64_t MmioTransport::driver_features() const {
    std::lock_guard lock(mutex_);
    return driver_features_;
}

Queue MmioTransport::queue(uint16_t index) const {
    std::lock_guard lock(mutex_);
    return queues_.at(index);
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
        case mmio::kInterruptStatus: return interrupt_status_.load();
        case mmio::kStatus: return status();
        case mmio::kConfigGeneration: return config_generation_.load();
        // No shared memory regions: a length (and base) of all ones means "no such region".
        case mmio::kShmLenLow:
        case mmio::kShmLenHigh:
        case mmio::kShmBaseLow:
        case mmio::kShmBaseHigh: return 0xffffffff;
        default: break;
    }
    std::lock_guard lock(mutex_);
    switch (offset) {
        case mmio::kDeviceFeatures:
            if (device_features_sel_ == 0) return static_cast<uint32_t>(offered_features_);
            if (device_features_sel_ == 1) return static_cast<uint32_t>(offered_features_ >> 32);
            return 0;
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
        if ((interrupt_status_.fetch_and(~value) & ~value & interrupt::kUsedBuffer) == 0) {
            used_pending_since_ns_.store(0);
        }
        return;
    }
    std::lock_guard lock(mutex_);
    switch (offset) {
        case mmio::kDeviceFeaturesSel: device_features_sel_ = value; return;
        case mmio::kDriverFeaturesSel: driver_features_sel_ = value; return;
        case mmio::kDriverFeatures: {
            const uint32_t s = status_.load();
            if ((s & status::kDriver) == 0 || (s & (status::kFeaturesOk | status::kFailed)) != 0) {
                log::debug("{}: DriverFeatures write ignored in status {:#x}", name_, s);
                return;
            }
            if (driver_features_sel_ == 0) {
                driver_features_ = replace_low(driver_features_, value);
            } else if (driver_features_sel_ == 1) {
                driver_features_ = replace_high(driver_features_, value);
            } else if (value != 0) {
                driver_features_beyond_64_ = true;  // nothing is offered there
            }
            return;
        }
        case mmio::kQueueSel: queue_sel_ = value; return;
        case mmio::kQueueNum:
            if (Queue* q = configurable_queue("QueueNum", true)) {
                q->set_size(value <= 0xffff ? static_cast<uint16_t>(value) : 0);  // 0: refused at DRIVER_OK
            }
            return;
        case mmio::kQueueReady:
            if (Queue* q = configurable_queue("QueueReady", false)) {
                if (value > 1) {
                    log::debug("{}: QueueReady write of {} ignored", name_, value);
                    return;
                }
                q->set_ready(value == 1);
            }
            return;
        case mmio::kQueueDescLow:
            if (Queue* q = configurable_queue("QueueDescLow", true)) {
                q->set_desc_table(memory::GuestAddress(replace_low(q->desc_table().value, value)));
            }
            return;
        case mmio::kQueueDescHigh:
            if (Queue* q = configurable_queue("QueueDescHigh", true)) {
                q->set_desc_table(memory::GuestAddress(replace_high(q->desc_table().value, value)));
            }
            return;
        case mmio::kQueueDriverLow:
            if (Queue* q = configurable_queue("QueueDriverLow", true)) {
                q->set_avail_ring(memory::GuestAddress(replace_low(q->avail_ring().value, value)));
            }
            return;
        case mmio::kQueueDriverHigh:
            if (Queue* q = configurable_queue("QueueDriverHigh", true)) {
                q->set_avail_ring(memory::GuestAddress(replace_high(q->avail_ring().value, value)));
            }
            return;
        case mmio::kQueueDeviceLow:
            if (Queue* q = configurable_queue("QueueDeviceLow", true)) {
                q->set_used_ring(memory::GuestAddress(replace_low(q->used_ring().value, value)));
            }
            return;
        case mmio::kQueueDeviceHigh:
            if (Queue* q = configurable_queue("QueueDeviceHigh", true)) {
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

// ---------------------------------------------------------------------------------------
// State machine (mutex_ held)

Queue* MmioTransport::configurable_queue(const char* reg, bool require_not_ready) {
    const uint32_t s = status_.load();
    // Queues are set up after FEATURES_OK and before DRIVER_OK (spec 3.1.1, 4.2.3.2).
    if ((s & status::kFeaturesOk) == 0 || (s & (status::kDriverOk | status::kFailed)) != 0 || needs_reset_.load()) {
        log::debug("{}: {} write ignored in status {:#x}", name_, reg, status());
        return nullptr;
    }
    if (queue_sel_ >= queues_.size()) {
        log::debug("{}: {} write ignored: no queue {}", name_, reg, queue_sel_);
        return nullptr;
    }
    Queue& q = queues_[queue_sel_];
    if (require_not_ready && q.ready()) {
        log::debug("{}: {} write ignored: queue {} is ready", name_, reg, queue_sel_);
        return nullptr;
    }
    return &q;
}

bool MmioTransport::features_acceptable() const {
    if (driver_features_beyond_64_) {
        log::warn("{}: driver accepted features beyond bit 63 that were not offered", name_);
        return false;
    }
    if ((driver_features_ & ~offered_features_) != 0) {
        log::warn("{}: driver accepted features {:#x} that were not offered ({:#x})", name_, driver_features_,
                  offered_features_);
        return false;
    }
    if ((driver_features_ & feature::kVersion1) == 0) {
        log::warn("{}: driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)", name_);
        return false;
    }
    return true;
}

void MmioTransport::write_status(uint32_t value) {
    if (value == 0) {
        reset_locked();
        return;
    }
    const uint32_t cur = status_.load();
    // DEVICE_NEEDS_RESET belongs to the device; a driver writing back what it read may echo it.
    const uint32_t requested = value & ~status::kDeviceNeedsReset;
    if ((requested & cur) != cur) {
        log::debug("{}: status write {:#x} would clear bits of {:#x}; ignored (only 0 resets)", name_, value, cur);
        return;
    }
    uint32_t added = requested & ~cur;
    if (added == 0) {
        return;
    }
    const uint32_t next = cur | added;
    const bool bad_order = ((next & status::kDriver) != 0 && (next & status::kAcknowledge) == 0) ||
                           ((next & status::kFeaturesOk) != 0 && (next & status::kDriver) == 0) ||
                           ((next & status::kDriverOk) != 0 && (next & status::kFeaturesOk) == 0);
    if ((added & ~kKnownStatusBits) != 0 || (cur & status::kFailed) != 0 || bad_order) {
        log::debug("{}: invalid status transition {:#x} -> {:#x}; ignored", name_, cur, value);
        return;
    }
    if ((added & status::kFeaturesOk) != 0 && !features_acceptable()) {
        // The driver reads status back and sees FEATURES_OK missing (spec 3.1.1 step 6).
        added &= ~(status::kFeaturesOk | status::kDriverOk);
    }
    status_.store(cur | added);
    if ((added & status::kDriverOk) != 0) {
        activate_locked();
    }
}

void MmioTransport::activate_locked() {
    const bool event_idx = (driver_features_ & feature::kRingEventIdx) != 0;
    const bool indirect = (driver_features_ & feature::kRingIndirectDesc) != 0;
    for (auto& q : queues_) {
        q.set_event_idx_enabled(event_idx);
        q.set_indirect_enabled(indirect);
    }
    for (size_t i = 0; i < queues_.size(); ++i) {
        if (!queues_[i].ready()) {
            continue;
        }
        if (auto why = queues_[i].validate(mem_)) {
            device_error(fmt::format("queue {}: {}", i, *why));
            return;
        }
    }
    if (needs_reset_.load()) {
        return;
    }
    activated_ = true;
    std::vector<int> events;
    for (const auto& e : queue_events_) events.push_back(e.fd());
    try {
        device_->activate(Activation{mem_, queues_, driver_features_, *this, events, loop_});
        log::debug("{}: activated with features {:#x}", name_, driver_features_);
    } catch (const std::exception& e) {
        device_error(fmt::format("activation failed: {}", e.what()));
    }
}

void MmioTransport::reset_locked() {
    try {
        device_->reset();
    } catch (const std::exception& e) {
        log::error("{}: device reset failed: {}", name_, e.what());
    }
    for (auto& q : queues_) {
        q.reset();
    }
    device_features_sel_ = 0;
    driver_features_sel_ = 0;
    queue_sel_ = 0;
    driver_features_ = 0;
    driver_features_beyond_64_ = false;
    activated_ = false;
    status_.store(0);
    interrupt_status_.store(0);
    used_pending_since_ns_.store(0);
    needs_reset_.store(false);
}

void MmioTransport::notify_locked(uint32_t queue_index) {
    if (!activated_ || needs_reset_.load() || queue_index >= queues_.size() || !queues_[queue_index].ready()) {
        log::debug("{}: notification for queue {} ignored", name_, queue_index);
        return;
    }
    try {
        device_->queue_notify(static_cast<uint16_t>(queue_index));
    } catch (const std::exception& e) {
        device_error(fmt::format("queue {}: {}", queue_index, e.what()));
    }
}

// ---------------------------------------------------------------------------------------
// DeviceInterrupt (lock-free)

void MmioTransport::raise(uint32_t interrupt_bits) {
    const uint32_t old = interrupt_status_.fetch_or(interrupt_bits);
    if ((interrupt_bits & ~old & interrupt::kUsedBuffer) != 0) {
        used_pending_since_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count());
    }
    irq_->trigger();
}

std::optional<std::chrono::steady_clock::time_point> MmioTransport::used_interrupt_pending_since() const {
    const int64_t ns = used_pending_since_ns_.load();
    if (ns == 0 || (interrupt_status_.load() & interrupt::kUsedBuffer) == 0) return std::nullopt;
    return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(ns));
}

void MmioTransport::signal_used_queue(uint16_t /*queue_index: one interrupt line for all queues*/) {
    raise(interrupt::kUsedBuffer);
}

bool MmioTransport::raise_used_again() {
    std::lock_guard lock(mutex_);
    if (!activated_ || needs_reset_.load()) return false;
    raise(interrupt::kUsedBuffer);
    return true;
}

void MmioTransport::signal_config_change() {
    config_generation_.fetch_add(1);
    raise(interrupt::kConfigChange);
}

void MmioTransport::device_error(std::string_view reason) {
    if (needs_reset_.exchange(true)) {
        return;  // already broken and reported
    }
    needs_reset_events_.fetch_add(1, std::memory_order_relaxed);
    log::error("{}: {}; device needs reset", name_, reason);
    // Spec 2.1.2: with DRIVER_OK set, tell the driver through a config-change notification.
    if ((status_.load() & status::kDriverOk) != 0) {
        raise(interrupt::kConfigChange);
    }
}

std::string mmio_cmdline_entry(uint64_t base, uint32_t gsi) {
    return fmt::format("virtio_mmio.device=4K@{:#x}:{}", base, gsi);
}

}  // namespace embervm::virtio
