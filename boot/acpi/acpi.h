// Entry point of the guest's ACPI tables: builds them as one block and writes it to guest memory.
//
// The block holds RSDP, XSDT, FADT, MADT, MCFG (with PCI) and DSDT, laid out for the guest address it goes to.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "boot/acpi/platform.h"
#include "memory/guest_memory.h"

namespace embervm::boot::acpi {

// Where one table landed in the block.
struct AcpiTablePlacement {
    std::string signature;  // "RSD PTR ", "XSDT", "FACP", "APIC", "MCFG" (with PCI), "DSDT"
    uint64_t addr = 0;
    uint64_t length = 0;
};

struct AcpiTables {
    uint64_t base_gpa = 0;
    std::vector<uint8_t> bytes;  // to be copied to base_gpa; gaps between tables are zero
    uint64_t rsdp_addr = 0;      // for the zero page's acpi_rsdp_addr or PVH's rsdp_paddr
    std::vector<AcpiTablePlacement> tables;  // in the order above
};

// Lays the tables out from `base_gpa` (which must be 16-byte aligned): the RSDP first (so that
// at kAcpiTablesStart a guest scanning the BIOS area finds it), then XSDT (-> FADT, MADT and,
// with PCI, MCFG), FADT (-> DSDT), MADT, MCFG and DSDT, each 16-byte aligned. Throws Error if the guest cannot be
// described (see build_madt, build_dsdt_aml) or the block would exceed kAcpiTablesMaxSize.
AcpiTables build_acpi_tables(const AcpiLayout& guest, uint64_t base_gpa = kAcpiTablesStart);

// Writes `tables` into guest memory at their base_gpa; throws GuestMemoryError if that is not
// guest memory.
void write_acpi_tables(const memory::GuestMemory& mem, const AcpiTables& tables);

// Builds the tables at kAcpiTablesStart, writes them and returns the RSDP's address.
uint64_t write_acpi_tables(const memory::GuestMemory& mem, const AcpiLayout& guest);

}  // namespace embervm::boot::acpi
