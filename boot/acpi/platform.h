// What the ACPI tables describe: the guest's devices, the tables' place, the sleep/reset ports.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "boot/layout.h"
#include "devices/acpi_pm_registers.h"

namespace embervm::boot::acpi {

// Where the tables go and the ports of the FADT's registers: boot/layout.h.
using layout::kAcpiTablesMaxSize;
using layout::kAcpiTablesStart;
inline constexpr uint16_t kSleepControlPort = layout::kAcpiSleepControlPort;
inline constexpr uint16_t kSleepStatusPort = layout::kAcpiSleepStatusPort;
inline constexpr uint16_t kResetPort = layout::kAcpiResetPort;

// The values the ACPI PM device decodes (devices/acpi_pm_registers.h), which the FADT and the
// DSDT's \_S5 announce.
using devices::acpi_pm::is_poweroff_request;
using devices::acpi_pm::kResetValue;
using devices::acpi_pm::kSleepEnable;
using devices::acpi_pm::kSleepStatusWake;
using devices::acpi_pm::kSleepTypeMask;
using devices::acpi_pm::kSleepTypeS5;
using devices::acpi_pm::kSleepTypeShift;

// One virtio-mmio window and the GSI (I/O APIC pin) its interrupt arrives on.
struct VirtioMmioDeviceInfo {
    uint64_t addr = 0;
    uint64_t size = layout::kVirtioMmioSize;
    uint32_t gsi = 0;
};

// The PCI root bus (--enable-pci): the host bridge decodes bus 0 only, its configuration space
// through ports 0xCF8-0xCFF and the ECAM window (MCFG, segment 0, bus 0), and forwards the BAR
// window to the bus. Its functions signal with MSI-X only (no INTx pins, so no _PRT).
struct PciRootInfo {
    uint64_t window_base = layout::kPciMmioStart;
    uint64_t window_size = layout::kPciMmioSize;
    uint64_t ecam_base = layout::kPciEcamStart;  // 1 MiB: bus 0
};

// The guest as the tables describe it.
struct AcpiLayout {
    std::vector<VirtioMmioDeviceInfo> virtio;  // in the order of their _UIDs 0, 1, ...
    uint32_t vcpus = 1;
    bool com1 = true;   // 16550A at layout::kCom1Port, IRQ 4
    bool i8042 = true;  // keyboard controller at 0x60/0x64, IRQ 1
    std::optional<PciRootInfo> pci;  // the DSDT's PCI0 and MSI allowed in the FADT, if present
};

}  // namespace embervm::boot::acpi
