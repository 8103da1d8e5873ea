// The PCI root bus: configuration access through ports 0xCF8/0xCFC or the ECAM window, and
// BAR decoding in one MMIO window.
#include "devices/pci/pci_bus.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include <fmt/format.h>

#include "vmm/sys/error.h"
#include "vmm/sys/log.h"
#include "vmm/sys/state_stream.h"

namespace embervm::devices::pci {

namespace {

constexpr uint32_t kRootStateVersion = 1;
// The bits of the 0xCF8 address register that hold something: enable, bus, device, function,
// register (dword). The others read as zero.
constexpr uint32_t kConfigAddressBits = 0x80fffffc;

// The host bridge's IDs: an Intel host bridge, as Firecracker and Cloud Hypervisor show.
constexpr PciIdentity kHostBridgeId{.vendor_id = 0x8086, .device_id = 0x0d57, .class_code = 0x060000};

}  // namespace

HostBridge::HostBridge() : config_(kHostBridgeId) {}

void HostBridge::config_read(uint16_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(mutex_);
    config_.read(offset, data);
}

void HostBridge::config_write(uint16_t offset, std::span<const uint8_t> data) {
    std::lock_guard lock(mutex_);
    config_.write(offset, data);
}

void HostBridge::save_state(StateWriter& w) const {
    std::lock_guard lock(mutex_);
    config_.save_state(w);
}

PciConfigSpace::Bytes HostBridge::decode_state(StateReader& r) const {
    std::lock_guard lock(mutex_);
    return config_.decode_state(r);
}

void HostBridge::restore(const PciConfigSpace::Bytes& bytes) {
    std::lock_guard lock(mutex_);
    config_.restore(bytes);
}

void HostBridge::bar_read(unsigned /*bar*/, uint64_t /*offset*/, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), uint8_t{0xff});
}

// ---------------------------------------------------------------------------------------
// The two bus devices

// Ports 0xCF8-0xCFB: the address register (32-bit accesses only: enable bit 31, bus 23:16,
// device 15:11, function 10:8, register 7:2); 0xCFC-0xCFF: the data window onto the dword it
// selects.
class PciRoot::ConfigIo : public vmm::BusDevice {
public:
    explicit ConfigIo(PciRoot& root) : root_(root) {}

    void read(uint64_t offset, std::span<uint8_t> data) override {
        std::fill(data.begin(), data.end(), uint8_t{0xff});
        if (offset < 4) {
            if (offset == 0 && data.size() == 4) {
                const uint32_t a = address_.load();
                std::memcpy(data.data(), &a, 4);
            }
            return;
        }
        uint8_t slot = 0, fn = 0;
        uint16_t reg = 0;
        if (target(offset, data.size(), &slot, &fn, &reg)) root_.config_read(slot, fn, reg, data);
    }

    void write(uint64_t offset, std::span<const uint8_t> data) override {
        if (offset < 4) {
            if (offset == 0 && data.size() == 4) {
                uint32_t a = 0;
                std::memcpy(&a, data.data(), 4);
                address_.store(a & kConfigAddressBits);  // reserved bits read as zero
            }
            return;
        }
        uint8_t slot = 0, fn = 0;
        uint16_t reg = 0;
        if (target(offset, data.size(), &slot, &fn, &reg)) root_.config_write(slot, fn, reg, data);
    }

    uint32_t address() const { return address_.load(); }
    void set_address(uint32_t a) { address_.store(a); }

private:
    // The configuration register an access at `offset` (4..7) reaches, or false (disabled,
    // another bus, or an access that leaves the dword).
    bool target(uint64_t offset, size_t len, uint8_t* slot, uint8_t* fn, uint16_t* reg) const {
        const uint32_t a = address_.load();
        const uint64_t byte = offset - 4;
        if ((a & 0x80000000u) == 0 || ((a >> 16) & 0xff) != 0 || byte + len > 4) return false;
        *slot = static_cast<uint8_t>((a >> 11) & 0x1f);
        *fn = static_cast<uint8_t>((a >> 8) & 0x7);
        *reg = static_cast<uint16_t>((a & 0xfc) + byte);
        return true;
    }

    PciRoot& root_;
    std::atomic<uint32_t> address_{0};
};

// The ECAM window of bus 0: offset bits 19:15 the slot, 14:12 the function, 11:0 the register.
class PciRoot::Ecam : public vmm::BusDevice {
public:
    explicit Ecam(PciRoot& root) : root_(root) {}

    void read(uint64_t offset, std::span<uint8_t> data) override {
        if (!valid(offset, data.size())) {
            std::fill(data.begin(), data.end(), uint8_t{0xff});
            return;
        }
        root_.config_read(slot(offset), function(offset), reg(offset), data);
    }

