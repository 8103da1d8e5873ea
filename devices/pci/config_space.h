// A PCI function's 256-byte configuration space (header type 0): the bytes, and per byte which
// bits the driver may write. BAR sizing falls out of the write masks: a BAR's writable bits are
// the address bits above its size, so writing all ones reads back the size mask with the
// read-only type bits. Capabilities are appended as a linked list from offset 0x40.
//
// Not thread-safe: the owner (a PciFunction) serialises access.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace embervm {
class StateReader;
class StateWriter;
}  // namespace embervm

namespace embervm::devices::pci {

inline constexpr uint16_t kConfigSize = 256;

// Standard header registers (PCI Local Bus 3.0, 6.1).
namespace reg {
inline constexpr uint16_t kVendorId = 0x00;
inline constexpr uint16_t kDeviceId = 0x02;
inline constexpr uint16_t kCommand = 0x04;
inline constexpr uint16_t kStatus = 0x06;
inline constexpr uint16_t kRevision = 0x08;
inline constexpr uint16_t kClassCode = 0x09;  // prog-if, subclass, class (3 bytes)
inline constexpr uint16_t kHeaderType = 0x0e;
inline constexpr uint16_t kBar0 = 0x10;
inline constexpr uint16_t kSubsystemVendorId = 0x2c;
inline constexpr uint16_t kSubsystemId = 0x2e;
inline constexpr uint16_t kCapabilitiesPointer = 0x34;
inline constexpr uint16_t kInterruptLine = 0x3c;
inline constexpr uint16_t kInterruptPin = 0x3d;
inline constexpr uint16_t kFirstCapability = 0x40;
}  // namespace reg

namespace command {
inline constexpr uint16_t kIoSpace = 1;
inline constexpr uint16_t kMemorySpace = 2;
inline constexpr uint16_t kBusMaster = 4;
inline constexpr uint16_t kInterruptDisable = 0x400;
}  // namespace command

inline constexpr uint16_t kStatusCapabilitiesList = 0x10;
inline constexpr unsigned kNumBars = 6;
// Memory BAR type bits: 64-bit (bits 2:1 = 10b).
inline constexpr uint32_t kBarMem64 = 0x4;

namespace cap_id {
inline constexpr uint8_t kMsix = 0x11;
inline constexpr uint8_t kVendorSpecific = 0x09;
}  // namespace cap_id

struct PciIdentity {
    uint16_t vendor_id;
    uint16_t device_id;
    uint32_t class_code;  // class << 16 | subclass << 8 | prog-if
    uint8_t revision = 0;
    uint16_t subsystem_vendor_id = 0;
    uint16_t subsystem_id = 0;
};

class PciConfigSpace {
public:
    explicit PciConfigSpace(const PciIdentity& id);

    // A 64-bit memory BAR in slots `bar` and `bar + 1` of `size` bytes (a power of two, at least
    // 4 KiB so a BAR never shares a page). Throws std::invalid_argument on a bad slot or size.
    void add_memory_bar64(unsigned bar, uint64_t size);
    // Appends a capability: `body` is everything after the ID and next-pointer bytes;
    // `writable` (same length, or empty: read-only) the bits of each body byte the driver may
    // write. Returns the capability's offset. Throws std::length_error when it does not fit.
    uint16_t add_capability(uint8_t id, std::span<const uint8_t> body, std::span<const uint8_t> writable = {});

    // Reads `out.size()` bytes at `offset` (bytes beyond the space read as zero).
    void read(uint16_t offset, std::span<uint8_t> out) const;
    // A driver write: only writable bits change, the rest (and bytes beyond the space) are
    // ignored.
    void write(uint16_t offset, std::span<const uint8_t> data);

    // The size of BAR `bar` (0: not implemented, or the upper half of a 64-bit BAR).
    uint64_t bar_size(unsigned bar) const;
    // The address BAR `bar` holds now (what the driver wrote; nullopt when no memory BAR is
    // there). Whether the function decodes it also depends on memory_enabled().
    std::optional<uint64_t> bar_address(unsigned bar) const;
    // Programs BAR `bar`'s address as firmware would (the low bits below its size are dropped).
    void set_bar_address(unsigned bar, uint64_t address);
    bool memory_enabled() const { return (read16(reg::kCommand) & command::kMemorySpace) != 0; }

    // Snapshots: the 256 bytes as the driver left them. decode_state() checks a saved space
    // against this one (the same function, freshly made): a bit the driver cannot write that
    // differs (an ID, a BAR's type or size bits, a capability's layout, a reserved bit) is a
    // StateError naming the register ("command", "BAR 0", "MSI-X message control"); only
    // restore() changes anything.
    using Bytes = std::array<uint8_t, kConfigSize>;
    void save_state(StateWriter& w) const;
    Bytes decode_state(StateReader& r) const;
    void restore(const Bytes& bytes) { bytes_ = bytes; }
    // The register at `offset` by name, for messages: a header register, or a capability's
    // byte ("capability 0x9 at 0x40, byte 3", "MSI-X message control").
    std::string register_name(uint16_t offset) const;

    uint8_t read8(uint16_t offset) const { return bytes_[offset]; }
    uint16_t read16(uint16_t offset) const;
    uint32_t read32(uint16_t offset) const;
    // Device-side stores, ignoring the write masks (e.g. the MSI-X function mask is the driver's,
    // but a device sets pending or status bits this way).
    void store16(uint16_t offset, uint16_t value);
    void store32(uint16_t offset, uint32_t value);

private:
    void set_mask32(uint16_t offset, uint32_t mask);

    std::array<uint8_t, kConfigSize> bytes_{};
    std::array<uint8_t, kConfigSize> writable_{};
    std::array<uint64_t, kNumBars> bar_sizes_{};
    uint16_t next_cap_ = reg::kFirstCapability;
    uint16_t last_cap_ = 0;  // offset of the last capability (0: none yet)
};

}  // namespace embervm::devices::pci
