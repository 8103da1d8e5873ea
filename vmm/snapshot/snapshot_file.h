// The snapshot file: the saved state of a VM (configuration, vCPUs, irqchip and clocks, devices)
// without its memory, which goes to a file of its own (vmm/snapshot/memory_file.h).
//
// Layout, every integer little-endian (vmm/sys/state_stream.h):
//   magic "EMBERSNP" (8 bytes), u32 format version, string embervm version (the one that wrote it),
//   header (u32 snapshot type, u64 memory size in bytes, u64 creation time in ns since the epoch),
//   u32 section count, then per section: u32 kind, string id, u64 length, payload,
//   u32 CRC-32C of everything before it.
// A file is written to a temporary name beside the target, synced and renamed, so a crash never
// leaves a half-written snapshot under the target's name. Reading checks the magic, the format and
// embervm versions, the checksum and every length before handing back anything: a corrupt,
// truncated or other-version file is a SnapshotError with one line naming what is wrong.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/sys/state_stream.h"

namespace embervm::snapshot {

// The file is unusable: the message says which file and what is wrong with it.
class SnapshotError : public StateError {
public:
    using StateError::StateError;
};

inline constexpr uint32_t kFormatVersion = 1;
// A snapshot file holds saved state, not memory: anything larger is not one of ours.
inline constexpr uint64_t kMaxFileSize = uint64_t{64} << 20;

enum class SnapshotType : uint32_t { Full = 1, Diff = 2 };

enum class SectionKind : uint32_t {
    Config = 1,        // the VmConfig as JSON (id "vm-config")
    Vm = 2,            // irqchip, PIT, kvmclock (id "vm")
    Vcpu = 3,          // one per vCPU (id "vcpu0", ...)
    CpuIdentity = 4,   // the CPUID the guest was given (id "cpuid")
    LegacyDevice = 5,  // UART, i8042, ACPI PM, ... (id "serial", ...)
    VirtioDevice = 6,  // DeviceManager::pause_and_save_devices (id "virtio-blk rootfs", ...)
    PciRoot = 7,       // with enable_pci: the PCI root's own state (id "pci-root", PciRoot::save_state)
};
std::string_view to_string(SectionKind kind);

struct Section {
    SectionKind kind;
    std::string id;
    std::vector<uint8_t> payload;
};

struct SnapshotHeader {
    SnapshotType type = SnapshotType::Full;
    uint64_t mem_size = 0;        // bytes of guest memory the memory file must hold
    uint64_t created_ns = 0;      // CLOCK_REALTIME when it was written
};

struct SnapshotContents {
    std::string embervm_version;  // of the embervm that wrote it
    SnapshotHeader header;
    std::vector<Section> sections;

    // The one section of `kind` named `id`; SnapshotError naming it when it is missing.
    const Section& section(SectionKind kind, std::string_view id) const;
    // Every section of `kind`, in file order.
    std::vector<const Section*> sections_of(SectionKind kind) const;
};

// The file's bytes (what write_snapshot_file writes).
std::vector<uint8_t> encode_snapshot(const SnapshotContents& contents);
// Decodes and checks `bytes`; `name` (the path) starts every error message. `this_version` is the
// embervm version that must have written it (EMBERVM_VERSION; a parameter so tests can vary it).
SnapshotContents decode_snapshot(std::span<const uint8_t> bytes, std::string_view name,
                                 std::string_view this_version = EMBERVM_VERSION);

// Writes `contents` to `path` through a temporary file in the same directory (fsync'd, renamed).
// Throws Error naming the path.
void write_snapshot_file(const std::string& path, const SnapshotContents& contents);
// Reads and decodes `path` (at most kMaxFileSize bytes). Throws Error (cannot read) or
// SnapshotError (not a valid snapshot), both naming the path.
SnapshotContents read_snapshot_file(const std::string& path);

// CRC-32C (Castagnoli) of `bytes`.
uint32_t crc32c(std::span<const uint8_t> bytes);

}  // namespace embervm::snapshot