    void write(uint64_t offset, std::span<const uint8_t> data) override {
        if (valid(offset, data.size())) root_.config_write(slot(offset), function(offset), reg(offset), data);
    }

private:
    // Inside the bus's window, 1, 2 or 4 bytes, naturally aligned (so inside one dword).
    static bool valid(uint64_t offset, size_t len) {
        return offset < kEcamBusSize && (len == 1 || len == 2 || len == 4) && offset % len == 0;
    }
    static uint8_t slot(uint64_t offset) { return static_cast<uint8_t>((offset >> 15) & 0x1f); }
    static uint8_t function(uint64_t offset) { return static_cast<uint8_t>((offset >> 12) & 0x7); }
    static uint16_t reg(uint64_t offset) { return static_cast<uint16_t>(offset & (kEcamFunctionSize - 1)); }

    PciRoot& root_;
};

class PciRoot::Window : public vmm::BusDevice {
public:
    explicit Window(PciRoot& root) : root_(root) {}
    void read(uint64_t offset, std::span<uint8_t> data) override {
        if (!root_.mmio_read(root_.window_base_ + offset, data)) {
            std::fill(data.begin(), data.end(), uint8_t{0xff});
        }
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        root_.mmio_write(root_.window_base_ + offset, data);
    }

private:
    PciRoot& root_;
};

// ---------------------------------------------------------------------------------------

PciRoot::PciRoot(uint64_t window_base, uint64_t window_size)
    : window_base_(window_base),
      window_size_(window_size),
      next_free_(window_base),
      config_io_(std::make_shared<ConfigIo>(*this)),
      ecam_(std::make_shared<Ecam>(*this)),
      window_(std::make_shared<Window>(*this)) {
    host_bridge_ = std::make_shared<HostBridge>();
    slots_[0] = host_bridge_;
}

std::shared_ptr<vmm::BusDevice> PciRoot::config_io() { return config_io_; }
std::shared_ptr<vmm::BusDevice> PciRoot::ecam() { return ecam_; }
std::shared_ptr<vmm::BusDevice> PciRoot::mmio_window() { return window_; }

uint8_t PciRoot::add(std::shared_ptr<PciFunction> function) {
    std::lock_guard lock(config_mutex_);
    const auto free = std::find(slots_.begin() + 1, slots_.end(), nullptr);
    if (free == slots_.end()) {
        throw Error(fmt::format("PCI: no free slot for {} (at most {} devices)", function->name(), kSlots - 1));
    }
    const auto sizes = function->bar_sizes();
    uint64_t cursor = next_free_;
    std::array<uint64_t, kNumBars> addresses{};
    for (unsigned b = 0; b < kNumBars; ++b) {
        if (sizes[b] == 0) continue;
        cursor = (cursor + sizes[b] - 1) & ~(sizes[b] - 1);  // naturally aligned
        if (cursor + sizes[b] > window_base_ + window_size_) {
            throw Error(fmt::format("PCI: no room for {}'s BAR {} ({:#x} bytes) in the {:#x}-byte window",
                                    function->name(), b, sizes[b], window_size_));
        }
        addresses[b] = cursor;
        cursor += sizes[b];
    }
    for (unsigned b = 0; b < kNumBars; ++b) {
        if (sizes[b] != 0) function->assign_bar(b, addresses[b]);
    }
    next_free_ = cursor;
    *free = std::move(function);
    update_decoding();
    return static_cast<uint8_t>(free - slots_.begin());
}

void PciRoot::config_read(uint8_t slot, uint8_t function, uint16_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(config_mutex_);
    if (slot >= kSlots || function != 0 || slots_[slot] == nullptr || offset >= kEcamFunctionSize) {
        std::fill(data.begin(), data.end(), uint8_t{0xff});
        return;
    }
    if (offset >= kConfigSize) {
        std::fill(data.begin(), data.end(), uint8_t{0});  // extended space: no capabilities
        return;
    }
    slots_[slot]->config_read(offset, data);
}

void PciRoot::config_write(uint8_t slot, uint8_t function, uint16_t offset, std::span<const uint8_t> data) {
    std::lock_guard lock(config_mutex_);
    if (slot >= kSlots || function != 0 || slots_[slot] == nullptr || offset >= kConfigSize) {
        return;
    }
    slots_[slot]->config_write(offset, data);
    // Only the command register and the BARs change what is decoded.
    const bool command = offset < reg::kCommand + 2 && offset + data.size() > reg::kCommand;
    const bool bars = offset < reg::kBar0 + 4 * kNumBars && offset + data.size() > reg::kBar0;
    if (command || bars) update_decoding();
}

std::vector<PciRoot::Decoded> PciRoot::enabled_bars() const {
    std::vector<Decoded> out;
    for (unsigned s = 0; s < kSlots; ++s) {
        if (slots_[s] == nullptr) continue;
        uint8_t cmd[2] = {};
        slots_[s]->config_read(reg::kCommand, cmd);
        if ((cmd[0] & command::kMemorySpace) == 0) continue;
        const auto addrs = slots_[s]->bar_addresses();
        const auto sizes = slots_[s]->bar_sizes();
        for (unsigned b = 0; b < kNumBars; ++b) {
            if (addrs[b] && sizes[b] != 0) out.push_back(Decoded{*addrs[b], sizes[b], static_cast<uint8_t>(s), b});
        }
    }
    return out;
}

