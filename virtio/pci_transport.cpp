// virtio-pci (modern) transport: PCI configuration space with the virtio and MSI-X
// capabilities, and the BAR holding common config, ISR, device config, notifications and the
// MSI-X table.
#include "virtio/pci_transport.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "virtio/saved_state.h"
#include "vmm/sys/log.h"

namespace embervm::virtio {

namespace {

namespace pci = devices::pci;
using namespace pci_layout;

uint32_t class_code_for(uint32_t device_type) {
    switch (device_type) {
        case device_id::kNet: return 0x020000;      // network controller, ethernet
        case device_id::kBlock: return 0x018000;    // mass storage, other
        case device_id::kConsole: return 0x078000;  // communication, other
        default: return 0xff0000;                   // unassigned class
    }
}

// A virtio_pci_cap body (everything after cap_vndr and cap_next; spec 4.1.4).
std::vector<uint8_t> virtio_cap(uint8_t cfg_type, uint64_t offset, uint64_t length, bool notify) {
    std::vector<uint8_t> b(notify ? 18 : 14, 0);
    b[0] = static_cast<uint8_t>(2 + b.size());  // cap_len
    b[1] = cfg_type;
    b[2] = static_cast<uint8_t>(kBar);
    const auto off = static_cast<uint32_t>(offset);
    const auto len = static_cast<uint32_t>(length);
    std::memcpy(&b[6], &off, 4);
    std::memcpy(&b[10], &len, 4);
    if (notify) std::memcpy(&b[14], &kNotifyOffMultiplier, 4);
    return b;
}

// A common-config field: its offset and width.
struct Field {
    uint64_t offset;
    size_t width;
};
constexpr Field kFields[] = {
    {common_cfg::kDeviceFeatureSelect, 4}, {common_cfg::kDeviceFeature, 4},   {common_cfg::kDriverFeatureSelect, 4},
    {common_cfg::kDriverFeature, 4},       {common_cfg::kConfigMsixVector, 2}, {common_cfg::kNumQueues, 2},
    {common_cfg::kDeviceStatus, 1},        {common_cfg::kConfigGeneration, 1}, {common_cfg::kQueueSelect, 2},
    {common_cfg::kQueueSize, 2},           {common_cfg::kQueueMsixVector, 2},  {common_cfg::kQueueEnable, 2},
    {common_cfg::kQueueNotifyOff, 2},      {common_cfg::kQueueDesc, 8},        {common_cfg::kQueueDriver, 8},
    {common_cfg::kQueueDevice, 8},         {common_cfg::kQueueNotifyData, 2},  {common_cfg::kQueueReset, 2},
};

// Whether an access of `width` at `offset` is a whole field, or a 32-bit half of a 64-bit one.
bool valid_common_access(uint64_t offset, size_t width) {
    for (const auto& f : kFields) {
        if (offset == f.offset && width == f.width) return true;
        if (f.width == 8 && width == 4 && (offset == f.offset || offset == f.offset + 4)) return true;
    }
    return false;
}

uint64_t load(std::span<const uint8_t> data) {
    uint64_t v = 0;
    std::memcpy(&v, data.data(), std::min(data.size(), sizeof(v)));
    return v;
}

void store(std::span<uint8_t> data, uint64_t v) { std::memcpy(data.data(), &v, std::min(data.size(), sizeof(v))); }

// Reads or replaces the 32-bit half at `offset - base` (0 or 4) of a 64-bit value, or all of it.
uint64_t part_of(uint64_t value, uint64_t rel, size_t width) {
    if (width == 8) return value;
    return rel == 0 ? static_cast<uint32_t>(value) : value >> 32;
}
uint64_t with_part(uint64_t old, uint64_t rel, size_t width, uint64_t v) {
    if (width == 8) return v;
    return rel == 0 ? replace_low(old, static_cast<uint32_t>(v)) : replace_high(old, static_cast<uint32_t>(v));
}

}  // namespace

PciTransport::PciTransport(const memory::GuestMemory& mem, std::shared_ptr<VirtioDevice> device,
                           std::shared_ptr<pci::MsiVectors> vectors, vmm::EventLoop* loop)
    : TransportCore(mem, std::move(device), loop),
      msix_(static_cast<uint16_t>(std::min<size_t>(num_queues() + 1, pci::kMsixMaxVectors)), std::move(vectors)),
      config_(pci::PciIdentity{.vendor_id = kVendorId,
                               .device_id = static_cast<uint16_t>(kDeviceIdBase + device_->device_type()),
                               .class_code = class_code_for(device_->device_type()),
                               .revision = 1,  // non-transitional (spec 4.1.2.1)
                               .subsystem_vendor_id = kVendorId,
                               .subsystem_id = 0x40}),
      queue_vectors_(std::make_unique<std::atomic<uint16_t>[]>(num_queues())),
      queue_irqfds_(num_queues(), -1) {
    if (num_queues() + 1 > pci::kMsixMaxVectors || uint64_t{num_queues()} * kNotifyOffMultiplier > kMsixTable - kNotify) {
        throw std::invalid_argument(fmt::format("{}: too many queues for virtio-pci ({})", name_, num_queues()));
    }
    for (uint16_t i = 0; i < num_queues(); ++i) queue_vectors_[i].store(kNoVector);
    config_.add_memory_bar64(kBar, kBarSize);
    config_.add_capability(pci::cap_id::kVendorSpecific, virtio_cap(kCapCommon, kCommonCfg, kCommonCfgSize, false));
    config_.add_capability(pci::cap_id::kVendorSpecific,
                           virtio_cap(kCapNotify, kNotify, uint64_t{num_queues()} * kNotifyOffMultiplier, true));
    config_.add_capability(pci::cap_id::kVendorSpecific, virtio_cap(kCapIsr, kIsr, 1, false));
    config_.add_capability(pci::cap_id::kVendorSpecific, virtio_cap(kCapDevice, kDeviceCfg, kDeviceCfgSize, false));
    // MSI-X: message control (table size N-1; enable and function mask writable), table and
    // PBA offsets in BAR 0 (BIR 0).
    std::array<uint8_t, 10> msix{};
    const uint16_t control = static_cast<uint16_t>(msix_.num_vectors() - 1);
    const auto table = static_cast<uint32_t>(kMsixTable | kBar);
    const auto pba = static_cast<uint32_t>(kMsixPba | kBar);
    std::memcpy(&msix[0], &control, 2);
    std::memcpy(&msix[2], &table, 4);
    std::memcpy(&msix[6], &pba, 4);
    const std::array<uint8_t, 10> msix_writable{0, static_cast<uint8_t>((pci::kMsixEnable | pci::kMsixFunctionMask) >> 8)};
    msix_cap_ = config_.add_capability(pci::cap_id::kMsix, msix, msix_writable);
}

// ---------------------------------------------------------------------------------------
// PCI function

void PciTransport::config_read(uint16_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(config_mutex_);
    config_.read(offset, data);
}

void PciTransport::config_write(uint16_t offset, std::span<const uint8_t> data) {
    const uint16_t control = msix_cap_ + 2;
    const bool msix_control = offset < control + 2 && offset + data.size() > control;
    {
        std::lock_guard lock(config_mutex_);
        config_.write(offset, data);
        if (msix_control) msix_.set_control(config_.read16(control));
    }
    if (msix_control) {
        std::lock_guard lock(mutex_);
        update_queue_irqfds_locked();
    }
}

std::array<std::optional<uint64_t>, pci::kNumBars> PciTransport::bar_addresses() const {
    std::lock_guard lock(config_mutex_);
    std::array<std::optional<uint64_t>, pci::kNumBars> a{};
    a[kBar] = config_.bar_address(kBar);
    return a;
}

std::array<uint64_t, pci::kNumBars> PciTransport::bar_sizes() const {
    std::array<uint64_t, pci::kNumBars> s{};
    s[kBar] = kBarSize;
    return s;
}

void PciTransport::assign_bar(unsigned bar, uint64_t address) {
    std::lock_guard lock(config_mutex_);
    config_.set_bar_address(bar, address);
}

void PciTransport::bar_decoded(unsigned bar, std::optional<uint64_t> address) {
    if (bar != kBar || !notify_moved_) return;
    notify_moved_(address ? std::optional<uint64_t>(*address + kNotify) : std::nullopt);
}

void PciTransport::bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), uint8_t{0});
    if (bar != kBar) return;
    if (offset < kCommonCfgSize) {
        if (!valid_common_access(offset, data.size())) {
            log::debug("{}: ignoring {}-byte read of common config at {:#x}", name_, data.size(), offset);
            return;
        }
        std::lock_guard lock(mutex_);
        store(data, read_common(offset, data.size()));
    } else if (offset == kIsr) {
        data[0] = static_cast<uint8_t>(take_interrupt_bits());
    } else if (offset >= kDeviceCfg && offset - kDeviceCfg < kDeviceCfgSize &&
               data.size() <= kDeviceCfgSize - (offset - kDeviceCfg)) {
        std::lock_guard lock(mutex_);
        device_->read_config(offset - kDeviceCfg, data);
    } else if (offset >= kMsixTable && offset < kMsixPba) {
        msix_.read_table(offset - kMsixTable, data);
    } else if (offset >= kMsixPba && offset < kBarSize) {
        msix_.read_pba(offset - kMsixPba, data);
    }
}

