// The transport-independent half of a virtio transport: features, status, queues, activation,
// reset and DEVICE_NEEDS_RESET.
#include "virtio/transport_core.h"

#include <exception>
#include <stdexcept>

#include <fmt/format.h>

#include "virtio/saved_state.h"
#include "vmm/sys/log.h"

namespace embervm::virtio {

namespace {

constexpr uint32_t kKnownStatusBits =
    status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk | status::kFailed;

}  // namespace

TransportCore::TransportCore(const memory::GuestMemory& mem, std::shared_ptr<VirtioDevice> device,
                             vmm::EventLoop* loop)
    : mem_(mem),
      device_(std::move(device)),
      name_(device_->name()),
      loop_(loop),
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

TransportCore::~TransportCore() { release_device(); }

void TransportCore::release_device() {
    std::lock_guard lock(mutex_);
    if (activated_) {
        activated_ = false;
        try {
            device_->reset();
        } catch (const std::exception& e) {
            log::error("{}: reset on teardown failed: {}", name_, e.what());
        }
    }
}

void TransportCore::set_queue_events(std::vector<vmm::EventFd> events) {
    std::lock_guard lock(mutex_);
    queue_events_ = std::move(events);
}

uint32_t TransportCore::status() const {
    return status_.load() | (needs_reset_.load() ? status::kDeviceNeedsReset : 0);
}

bool TransportCore::is_activated() const {
    std::lock_guard lock(mutex_);
    return activated_;
}

uint64_t TransportCore::driver_features() const {
    std::lock_guard lock(mutex_);
    return driver_features_;
}

Queue TransportCore::queue(uint16_t index) const {
    std::lock_guard lock(mutex_);
    return queues_.at(index);
}

// ---------------------------------------------------------------------------------------
// Features and queues (mutex_ held)

uint32_t TransportCore::device_features_word(uint32_t sel) const {
    if (sel == 0) return static_cast<uint32_t>(offered_features_);
    if (sel == 1) return static_cast<uint32_t>(offered_features_ >> 32);
    return 0;
}

void TransportCore::write_driver_features_word(uint32_t sel, uint32_t value) {
    const uint32_t s = status_.load();
    if ((s & status::kDriver) == 0 || (s & (status::kFeaturesOk | status::kFailed)) != 0) {
        log::debug("{}: driver features write ignored in status {:#x}", name_, s);
        return;
    }
    if (sel == 0) {
        driver_features_ = replace_low(driver_features_, value);
    } else if (sel == 1) {
        driver_features_ = replace_high(driver_features_, value);
    } else if (value != 0) {
        driver_features_beyond_64_ = true;  // nothing is offered there
    }
}

Queue* TransportCore::configurable_queue(const char* reg, uint32_t index, bool require_not_ready) {
    const uint32_t s = status_.load();
    // Queues are set up after FEATURES_OK and before DRIVER_OK (spec 3.1.1, 4.2.3.2).
    if ((s & status::kFeaturesOk) == 0 || (s & (status::kDriverOk | status::kFailed)) != 0 || needs_reset_.load()) {
        log::debug("{}: {} write ignored in status {:#x}", name_, reg, status());
        return nullptr;
    }
    if (index >= queues_.size()) {
        log::debug("{}: {} write ignored: no queue {}", name_, reg, index);
        return nullptr;
    }
    Queue& q = queues_[index];
    if (require_not_ready && q.ready()) {
        log::debug("{}: {} write ignored: queue {} is ready", name_, reg, index);
        return nullptr;
    }
    return &q;
}

bool TransportCore::features_acceptable() const {
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

// ---------------------------------------------------------------------------------------
// State machine (mutex_ held)

void TransportCore::write_status(uint32_t value) {
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

void TransportCore::activate_locked() {
    if (auto why = activate_device_locked()) device_error(*why);
}

std::optional<std::string> TransportCore::activate_device_locked() {
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
            return fmt::format("queue {}: {}", i, *why);
        }
    }
    if (needs_reset_.load()) {
        return std::nullopt;
    }
    activated_ = true;
    std::vector<int> events;
    for (const auto& e : queue_events_) events.push_back(e.fd());
    try {
        device_->activate(Activation{mem_, queues_, driver_features_, *this, events, loop_});
        log::debug("{}: activated with features {:#x}", name_, driver_features_);
    } catch (const std::exception& e) {
        return fmt::format("activation failed: {}", e.what());
    }
    device_activated_locked();
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------
// Snapshots

void TransportCore::pause() {
    std::lock_guard lock(mutex_);
    device_->pause();
}

void TransportCore::resume() {
    std::lock_guard lock(mutex_);
    device_->resume();
}

std::vector<uint8_t> TransportCore::save_state() const {
    std::lock_guard lock(mutex_);
    const std::vector<uint8_t> device_state = device_->save_state();  // refuses first, by name
    StateWriter transport;
    save_transport_locked(transport);
    StateWriter w;
    w.put<uint32_t>(state_version::kTransport);
    w.put<uint32_t>(device_->device_type());
    w.put<uint64_t>(offered_features_);
    w.put<uint16_t>(num_queues());
    w.put<uint32_t>(status_.load());
    w.put<uint64_t>(driver_features_);
    w.put_bool(driver_features_beyond_64_);
    w.put_bool(activated_);
    w.put<uint32_t>(interrupt_status_.load());
    w.put<uint32_t>(config_generation_.load());
    w.put_bool(needs_reset_.load());
    for (const Queue& q : queues_) q.save_state(w);
    w.put_blob(transport.bytes());
    w.put_blob(device_state);
    return w.take();
}

void TransportCore::restore_state(std::span<const uint8_t> bytes) {
    std::lock_guard lock(mutex_);
    if (activated_ || status_.load() != 0) {
        throw StateError(fmt::format("{}: saved state restored into a device the driver already uses", name_));
    }
    try {
        restore_state_locked(bytes);
    } catch (...) {
        reset_locked();
        throw;
    }
}

void TransportCore::restore_state_locked(std::span<const uint8_t> bytes) {
    StateReader r(bytes, name_);
    r.get_version(state_version::kTransport);
    if (const auto type = r.get<uint32_t>("device type"); type != device_->device_type()) {
        r.fail("device type", fmt::format("{} where this device is {}", type, device_->device_type()));
    }
    if (const auto offered = r.get<uint64_t>("offered features"); offered != offered_features_) {
        r.fail("offered features", fmt::format("{:#x} where this device offers {:#x}", offered, offered_features_));
    }
    if (const auto n = r.get<uint16_t>("queue count"); n != num_queues()) {
        r.fail("queue count", fmt::format("{} where this device has {}", n, num_queues()));
    }
    const auto status = r.get<uint32_t>("status");
    const bool bad_order = ((status & status::kDriver) != 0 && (status & status::kAcknowledge) == 0) ||
                           ((status & status::kFeaturesOk) != 0 && (status & status::kDriver) == 0) ||
                           ((status & status::kDriverOk) != 0 && (status & status::kFeaturesOk) == 0);
    if ((status & ~kKnownStatusBits) != 0 || bad_order) {
        r.fail("status", fmt::format("{:#x} is not a status a driver can set", status));
    }
    const auto driver_features = r.get<uint64_t>("driver features");
    const bool beyond_64 = r.get_bool("driver features beyond 64");
    if ((status & status::kFeaturesOk) != 0 &&
        (beyond_64 || (driver_features & ~offered_features_) != 0 || (driver_features & feature::kVersion1) == 0)) {
        r.fail("driver features", fmt::format("{:#x} were accepted but not offered ({:#x})", driver_features,
                                              offered_features_));
    }
    const bool activated = r.get_bool("activated");
    if (activated && (status & status::kDriverOk) == 0) r.fail("activated", "set without DRIVER_OK");
    const auto interrupt_bits = r.get<uint32_t>("interrupt status");
    if ((interrupt_bits & ~(interrupt::kUsedBuffer | interrupt::kConfigChange)) != 0) {
        r.fail("interrupt status", fmt::format("{:#x} has unknown bits", interrupt_bits));
    }
    const auto generation = r.get<uint32_t>("config generation");
    const bool needs_reset = r.get_bool("needs reset");
    std::vector<Queue> queues;
    for (const uint16_t max : queue_max_sizes_) {
        queues.emplace_back(max);
        queues.back().restore_state(r);
    }
    const auto transport = r.get_blob("transport registers");
    const auto device = r.get_blob("device state");
    r.expect_end();
    StateReader tr(transport, name_);
    restore_transport_locked(tr);
    tr.expect_end();
    device_->restore_state(device);

    queues_ = std::move(queues);
    driver_features_ = driver_features;
    driver_features_beyond_64_ = beyond_64;
    status_.store(status);
    config_generation_.store(generation);
    needs_reset_.store(needs_reset);
    transport_restored_locked();
    if (activated && !needs_reset) {
        if (auto why = activate_device_locked()) throw StateError(fmt::format("{}: {}", name_, *why));
        // Kicks the device may not have seen before the snapshot: a look at every queue is
        // harmless (it finds what is available, or nothing).
        for (size_t i = 0; i < queues_.size(); i++) {
            if (queues_[i].ready()) notify_locked(static_cast<uint32_t>(i));
        }
    }
    raise_restored_interrupts_locked(interrupt_bits);
}

void TransportCore::raise_restored_interrupts_locked(uint32_t interrupt_bits) {
    if (interrupt_bits != 0) {
        // The guest may not have taken the interrupt before the snapshot: raise it again.
        set_interrupt_bits(interrupt_bits);
        deliver(interrupt_bits, std::nullopt);
    }
}

void TransportCore::reset_locked() {
    try {
        device_->reset();
    } catch (const std::exception& e) {
        log::error("{}: device reset failed: {}", name_, e.what());
    }
    for (auto& q : queues_) {
        q.reset();
    }
    driver_features_ = 0;
    driver_features_beyond_64_ = false;
    activated_ = false;
    status_.store(0);
    interrupt_status_.store(0);
    used_pending_since_ns_.store(0);
    needs_reset_.store(false);
    reset_transport_locked();
}

void TransportCore::notify_locked(uint32_t queue_index) {
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
// Interrupts (lock-free)

void TransportCore::set_interrupt_bits(uint32_t interrupt_bits) {
    const uint32_t old = interrupt_status_.fetch_or(interrupt_bits);
    if ((interrupt_bits & ~old & interrupt::kUsedBuffer) != 0) {
        used_pending_since_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count());
    }
}

void TransportCore::clear_interrupt_bits(uint32_t bits) {
    if ((interrupt_status_.fetch_and(~bits) & ~bits & interrupt::kUsedBuffer) == 0) {
        used_pending_since_ns_.store(0);
    }
}

uint32_t TransportCore::take_interrupt_bits() {
    const uint32_t bits = interrupt_status_.exchange(0);
    used_pending_since_ns_.store(0);
    return bits;
}

std::optional<std::chrono::steady_clock::time_point> TransportCore::used_interrupt_pending_since() const {
    const int64_t ns = used_pending_since_ns_.load();
    if (ns == 0 || (interrupt_status_.load() & interrupt::kUsedBuffer) == 0) return std::nullopt;
    return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(ns));
}

void TransportCore::signal_used_queue(uint16_t queue_index) { deliver(interrupt::kUsedBuffer, queue_index); }

bool TransportCore::raise_used_again() {
    std::lock_guard lock(mutex_);
    if (!activated_ || needs_reset_.load()) return false;
    deliver(interrupt::kUsedBuffer, std::nullopt);
    return true;
}

void TransportCore::signal_config_change() {
    config_generation_.fetch_add(1);
    deliver(interrupt::kConfigChange, std::nullopt);
}

void TransportCore::device_error(std::string_view reason) {
    if (needs_reset_.exchange(true)) {
        return;  // already broken and reported
    }
    needs_reset_events_.fetch_add(1, std::memory_order_relaxed);
    log::error("{}: {}; device needs reset", name_, reason);
    // Spec 2.1.2: with DRIVER_OK set, tell the driver through a config-change notification.
    if ((status_.load() & status::kDriverOk) != 0) {
        deliver(interrupt::kConfigChange, std::nullopt);
    }
}

}  // namespace embervm::virtio
