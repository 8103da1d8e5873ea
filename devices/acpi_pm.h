// ACPI power management ports (layout::kAcpiSleepControlPort ..): the FADT's hardware-reduced
// sleep control, sleep status and reset registers, through which a guest powers off or reboots.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "devices/bus.h"

namespace embervm::devices {

// One byte each at offsets 0 (sleep control), 1 (sleep status) and 2 (reset) from the base it is
// inserted at. A write of an S5 request (acpi_pm::is_poweroff_request in
// devices/acpi_pm_registers.h) to sleep control calls
// `on_poweroff`; a write of acpi_pm::kResetValue to reset calls `on_reset`; both log an INFO
// line first. Sleep status reads 0 (no wake event: the VM ends at the S5 write, so nothing ever
// polls it for long); every other read returns 0, every other write is ignored.
class AcpiPm : public vmm::BusDevice {
public:
    static constexpr uint64_t kSize = 3;
    static constexpr uint64_t kSleepControl = 0;
    static constexpr uint64_t kSleepStatus = 1;
    static constexpr uint64_t kReset = 2;

    // The callbacks run on the writing vCPU's thread.
    AcpiPm(std::function<void()> on_poweroff, std::function<void()> on_reset);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    const std::function<void()> on_poweroff_;
    const std::function<void()> on_reset_;
};

}  // namespace embervm::devices