void PciTransport::bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) {
    if (bar != kBar) return;
    if (offset < kCommonCfgSize) {
        if (!valid_common_access(offset, data.size())) {
            log::debug("{}: ignoring {}-byte write of common config at {:#x}", name_, data.size(), offset);
            return;
        }
        std::lock_guard lock(mutex_);
        write_common(offset, data.size(), load(data));
    } else if (offset >= kDeviceCfg && offset - kDeviceCfg < kDeviceCfgSize &&
               data.size() <= kDeviceCfgSize - (offset - kDeviceCfg)) {
        std::lock_guard lock(mutex_);
        device_->write_config(offset - kDeviceCfg, data);
    } else if (offset >= kNotify && offset - kNotify < uint64_t{num_queues()} * kNotifyOffMultiplier) {
        if ((offset - kNotify) % kNotifyOffMultiplier != 0) {
            log::debug("{}: ignoring unaligned notify write at {:#x}", name_, offset);
            return;
        }
        std::lock_guard lock(mutex_);
        notify_locked(static_cast<uint32_t>((offset - kNotify) / kNotifyOffMultiplier));
    } else if (offset >= kMsixTable && offset < kMsixPba) {
        msix_.write_table(offset - kMsixTable, data);
        std::lock_guard lock(mutex_);
        update_queue_irqfds_locked();
    } else {
        log::debug("{}: ignoring {}-byte write at BAR offset {:#x}", name_, data.size(), offset);
    }
}

