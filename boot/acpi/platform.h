// What the ACPI tables describe: the guest's devices, the tables' place, the sleep/reset ports.
#pragma once

#include <cstdint>
#include <vector>

#include "boot/layout.h"

namespace embervm::boot::acpi {

// Where the tables go and the ports of the FADT's registers: boot/layout.h.
using layout::kAcpiTablesMaxSize;
using layout::kAcpiTablesStart;
inline constexpr uint16_t kSleepControlPort = layout::kAcpiSleepControlPort;
inline constexpr uint16_t kSleepStatusPort = layout::kAcpiSleepStatusPort;
inline constexpr uint16_t kResetPort = layout::kAcpiResetPort;

// `poweroff` writes (SLP_TYP << 2) | SLP_EN to the sleep control register with
// SLP_TYP = kSleepTypeS5; `reboot` writes kResetValue to the reset register.
inline constexpr uint8_t kResetValue = 0x01;
inline constexpr uint8_t kSleepTypeS5 = 5;  // \_S5's SLP_TYPa and SLP_TYPb
inline constexpr uint8_t kSleepTypeShift = 2;
inline constexpr uint8_t kSleepTypeMask = 0x1c;
inline constexpr uint8_t kSleepEnable = 0x20;  // SLP_EN
inline constexpr uint8_t kSleepStatusWake = 0x80;  // WAK_STS in the sleep status register

// True if `value`, written to the sleep control register, asks for S5 (soft off). Before it
// ACPICA writes kSleepStatusWake to the sleep status register (to clear WAK_STS), and after it
// polls that register until WAK_STS is set: reads may return 0, the VM ends at this write.
constexpr bool is_poweroff_request(uint8_t value) {
    return (value & kSleepEnable) != 0 && ((value & kSleepTypeMask) >> kSleepTypeShift) == kSleepTypeS5;
}

// One virtio-mmio window and the GSI (I/O APIC pin) its interrupt arrives on.
struct VirtioMmioDeviceInfo {
    uint64_t addr = 0;
    uint64_t size = layout::kVirtioMmioSize;
    uint32_t gsi = 0;
};

// The guest as the tables describe it.
struct AcpiLayout {
    std::vector<VirtioMmioDeviceInfo> virtio;  // in the order of their _UIDs 0, 1, ...
    uint32_t vcpus = 1;
    bool com1 = true;   // 16550A at layout::kCom1Port, IRQ 4
    bool i8042 = true;  // keyboard controller at 0x60/0x64, IRQ 1
};

}  // namespace embervm::boot::acpi
