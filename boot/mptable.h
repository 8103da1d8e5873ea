// The Intel MultiProcessor Specification 1.4 table at layout::kEbdaStart: how an SMP guest
// without ACPI finds its CPUs, its I/O APIC and how ISA IRQs are wired to it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "memory/guest_memory.h"

namespace embervm::boot {

// MP floating pointer structure (16 bytes, on a 16-byte boundary in the scanned areas).
struct [[gnu::packed]] MpFloatingPointer {
    char signature[4];  // "_MP_"
    uint32_t config_table;
    uint8_t length;     // in 16-byte units: 1
    uint8_t spec_rev;   // 4 (version 1.4)
    uint8_t checksum;   // all 16 bytes sum to 0
    uint8_t feature1;   // 0: a configuration table is present
    uint8_t feature2;   // bit 7 IMCR present (PIC mode); 0: virtual wire mode
    uint8_t feature3[3];
};
static_assert(sizeof(MpFloatingPointer) == 16);

// MP configuration table header.
struct [[gnu::packed]] MpConfigHeader {
    char signature[4];  // "PCMP"
    uint16_t base_length;  // header + entries
    uint8_t spec_rev;
    uint8_t checksum;      // the base table sums to 0
    char oem_id[8];
    char product_id[12];
    uint32_t oem_table;
    uint16_t oem_table_size;
    uint16_t entry_count;
    uint32_t lapic_addr;
    uint16_t ext_length;
    uint8_t ext_checksum;
    uint8_t reserved;
};
static_assert(sizeof(MpConfigHeader) == 44);

enum MpEntryType : uint8_t { kMpProcessor = 0, kMpBus = 1, kMpIoapic = 2, kMpIoInterrupt = 3, kMpLocalInterrupt = 4 };
enum MpInterruptType : uint8_t { kMpIntInt = 0, kMpIntNmi = 1, kMpIntSmi = 2, kMpIntExtInt = 3 };

struct [[gnu::packed]] MpProcessorEntry {
    uint8_t type;  // kMpProcessor
    uint8_t apic_id;
    uint8_t apic_version;
    uint8_t cpu_flags;  // bit 0 enabled, bit 1 bootstrap processor
    uint32_t cpu_signature;
    uint32_t feature_flags;
    uint32_t reserved[2];
};
static_assert(sizeof(MpProcessorEntry) == 20);

struct [[gnu::packed]] MpBusEntry {
    uint8_t type;  // kMpBus
    uint8_t bus_id;
    char bus_type[6];  // "ISA   "
};
static_assert(sizeof(MpBusEntry) == 8);

struct [[gnu::packed]] MpIoapicEntry {
    uint8_t type;  // kMpIoapic
    uint8_t id;
    uint8_t version;
    uint8_t flags;  // bit 0 enabled
    uint32_t address;
};
static_assert(sizeof(MpIoapicEntry) == 8);

// I/O interrupt assignment (kMpIoInterrupt) and local interrupt assignment (kMpLocalInterrupt)
// entries share this layout; dst_id is an I/O APIC id or a local APIC id (0xff: all).
struct [[gnu::packed]] MpInterruptEntry {
    uint8_t type;
    uint8_t irq_type;  // MpInterruptType
    uint16_t flags;    // polarity bits 0-1, trigger bits 2-3; 0: as the bus says
    uint8_t src_bus;
    uint8_t src_irq;
    uint8_t dst_id;
    uint8_t dst_pin;
};
static_assert(sizeof(MpInterruptEntry) == 8);

inline constexpr uint8_t kMpSpecRev = 4;
inline constexpr uint8_t kMpApicVersion = 0x14;     // integrated local APIC
inline constexpr uint8_t kMpIoapicVersion = 0x11;   // KVM's IOAPIC
inline constexpr uint8_t kMpIsaBusId = 0;
// I/O APIC pins described: ISA IRQs 0-15 and GSIs 16-23 (virtio-mmio devices), each routed to
// the pin of the same number, as KVM's default GSI routing does.
inline constexpr unsigned kMpIoapicPins = 24;
// The whole table must fit in the EBDA's first KiB (the floating pointer is found by a scan
// of [639 KiB, 640 KiB) and the config table stays in the e820-reserved area with it).
inline constexpr uint64_t kMpTableMaxSize = 0x400;

// Size of the MP table for `vcpus` vCPUs.
size_t mptable_size(unsigned vcpus);

// The largest vCPU count whose MP table fits in kMpTableMaxSize.
unsigned mptable_max_vcpus();

// Builds the MP table bytes (floating pointer followed by the configuration table) for a
// guest with `vcpus` vCPUs (APIC IDs 0..vcpus-1, vCPU 0 the BSP) and its I/O APIC (id = vcpus),
// as it must appear at guest address `addr`. Throws Error if vcpus is 0 or too many.
std::vector<uint8_t> build_mptable(unsigned vcpus, uint64_t addr);

// Writes build_mptable(vcpus, kEbdaStart) at layout::kEbdaStart.
void write_mptable(const memory::GuestMemory& mem, unsigned vcpus);

}  // namespace embervm::boot