// ---------------------------------------------------------------------------------------
// Common configuration (mutex_ held)

uint16_t PciTransport::checked_vector(uint64_t value) const {
    return value < msix_.num_vectors() ? static_cast<uint16_t>(value) : kNoVector;
}

uint64_t PciTransport::read_common(uint64_t offset, size_t width) {
    namespace c = common_cfg;
    const bool have_queue = queue_select_ < queues_.size();
    const Queue* q = have_queue ? &queues_[queue_select_] : nullptr;
    auto address_field = [&](uint64_t base, uint64_t value) { return part_of(value, offset - base, width); };
    if (offset >= c::kQueueDesc && offset < c::kQueueDesc + 8) {
        return q != nullptr ? address_field(c::kQueueDesc, q->desc_table().value) : 0;
    }
    if (offset >= c::kQueueDriver && offset < c::kQueueDriver + 8) {
        return q != nullptr ? address_field(c::kQueueDriver, q->avail_ring().value) : 0;
    }
    if (offset >= c::kQueueDevice && offset < c::kQueueDevice + 8) {
        return q != nullptr ? address_field(c::kQueueDevice, q->used_ring().value) : 0;
    }
    switch (offset) {
        case c::kDeviceFeatureSelect: return device_feature_select_;
        case c::kDeviceFeature: return device_features_word(device_feature_select_);
        case c::kDriverFeatureSelect: return driver_feature_select_;
        case c::kDriverFeature:
            return driver_feature_select_ < 2 ? part_of(driver_features_locked(), driver_feature_select_ * 4, 4) : 0;
        case c::kConfigMsixVector: return config_vector_.load();
        case c::kNumQueues: return num_queues();
        case c::kDeviceStatus: return status() & 0xff;
        case c::kConfigGeneration: return config_generation() & 0xff;
        case c::kQueueSelect: return queue_select_;
        case c::kQueueSize: return q != nullptr ? q->size() : 0;
        case c::kQueueMsixVector: return have_queue ? queue_vectors_[queue_select_].load() : kNoVector;
        case c::kQueueEnable: return q != nullptr && q->ready() ? 1 : 0;
        case c::kQueueNotifyOff:
        case c::kQueueNotifyData: return have_queue ? queue_select_ : 0;
        default: return 0;  // queue_reset: not offered
    }
}

