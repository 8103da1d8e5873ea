// The values the ACPI PM ports (devices/acpi_pm.h) decode: the sleep control register's fields
// and the reset value. The device acts on them and the ACPI tables (boot/acpi) announce them to
// the guest, so they live here, with no dependency, for both.
#pragma once

#include <cstdint>

namespace embervm::devices::acpi_pm {

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

}  // namespace embervm::devices::acpi_pm
