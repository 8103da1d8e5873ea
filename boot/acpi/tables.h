// The fixed-layout ACPI tables (RSDP, SDT header, XSDT, FADT, MADT) and their builders.
//
// Layouts from ACPI 6.5 chapter 5.2, as packed structs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "boot/acpi/checksum.h"
#include "boot/acpi/platform.h"

namespace embervm::boot::acpi {

// Root System Description Pointer, ACPI 2.0+ form (section 5.2.5.3).
struct [[gnu::packed]] Rsdp {
    char signature[8];  // "RSD PTR "
    uint8_t checksum;   // the first 20 bytes sum to 0
    char oem_id[6];
    uint8_t revision;  // 2: ACPI 2.0 and later
    uint32_t rsdt_address;  // 0: no RSDT, the XSDT only
    uint32_t length;        // 36
    uint64_t xsdt_address;
    uint8_t extended_checksum;  // all 36 bytes sum to 0
    uint8_t reserved[3];
};
static_assert(sizeof(Rsdp) == 36);
inline constexpr size_t kRsdpChecksumLength = 20;

// System Description Table header (section 5.2.6), at the start of every table but the RSDP.
struct [[gnu::packed]] SdtHeader {
    char signature[4];
    uint32_t length;  // of the whole table, header included
    uint8_t revision;
    uint8_t checksum;  // the whole table sums to 0
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision;
    char creator_id[4];
    uint32_t creator_revision;
};
static_assert(sizeof(SdtHeader) == 36);

// Generic Address Structure (section 5.2.3.2).
struct [[gnu::packed]] GenericAddress {
    uint8_t space_id;  // kGasSystemIo, ...
    uint8_t bit_width;
    uint8_t bit_offset;
    uint8_t access_size;  // kGasAccessByte, ...
    uint64_t address;
};
static_assert(sizeof(GenericAddress) == 12);
inline constexpr uint8_t kGasSystemMemory = 0;
inline constexpr uint8_t kGasSystemIo = 1;
inline constexpr uint8_t kGasAccessByte = 1;

// Fixed ACPI Description Table, revision 6 (section 5.2.9). The PM1/PM2/GPE/PM timer blocks
// stay zero: a hardware-reduced platform has none.
struct [[gnu::packed]] Fadt {
    SdtHeader header;  // "FACP"
    uint32_t firmware_ctrl;
    uint32_t dsdt;
    uint8_t reserved0;
    uint8_t preferred_pm_profile;
    uint16_t sci_int;
    uint32_t smi_cmd;
    uint8_t acpi_enable;
    uint8_t acpi_disable;
    uint8_t s4bios_req;
    uint8_t pstate_cnt;
    uint32_t pm1a_evt_blk;
    uint32_t pm1b_evt_blk;
    uint32_t pm1a_cnt_blk;
    uint32_t pm1b_cnt_blk;
    uint32_t pm2_cnt_blk;
    uint32_t pm_tmr_blk;
    uint32_t gpe0_blk;
    uint32_t gpe1_blk;
    uint8_t pm1_evt_len;
    uint8_t pm1_cnt_len;
    uint8_t pm2_cnt_len;
    uint8_t pm_tmr_len;
    uint8_t gpe0_blk_len;
    uint8_t gpe1_blk_len;
    uint8_t gpe1_base;
    uint8_t cst_cnt;
    uint16_t p_lvl2_lat;
    uint16_t p_lvl3_lat;
    uint16_t flush_size;
    uint16_t flush_stride;
    uint8_t duty_offset;
    uint8_t duty_width;
    uint8_t day_alrm;
    uint8_t mon_alrm;
    uint8_t century;
    uint16_t iapc_boot_arch;
    uint8_t reserved1;
    uint32_t flags;
    GenericAddress reset_reg;
    uint8_t reset_value;
    uint16_t arm_boot_arch;
    uint8_t minor_version;
    uint64_t x_firmware_ctrl;
    uint64_t x_dsdt;
    GenericAddress x_pm1a_evt_blk;
    GenericAddress x_pm1b_evt_blk;
    GenericAddress x_pm1a_cnt_blk;
    GenericAddress x_pm1b_cnt_blk;
    GenericAddress x_pm2_cnt_blk;
    GenericAddress x_pm_tmr_blk;
    GenericAddress x_gpe0_blk;
    GenericAddress x_gpe1_blk;
    GenericAddress sleep_control_reg;
    GenericAddress sleep_status_reg;
    uint64_t hypervisor_vendor_id;
};
static_assert(sizeof(Fadt) == 276);
static_assert(offsetof(Fadt, flags) == 112);
static_assert(offsetof(Fadt, x_dsdt) == 140);
static_assert(offsetof(Fadt, sleep_control_reg) == 244);

// FADT flags (table 5.10) and IA-PC boot architecture flags (table 5.11).
inline constexpr uint32_t kFadtWbinvd = 1u << 0;
inline constexpr uint32_t kFadtPowerButtonIsControlMethod = 1u << 4;
inline constexpr uint32_t kFadtSleepButtonIsControlMethod = 1u << 5;
inline constexpr uint32_t kFadtResetRegSupported = 1u << 10;
inline constexpr uint32_t kFadtHardwareReduced = 1u << 20;
inline constexpr uint16_t kIapcI8042 = 1u << 1;
inline constexpr uint16_t kIapcVgaNotPresent = 1u << 2;
inline constexpr uint16_t kIapcMsiNotSupported = 1u << 3;
inline constexpr uint16_t kIapcNoCmosRtc = 1u << 5;
inline constexpr uint8_t kFadtRevision = 6;
inline constexpr uint8_t kFadtMinorVersion = 5;  // ACPI 6.5

// Multiple APIC Description Table header (section 5.2.12), followed by its entries.
struct [[gnu::packed]] MadtHeader {
    SdtHeader header;  // "APIC"
    uint32_t local_apic_address;
    uint32_t flags;  // bit 0 PCAT_COMPAT: the machine also has dual 8259 PICs
};
static_assert(sizeof(MadtHeader) == 44);

enum MadtEntryType : uint8_t { kMadtLocalApic = 0, kMadtIoApic = 1, kMadtInterruptOverride = 2, kMadtLocalApicNmi = 4 };

struct [[gnu::packed]] MadtLocalApic {
    uint8_t type;    // kMadtLocalApic
    uint8_t length;  // 8
    uint8_t processor_uid;
    uint8_t apic_id;
    uint32_t flags;  // bit 0 enabled
};
static_assert(sizeof(MadtLocalApic) == 8);

struct [[gnu::packed]] MadtIoApic {
    uint8_t type;    // kMadtIoApic
    uint8_t length;  // 12
    uint8_t io_apic_id;
    uint8_t reserved;
    uint32_t address;
    uint32_t gsi_base;
};
static_assert(sizeof(MadtIoApic) == 12);

struct [[gnu::packed]] MadtLocalApicNmi {
    uint8_t type;    // kMadtLocalApicNmi
    uint8_t length;  // 6
    uint8_t processor_uid;  // 0xff: all processors
    uint16_t flags;         // MPS INTI flags; 0: conforms to the bus
    uint8_t lint;
};
static_assert(sizeof(MadtLocalApicNmi) == 6);

inline constexpr uint8_t kMadtRevision = 5;
inline constexpr uint32_t kMadtPcatCompat = 1;
inline constexpr uint32_t kMadtLocalApicEnabled = 1;
inline constexpr uint8_t kMadtAllProcessors = 0xff;
// The most vCPUs the MADT describes: xAPIC IDs 0..vcpus-1 and the I/O APIC's id (= vcpus, as in
// the MP table) must fit in 8 bits.
inline constexpr unsigned kMadtMaxVcpus = 254;

// PCI Express memory-mapped configuration space table (PCI Firmware Specification 3.x, 4.1.2):
// the header, 8 reserved bytes, then one allocation per segment and bus range.
struct [[gnu::packed]] McfgAllocation {
    uint64_t base_address;  // ECAM base of bus 0 of the segment (even if start_bus is not 0)
    uint16_t segment;
    uint8_t start_bus;
    uint8_t end_bus;
    uint32_t reserved;
};
static_assert(sizeof(McfgAllocation) == 16);

struct [[gnu::packed]] McfgHeader {
    SdtHeader header;  // "MCFG"
    uint64_t reserved;
};
static_assert(sizeof(McfgHeader) == 44);
inline constexpr uint8_t kMcfgRevision = 1;

// An SDT header with embervm's OEM fields, the checksum 0 (fix_checksum sets it last).
SdtHeader make_sdt_header(std::string_view signature, uint32_t length, uint8_t revision, std::string_view table_id);

// The RSDP pointing at the XSDT at `xsdt_addr`, both checksums set.
Rsdp build_rsdp(uint64_t xsdt_addr);

// The XSDT listing the tables at `entries`.
std::vector<uint8_t> build_xsdt(std::span<const uint64_t> entries);

// The hardware-reduced FADT pointing at the DSDT at `dsdt_addr` (X_DSDT, and DSDT too when it
// is below 4 GiB), with the sleep control/status and reset registers of platform.h.
std::vector<uint8_t> build_fadt(const AcpiLayout& guest, uint64_t dsdt_addr);

// The MADT: the local APIC address, one enabled local APIC per vCPU (processor UID and APIC ID
// = vCPU index), the I/O APIC (id = vcpus, GSI base 0) and LINT1 as NMI on every processor, as
// the MP table describes them. ISA IRQs map to the GSIs of the same number, which is ACPI's
// default, so there are no interrupt source overrides. Throws Error for 0 or > kMadtMaxVcpus.
std::vector<uint8_t> build_madt(const AcpiLayout& guest);

// The MCFG with one allocation: `pci`'s ECAM window, segment 0, buses 0-0. Throws Error for a
// window that is not 1 MiB-aligned below 4 GiB.
std::vector<uint8_t> build_mcfg(const PciRootInfo& pci);

}  // namespace embervm::boot::acpi