void PciTransport::write_common(uint64_t offset, size_t width, uint64_t value) {
    namespace c = common_cfg;
    auto address_field = [&](const char* reg, uint64_t base, auto get, auto set) {
        if (Queue* q = configurable_queue(reg, queue_select_, true)) {
            set(*q, memory::GuestAddress(with_part(get(*q).value, offset - base, width, value)));
        }
    };
    if (offset >= c::kQueueDesc && offset < c::kQueueDesc + 8) {
        address_field("queue_desc", c::kQueueDesc, [](Queue& q) { return q.desc_table(); },
                      [](Queue& q, memory::GuestAddress a) { q.set_desc_table(a); });
        return;
    }
    if (offset >= c::kQueueDriver && offset < c::kQueueDriver + 8) {
        address_field("queue_driver", c::kQueueDriver, [](Queue& q) { return q.avail_ring(); },
                      [](Queue& q, memory::GuestAddress a) { q.set_avail_ring(a); });
        return;
    }
    if (offset >= c::kQueueDevice && offset < c::kQueueDevice + 8) {
        address_field("queue_device", c::kQueueDevice, [](Queue& q) { return q.used_ring(); },
                      [](Queue& q, memory::GuestAddress a) { q.set_used_ring(a); });
        return;
    }
    switch (offset) {
        case c::kDeviceFeatureSelect: device_feature_select_ = static_cast<uint32_t>(value); return;
        case c::kDriverFeatureSelect: driver_feature_select_ = static_cast<uint32_t>(value); return;
        case c::kDriverFeature:
            write_driver_features_word(driver_feature_select_, static_cast<uint32_t>(value));
            return;
        case c::kConfigMsixVector: config_vector_.store(checked_vector(value)); return;
        case c::kDeviceStatus: write_status(static_cast<uint32_t>(value)); return;
        case c::kQueueSelect: queue_select_ = static_cast<uint16_t>(value); return;
        case c::kQueueSize:
            if (Queue* q = configurable_queue("queue_size", queue_select_, true)) {
                q->set_size(static_cast<uint16_t>(value));  // validated at DRIVER_OK
            }
            return;
        case c::kQueueMsixVector:
            if (queue_select_ < queues_.size()) {
                queue_vectors_[queue_select_].store(checked_vector(value));
                update_queue_irqfds_locked();
            }
            return;
        case c::kQueueEnable:
            if (Queue* q = configurable_queue("queue_enable", queue_select_, false)) {
                if (value != 1) {
                    log::debug("{}: queue_enable write of {} ignored", name_, value);
                    return;
                }
                q->set_ready(true);
            }
            return;
        default:
            log::debug("{}: write of {:#x} to read-only common config field {:#x} ignored", name_, value, offset);
            return;
    }
}

void PciTransport::save_transport_locked(StateWriter& w) const {
    w.put<uint32_t>(state_version::kPci);
    w.put<uint32_t>(device_feature_select_);
    w.put<uint32_t>(driver_feature_select_);
    w.put<uint16_t>(queue_select_);
    w.put<uint16_t>(config_vector_.load());
    w.put<uint16_t>(num_queues());
    for (uint16_t i = 0; i < num_queues(); ++i) w.put<uint16_t>(queue_vectors_[i].load());
    {
        std::lock_guard lock(config_mutex_);
        config_.save_state(w);
    }
    msix_.save_state(w);
}

void PciTransport::restore_transport_locked(StateReader& r) {
    r.get_version(state_version::kPci);
    Restored s;
    // Any selector is one a driver can write (out-of-range ones read as 0 or "none").
    s.device_feature_select = r.get<uint32_t>("device features select");
    s.driver_feature_select = r.get<uint32_t>("driver features select");
    s.queue_select = r.get<uint16_t>("queue select");
    auto vector = [&](std::string_view field, std::string_view whose) {
        const auto v = r.get<uint16_t>(field);
        if (v != kNoVector && v >= msix_.num_vectors()) {
            r.fail(field, fmt::format("{} ({}) is beyond the {} MSI-X vectors", v, whose, msix_.num_vectors()));
        }
        return v;
    };
    s.config_vector = vector("config MSI-X vector", "configuration changes");
    if (const auto n = r.get<uint16_t>("queue vector count"); n != num_queues()) {
        r.fail("queue vector count", fmt::format("{} where this device has {} queues", n, num_queues()));
    }
    for (uint16_t i = 0; i < num_queues(); ++i) {
        s.queue_vectors.push_back(vector("queue MSI-X vector", fmt::format("queue {}", i)));
    }
    {
        std::lock_guard lock(config_mutex_);
        s.config = config_.decode_state(r);
    }
    s.msix = msix_.decode_state(r);
    restored_ = std::move(s);
}

