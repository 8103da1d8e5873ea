// A PCI function's configuration space: bytes plus write masks.
#include "devices/pci/config_space.h"

#include <bit>
#include <stdexcept>

#include <fmt/format.h>

#include "vmm/sys/state_stream.h"

namespace embervm::devices::pci {

PciConfigSpace::PciConfigSpace(const PciIdentity& id) {
    store16(reg::kVendorId, id.vendor_id);
    store16(reg::kDeviceId, id.device_id);
    bytes_[reg::kRevision] = id.revision;
    bytes_[reg::kClassCode] = static_cast<uint8_t>(id.class_code);
    bytes_[reg::kClassCode + 1] = static_cast<uint8_t>(id.class_code >> 8);
    bytes_[reg::kClassCode + 2] = static_cast<uint8_t>(id.class_code >> 16);
    bytes_[reg::kHeaderType] = 0;  // type 0, single function
    store16(reg::kSubsystemVendorId, id.subsystem_vendor_id);
    store16(reg::kSubsystemId, id.subsystem_id);
    // Command: memory space, bus master and interrupt disable are the driver's (no I/O BARs,
    // so no I/O space). Interrupt line: a scratch byte for the driver. No interrupt pin.
    const uint16_t cmd_mask = command::kMemorySpace | command::kBusMaster | command::kInterruptDisable;
    writable_[reg::kCommand] = static_cast<uint8_t>(cmd_mask);
    writable_[reg::kCommand + 1] = static_cast<uint8_t>(cmd_mask >> 8);
    writable_[reg::kInterruptLine] = 0xff;
}

void PciConfigSpace::set_mask32(uint16_t offset, uint32_t mask) {
    for (unsigned i = 0; i < 4; ++i) writable_[offset + i] = static_cast<uint8_t>(mask >> (8 * i));
}

void PciConfigSpace::add_memory_bar64(unsigned bar, uint64_t size) {
    if (bar + 1 >= kNumBars || bar_sizes_[bar] != 0 || bar_sizes_[bar + 1] != 0 || (bar > 0 && bar_sizes_[bar - 1] != 0 &&
        (read32(reg::kBar0 + 4 * (bar - 1)) & kBarMem64) != 0)) {
        throw std::invalid_argument(fmt::format("PCI: BAR {} is not free for a 64-bit BAR", bar));
    }
    if (size < 0x1000 || !std::has_single_bit(size)) {
        throw std::invalid_argument(fmt::format("PCI: BAR size {:#x} is not a power of two >= 4 KiB", size));
    }
    bar_sizes_[bar] = size;
    const uint64_t mask = ~(size - 1);
    const uint16_t off = reg::kBar0 + 4 * bar;
    store32(off, kBarMem64);
    set_mask32(off, static_cast<uint32_t>(mask) & ~0xfu);
    set_mask32(off + 4, static_cast<uint32_t>(mask >> 32));
}

uint16_t PciConfigSpace::add_capability(uint8_t id, std::span<const uint8_t> body, std::span<const uint8_t> writable) {
    const size_t len = 2 + body.size();
    if (next_cap_ + len > kConfigSize || (!writable.empty() && writable.size() != body.size())) {
        throw std::length_error(fmt::format("PCI: capability {:#x} of {} bytes does not fit", id, len));
    }
    const uint16_t off = next_cap_;
    bytes_[off] = id;
    bytes_[off + 1] = 0;
    for (size_t i = 0; i < body.size(); ++i) {
        bytes_[off + 2 + i] = body[i];
        writable_[off + 2 + i] = writable.empty() ? 0 : writable[i];
    }
    if (last_cap_ == 0) {
        bytes_[reg::kCapabilitiesPointer] = static_cast<uint8_t>(off);
        store16(reg::kStatus, read16(reg::kStatus) | kStatusCapabilitiesList);
    } else {
        bytes_[last_cap_ + 1] = static_cast<uint8_t>(off);
    }
    last_cap_ = off;
    next_cap_ = static_cast<uint16_t>((off + len + 3) & ~size_t{3});  // dword aligned
    return off;
}

void PciConfigSpace::read(uint16_t offset, std::span<uint8_t> out) const {
    for (size_t i = 0; i < out.size(); ++i) {
        out[i] = offset + i < kConfigSize ? bytes_[offset + i] : 0;
    }
}

void PciConfigSpace::write(uint16_t offset, std::span<const uint8_t> data) {
    for (size_t i = 0; i < data.size() && offset + i < kConfigSize; ++i) {
        const uint8_t m = writable_[offset + i];
        bytes_[offset + i] = static_cast<uint8_t>((bytes_[offset + i] & ~m) | (data[i] & m));
    }
}

void PciConfigSpace::save_state(StateWriter& w) const { w.put_bytes(bytes_); }

PciConfigSpace::Bytes PciConfigSpace::decode_state(StateReader& r) const {
    const auto saved = r.get_bytes(kConfigSize, "configuration space");
    Bytes out{};
    for (uint16_t i = 0; i < kConfigSize; ++i) {
        out[i] = saved[i];
        const uint8_t fixed = static_cast<uint8_t>((saved[i] ^ bytes_[i]) & ~writable_[i]);
        if (fixed != 0) {
            r.fail(register_name(i), fmt::format("byte {:#x} is {:#04x}, but bits {:#04x} are not the driver's to "
                                                 "change (this function has {:#04x})",
                                                 i, saved[i], fixed, bytes_[i]));
        }
    }
    return out;
}

std::string PciConfigSpace::register_name(uint16_t offset) const {
    struct Named {
        uint16_t offset, size;
        const char* name;
    };
    static constexpr Named kHeader[] = {
        {reg::kVendorId, 2, "vendor ID"},       {reg::kDeviceId, 2, "device ID"},
        {reg::kCommand, 2, "command"},          {reg::kStatus, 2, "status"},
        {reg::kRevision, 1, "revision"},        {reg::kClassCode, 3, "class code"},
        {reg::kHeaderType, 1, "header type"},   {reg::kSubsystemVendorId, 2, "subsystem vendor ID"},
        {reg::kSubsystemId, 2, "subsystem ID"}, {reg::kCapabilitiesPointer, 1, "capabilities pointer"},
        {reg::kInterruptLine, 1, "interrupt line"}, {reg::kInterruptPin, 1, "interrupt pin"},
    };
    for (const Named& n : kHeader) {
        if (offset >= n.offset && offset < n.offset + n.size) return n.name;
    }
    if (offset >= reg::kBar0 && offset < reg::kBar0 + 4 * kNumBars) {
        return fmt::format("BAR {}", (offset - reg::kBar0) / 4);
    }
    // The capability list as this function built it (never the saved bytes: those are checked).
    uint16_t cap = bytes_[reg::kCapabilitiesPointer];
    while (cap >= reg::kFirstCapability && cap + 1 < kConfigSize) {
        const uint16_t next = bytes_[cap + 1];
        const uint16_t end = next > cap ? next : next_cap_;  // the last one ends where the next would go
        if (offset >= cap && offset < end) {
            if (bytes_[cap] == cap_id::kMsix && (offset == cap + 2 || offset == cap + 3)) return "MSI-X message control";
            return fmt::format("capability {:#x} at {:#x}, byte {}", bytes_[cap], cap, offset - cap);
        }
        if (next <= cap) break;
        cap = next;
    }
    return fmt::format("configuration byte {:#x}", offset);
}

uint64_t PciConfigSpace::bar_size(unsigned bar) const { return bar < kNumBars ? bar_sizes_[bar] : 0; }

std::optional<uint64_t> PciConfigSpace::bar_address(unsigned bar) const {
    if (bar_size(bar) == 0) return std::nullopt;
    const uint16_t off = reg::kBar0 + 4 * bar;
    return (uint64_t{read32(off + 4)} << 32) | (read32(off) & ~0xfu);
}

void PciConfigSpace::set_bar_address(unsigned bar, uint64_t address) {
    const uint64_t size = bar_size(bar);
    if (size == 0) throw std::invalid_argument(fmt::format("PCI: no BAR {}", bar));
    const uint16_t off = reg::kBar0 + 4 * bar;
    const uint64_t a = address & ~(size - 1);
    store32(off, static_cast<uint32_t>(a) | (read32(off) & 0xf));
    store32(off + 4, static_cast<uint32_t>(a >> 32));
}

uint16_t PciConfigSpace::read16(uint16_t offset) const {
    return static_cast<uint16_t>(bytes_[offset] | (bytes_[offset + 1] << 8));
}

uint32_t PciConfigSpace::read32(uint16_t offset) const {
    return uint32_t{read16(offset)} | (uint32_t{read16(offset + 2)} << 16);
}

void PciConfigSpace::store16(uint16_t offset, uint16_t value) {
    bytes_[offset] = static_cast<uint8_t>(value);
    bytes_[offset + 1] = static_cast<uint8_t>(value >> 8);
}

void PciConfigSpace::store32(uint16_t offset, uint32_t value) {
    store16(offset, static_cast<uint16_t>(value));
    store16(offset + 2, static_cast<uint16_t>(value >> 16));
}

}  // namespace embervm::devices::pci