void PciRoot::update_decoding() {
    // What every function asks for: its programmed BARs, while its memory space is enabled,
    // inside the window (outside it nobody answers).
    std::vector<Decoded> wanted = enabled_bars();
    std::erase_if(wanted, [this](const Decoded& d) { return !in_window(d.base, d.size); });
    // BARs that overlap each other are not decoded at all (neither may capture the other's
    // accesses or ioeventfds).
    std::sort(wanted.begin(), wanted.end(), [](const Decoded& a, const Decoded& b) { return a.base < b.base; });
    std::vector<bool> overlapping(wanted.size(), false);
    for (size_t i = 0; i + 1 < wanted.size(); ++i) {
        for (size_t j = i + 1; j < wanted.size() && wanted[j].base < wanted[i].base + wanted[i].size; ++j) {
            overlapping[i] = overlapping[j] = true;
        }
    }
    std::vector<Decoded> next;
    for (size_t i = 0; i < wanted.size(); ++i) {
        if (!overlapping[i]) {
            next.push_back(wanted[i]);
        } else {
            log::debug("PCI: 00:{:02x}.0 BAR {} at {:#x} overlaps another BAR; not decoded", wanted[i].slot,
                       wanted[i].bar, wanted[i].base);
        }
    }
    std::vector<Decoded> old;
    {
        std::unique_lock lock(decode_mutex_);
        old.swap(decoded_);
        decoded_ = next;
    }
    auto find = [](const std::vector<Decoded>& v, uint8_t slot, unsigned bar) -> std::optional<uint64_t> {
        for (const auto& d : v) {
            if (d.slot == slot && d.bar == bar) return d.base;
        }
        return std::nullopt;
    };
    for (unsigned s = 0; s < kSlots; ++s) {
        if (slots_[s] == nullptr) continue;
        for (unsigned b = 0; b < kNumBars; ++b) {
            const auto before = find(old, static_cast<uint8_t>(s), b);
            const auto after = find(next, static_cast<uint8_t>(s), b);
            if (before != after) slots_[s]->bar_decoded(b, after);
        }
    }
}

void PciRoot::save_state(StateWriter& w) const {
    w.put<uint32_t>(kRootStateVersion);
    w.put<uint32_t>(config_io_->address());
    host_bridge_->save_state(w);
}

PciRoot::Saved PciRoot::decode_state(StateReader& r) const {
    r.get_version(kRootStateVersion);
    Saved s;
    s.config_address = r.get<uint32_t>("config address");
    if ((s.config_address & ~kConfigAddressBits) != 0) {
        r.fail("config address", fmt::format("{:#x} has reserved bits set", s.config_address));
    }
    s.host_bridge = host_bridge_->decode_state(r);
    return s;
}

void PciRoot::restore(const Saved& saved) {
    config_io_->set_address(saved.config_address);
    host_bridge_->restore(saved.host_bridge);
}

void PciRoot::restore_decoding() {
    std::lock_guard lock(config_mutex_);
    for (const Decoded& d : enabled_bars()) {
        if (in_window(d.base, d.size)) continue;
        throw StateError(fmt::format("{}: saved state field 'BAR {}': {:#x} (+{:#x}) is outside the PCI window "
                                     "{:#x}-{:#x}",
                                     slots_[d.slot]->name(), d.bar, d.base, d.size, window_base_,
                                     window_base_ + window_size_ - 1));
    }
    update_decoding();
}

bool PciRoot::in_window(uint64_t base, uint64_t size) const {
    return base >= window_base_ && base - window_base_ <= window_size_ && size <= window_size_ - (base - window_base_);
}

std::optional<uint64_t> PciRoot::decoded_bar(uint8_t slot, unsigned bar) const {
    std::shared_lock lock(decode_mutex_);
    for (const auto& d : decoded_) {
        if (d.slot == slot && d.bar == bar) return d.base;
    }
    return std::nullopt;
}

std::shared_ptr<PciFunction> PciRoot::lookup(uint64_t addr, uint64_t len, unsigned* bar, uint64_t* offset) const {
    std::shared_lock lock(decode_mutex_);
    for (const auto& d : decoded_) {
        if (addr >= d.base && addr - d.base < d.size && len <= d.size - (addr - d.base)) {
            *bar = d.bar;
            *offset = addr - d.base;
            return slots_[d.slot];
        }
    }
    return nullptr;
}

bool PciRoot::mmio_read(uint64_t addr, std::span<uint8_t> data) const {
    unsigned bar = 0;
    uint64_t offset = 0;
    const auto f = lookup(addr, data.size(), &bar, &offset);
    if (f == nullptr) return false;
    f->bar_read(bar, offset, data);
    return true;
}

bool PciRoot::mmio_write(uint64_t addr, std::span<const uint8_t> data) const {
    unsigned bar = 0;
    uint64_t offset = 0;
    const auto f = lookup(addr, data.size(), &bar, &offset);
    if (f == nullptr) return false;
    f->bar_write(bar, offset, data);
    return true;
}

}  // namespace embervm::devices::pci
