// MSI-X table, pending bits and delivery.
#include "devices/pci/msix.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "vmm/sys/state_stream.h"

namespace embervm::devices::pci {

MsixTable::MsixTable(uint16_t num_vectors, std::shared_ptr<MsiVectors> sink)
    : entries_(num_vectors), sink_(std::move(sink)) {
    if (num_vectors == 0 || num_vectors > kMsixMaxVectors) {
        throw std::invalid_argument(fmt::format("MSI-X: {} vectors (1..{})", num_vectors, kMsixMaxVectors));
    }
}

bool MsixTable::deliverable_locked(const Entry& e) const {
    return enabled_ && !function_masked_ && (e.control & 1) == 0;
}

void MsixTable::flush_locked(uint16_t index) {
    Entry& e = entries_[index];
    if (!deliverable_locked(e)) return;
    if (!e.routed) {
        sink_->route(index, e.message);
        e.routed = true;
    }
    if (e.pending) {
        e.pending = false;
        sink_->trigger(index);
    }
}

void MsixTable::read_table(uint64_t offset, std::span<uint8_t> data) const {
    std::fill(data.begin(), data.end(), uint8_t{0});
    if ((data.size() != 4 && data.size() != 8) || offset % data.size() != 0 || offset >= table_size()) return;
    std::lock_guard lock(mutex_);
    const Entry& e = entries_[offset / kMsixEntrySize];
    uint32_t words[4] = {static_cast<uint32_t>(e.message.address), static_cast<uint32_t>(e.message.address >> 32),
                         e.message.data, e.control};
    std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(words) + offset % kMsixEntrySize, data.size());
}

void MsixTable::write_table(uint64_t offset, std::span<const uint8_t> data) {
    if ((data.size() != 4 && data.size() != 8) || offset % data.size() != 0 || offset >= table_size()) return;
    std::lock_guard lock(mutex_);
    const auto index = static_cast<uint16_t>(offset / kMsixEntrySize);
    Entry& e = entries_[index];
    uint32_t words[4] = {static_cast<uint32_t>(e.message.address), static_cast<uint32_t>(e.message.address >> 32),
                         e.message.data, e.control};
    std::memcpy(reinterpret_cast<uint8_t*>(words) + offset % kMsixEntrySize, data.data(), data.size());
    const MsiMessage message{(uint64_t{words[1]} << 32) | words[0], words[2]};
    if (message != e.message) {
        e.message = message;
        e.routed = false;
    }
    e.control = words[3] & 1;  // only the mask bit is defined
    flush_locked(index);
}

void MsixTable::read_pba(uint64_t offset, std::span<uint8_t> data) const {
    std::fill(data.begin(), data.end(), uint8_t{0});
    if ((data.size() != 4 && data.size() != 8) || offset % data.size() != 0 || offset >= pba_size()) return;
    std::lock_guard lock(mutex_);
    for (size_t byte = 0; byte < data.size(); ++byte) {
        for (unsigned bit = 0; bit < 8; ++bit) {
            const uint64_t v = (offset + byte) * 8 + bit;
            if (v < entries_.size() && entries_[v].pending) data[byte] |= static_cast<uint8_t>(1u << bit);
        }
    }
}

void MsixTable::set_control(uint16_t message_control) {
    std::lock_guard lock(mutex_);
    set_control_locked(message_control);
}

void MsixTable::set_control_locked(uint16_t message_control) {
    enabled_ = (message_control & kMsixEnable) != 0;
    function_masked_ = (message_control & kMsixFunctionMask) != 0;
    for (uint16_t i = 0; i < entries_.size(); ++i) flush_locked(i);
}

bool MsixTable::enabled() const {
    std::lock_guard lock(mutex_);
    return enabled_;
}

bool MsixTable::signal(uint16_t index) {
    std::lock_guard lock(mutex_);
    if (!enabled_ || index >= entries_.size()) return false;
    entries_[index].pending = true;
    flush_locked(index);
    return true;
}

void MsixTable::reset() {
    std::lock_guard lock(mutex_);
    for (auto& e : entries_) e = Entry{};
    enabled_ = false;
    function_masked_ = false;
}

int MsixTable::direct_eventfd(uint16_t index) const {
    std::lock_guard lock(mutex_);
    if (index >= entries_.size() || !deliverable_locked(entries_[index]) || !entries_[index].routed) return -1;
    return sink_->irqfd(index);
}

void MsixTable::save_state(StateWriter& w) const {
    std::lock_guard lock(mutex_);
    w.put<uint16_t>(num_vectors());
    for (const Entry& e : entries_) {
        w.put<uint64_t>(e.message.address);
        w.put<uint32_t>(e.message.data);
        w.put<uint32_t>(e.control);
    }
    std::vector<uint8_t> pba(pba_size(), 0);
    for (size_t i = 0; i < entries_.size(); ++i) {
        if (entries_[i].pending) pba[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
    }
    w.put_bytes(pba);
}

MsixTable::Saved MsixTable::decode_state(StateReader& r) const {
    const uint16_t n = num_vectors();
    if (const auto count = r.get<uint16_t>("MSI-X vector count"); count != n) {
        r.fail("MSI-X vector count", fmt::format("{} where this function has {}", count, n));
    }
    Saved s;
    for (uint16_t i = 0; i < n; ++i) {
        const auto address = r.get<uint64_t>("MSI-X entry address");
        const auto data = r.get<uint32_t>("MSI-X entry data");
        const auto control = r.get<uint32_t>("MSI-X entry vector control");
        if ((control & ~1u) != 0) {
            r.fail("MSI-X entry vector control", fmt::format("{:#x} in entry {} has reserved bits", control, i));
        }
        s.messages.push_back({address, data});
        s.controls.push_back(control);
    }
    const auto pba = r.get_bytes(pba_size(), "MSI-X PBA");
    for (size_t bit = 0; bit < pba.size() * 8; ++bit) {
        const bool set = ((pba[bit / 8] >> (bit % 8)) & 1) != 0;
        if (bit < n) {
            s.pending.push_back(set);
        } else if (set) {
            r.fail("MSI-X PBA", fmt::format("pending bit {} is beyond the {} vectors", bit, n));
        }
    }
    return s;
}

void MsixTable::restore(const Saved& saved, uint16_t message_control) {
    std::lock_guard lock(mutex_);
    if (saved.messages.size() != entries_.size() || saved.controls.size() != entries_.size() ||
        saved.pending.size() != entries_.size()) {
        throw std::invalid_argument("MSI-X: restore of a table decoded for another function");
    }
    for (size_t i = 0; i < entries_.size(); ++i) {
        entries_[i] = Entry{saved.messages[i], saved.controls[i], saved.pending[i], false};
    }
    set_control_locked(message_control);
}

bool MsixTable::masked(uint16_t index) const {
    std::lock_guard lock(mutex_);
    return (entries_.at(index).control & 1) != 0;
}

bool MsixTable::pending(uint16_t index) const {
    std::lock_guard lock(mutex_);
    return entries_.at(index).pending;
}

MsiMessage MsixTable::message(uint16_t index) const {
    std::lock_guard lock(mutex_);
    return entries_.at(index).message;
}

}  // namespace embervm::devices::pci
