// ACPI power management ports: turns the guest's S5 and reset writes into the end of the VM.
#include "devices/acpi_pm.h"

#include <algorithm>

#include "devices/acpi_pm_registers.h"
#include "vmm/sys/log.h"

namespace embervm::devices {

AcpiPm::AcpiPm(std::function<void()> on_poweroff, std::function<void()> on_reset)
    : on_poweroff_(std::move(on_poweroff)), on_reset_(std::move(on_reset)) {}

void AcpiPm::read(uint64_t /*offset*/, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), uint8_t{0});
}

void AcpiPm::write(uint64_t offset, std::span<const uint8_t> data) {
    // The registers are one byte wide (the FADT's GAS says so): only the first byte written to a
    // register counts, wherever a wider access starts.
    if (data.empty()) {
        return;
    }
    const uint8_t value = data[0];
    if (offset == kSleepControl && acpi_pm::is_poweroff_request(value)) {
        log::info("guest powered off (ACPI S5)");
        if (on_poweroff_) on_poweroff_();
    } else if (offset == kReset && value == acpi_pm::kResetValue) {
        log::info("guest reset (ACPI reset)");
        if (on_reset_) on_reset_();
    } else {
        log::debug("ACPI PM: write of {:#04x} at offset {} ignored", value, offset);
    }
}

}  // namespace embervm::devices