void PciTransport::transport_restored_locked() {
    if (!restored_) return;
    const Restored s = std::move(*restored_);
    restored_.reset();
    device_feature_select_ = s.device_feature_select;
    driver_feature_select_ = s.driver_feature_select;
    queue_select_ = s.queue_select;
    config_vector_.store(s.config_vector);
    for (uint16_t i = 0; i < num_queues(); ++i) queue_vectors_[i].store(s.queue_vectors[i]);
    // The MSI-X table follows the restored message control: its deliverable vectors are routed
    // (KVM_SET_GSI_ROUTING) before anything can be delivered on them.
    std::lock_guard lock(config_mutex_);
    config_.restore(s.config);
    msix_.restore(s.msix, config_.read16(msix_cap_ + 2));
}

void PciTransport::raise_restored_interrupts_locked(uint32_t interrupt_bits) {
    // With MSI-X enabled deliver() signals a queue's vector without the ISR's used-buffer bit, so
    // the saved bits cannot tell whether the driver saw the last used buffers: every queue's
    // vector is signalled once (a spurious MSI costs the driver one look at its ring). A vector
    // the driver masked keeps it pending, as its PBA bit may already have.
    uint32_t raise = interrupt_bits;
    if (activated_locked() && !needs_reset() && msix_.enabled()) raise |= interrupt::kUsedBuffer;
    if (raise == 0) return;
    set_interrupt_bits(interrupt_bits);
    deliver(raise, std::nullopt);
}

void PciTransport::reset_transport_locked() {
    device_feature_select_ = 0;
    driver_feature_select_ = 0;
    queue_select_ = 0;
    config_vector_.store(kNoVector);
    for (uint16_t i = 0; i < num_queues(); ++i) queue_vectors_[i].store(kNoVector);
    // The device forgot its offers in its reset (before this).
    std::fill(queue_irqfds_.begin(), queue_irqfds_.end(), -1);
    restored_.reset();
}

// ---------------------------------------------------------------------------------------
// Direct interrupts (mutex_ held)

void PciTransport::device_activated_locked() { update_queue_irqfds_locked(); }

void PciTransport::update_queue_irqfds_locked() {
    const bool live = activated_locked() && !needs_reset();
    for (uint16_t q = 0; q < num_queues(); ++q) {
        const uint16_t vector = queue_vectors_[q].load();
        const int irqfd = live && vector != kNoVector ? msix_.direct_eventfd(vector) : -1;
        if (irqfd == queue_irqfds_[q]) continue;
        queue_irqfds_[q] = irqfd;
        device_->set_queue_irqfd(q, irqfd);
    }
}

// ---------------------------------------------------------------------------------------
// Interrupts (lock-free but for the MSI-X table's own lock)

void PciTransport::deliver(uint32_t interrupt_bits, std::optional<uint16_t> queue) {
    if (!msix_.enabled()) {
        set_interrupt_bits(interrupt_bits);  // no INTx pin: the driver can only poll the ISR
        return;
    }
    auto signal = [this](uint16_t vector) {
        if (vector != kNoVector) msix_.signal(vector);
    };
    if ((interrupt_bits & interrupt::kUsedBuffer) != 0) {
        if (queue) {
            if (*queue < num_queues()) signal(queue_vectors_[*queue].load());
        } else {
            // Every queue's vector, once each.
            std::vector<uint16_t> done;
            for (uint16_t i = 0; i < num_queues(); ++i) {
                const uint16_t v = queue_vectors_[i].load();
                if (std::find(done.begin(), done.end(), v) == done.end()) {
                    done.push_back(v);
                    signal(v);
                }
            }
        }
    }
    if ((interrupt_bits & interrupt::kConfigChange) != 0) {
        set_interrupt_bits(interrupt::kConfigChange);  // the driver's config handler may read the ISR
        signal(config_vector_.load());
    }
}

}  // namespace embervm::virtio
