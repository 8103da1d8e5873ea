// Laying out and writing the ACPI tables.
#include "boot/acpi/acpi.h"

#include <cstring>

#include <fmt/format.h>

#include "boot/acpi/dsdt.h"
#include "boot/acpi/tables.h"
#include "vmm/sys/error.h"

namespace embervm::boot::acpi {

namespace {

constexpr uint64_t kTableAlignment = 16;

uint64_t align_up(uint64_t v) { return (v + kTableAlignment - 1) & ~(kTableAlignment - 1); }

}  // namespace

AcpiTables build_acpi_tables(const AcpiLayout& guest, uint64_t base_gpa) {
    if (base_gpa % kTableAlignment != 0) {
        throw Error(fmt::format("ACPI tables: base address {:#x} is not 16-byte aligned", base_gpa));
    }
    const std::vector<uint8_t> dsdt = build_dsdt(guest);
    const std::vector<uint8_t> madt = build_madt(guest);
    const std::vector<uint8_t> mcfg = guest.pci ? build_mcfg(*guest.pci) : std::vector<uint8_t>{};
    const size_t xsdt_entries = mcfg.empty() ? 2 : 3;

    // Offsets first: the FADT and XSDT hold addresses of the tables after them.
    const uint64_t xsdt_off = align_up(sizeof(Rsdp));
    const uint64_t fadt_off = align_up(xsdt_off + sizeof(SdtHeader) + xsdt_entries * sizeof(uint64_t));
    const uint64_t madt_off = align_up(fadt_off + sizeof(Fadt));
    const uint64_t mcfg_off = align_up(madt_off + madt.size());
    const uint64_t dsdt_off = align_up(mcfg_off + mcfg.size());
    const uint64_t total = dsdt_off + dsdt.size();
    if (total > kAcpiTablesMaxSize) {
        throw Error(fmt::format("ACPI tables: {} bytes, more than the {:#x} bytes reserved for them", total,
                                kAcpiTablesMaxSize));
    }

    const std::vector<uint8_t> fadt = build_fadt(guest, base_gpa + dsdt_off);
    std::vector<uint64_t> entries{base_gpa + fadt_off, base_gpa + madt_off};
    if (!mcfg.empty()) entries.push_back(base_gpa + mcfg_off);
    const std::vector<uint8_t> xsdt = build_xsdt(entries);
    const Rsdp rsdp = build_rsdp(base_gpa + xsdt_off);

    AcpiTables out;
    out.base_gpa = base_gpa;
    out.rsdp_addr = base_gpa;
    out.bytes.resize(total);
    std::memcpy(out.bytes.data(), &rsdp, sizeof(rsdp));
    out.tables.push_back({"RSD PTR ", base_gpa, sizeof(rsdp)});
    const auto place = [&](const char* sig, uint64_t off, const std::vector<uint8_t>& table) {
        std::memcpy(out.bytes.data() + off, table.data(), table.size());
        out.tables.push_back({sig, base_gpa + off, table.size()});
    };
    place("XSDT", xsdt_off, xsdt);
    place("FACP", fadt_off, fadt);
    place("APIC", madt_off, madt);
    if (!mcfg.empty()) place("MCFG", mcfg_off, mcfg);
    place("DSDT", dsdt_off, dsdt);
    return out;
}

void write_acpi_tables(const memory::GuestMemory& mem, const AcpiTables& tables) {
    mem.write(memory::GuestAddress(tables.base_gpa), tables.bytes);
}

uint64_t write_acpi_tables(const memory::GuestMemory& mem, const AcpiLayout& guest) {
    const AcpiTables tables = build_acpi_tables(guest, kAcpiTablesStart);
    write_acpi_tables(mem, tables);
    return tables.rsdp_addr;
}

}  // namespace embervm::boot::acpi
