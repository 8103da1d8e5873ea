// The PC devices every VM has, on the port and MMIO buses with their interrupts: the COM1
// serial port (IRQ 4, the guest console), the i8042 keyboard controller (IRQ 1; its reset line
// ends the VM), the debug-exit port (a test guest's exit status), the boot timer (MMIO; the
// guest's boot time) and, with ACPI, the ACPI power management ports (power-off and reset end
// the VM).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "devices/serial.h"
#include "vmm/kvm/vm_exit.h"

namespace embervm::devices {
class BootTimer;
class I8042;
}

namespace embervm::vmm {

class Bus;
class EventFdIrq;
class KvmVm;

class LegacyDevices {
public:
    // `console_out` takes the bytes the guest writes to the serial port; `end_vm` is called when
    // the guest resets through the i8042 or ACPI, powers off through ACPI or writes the
    // debug-exit port. `acpi`: the guest has ACPI tables, whose FADT names the ACPI PM ports.
    LegacyDevices(KvmVm& vm, Bus& pio_bus, Bus& mmio_bus, devices::Serial::OutputSink console_out,
                  std::function<void(VmExit)> end_vm, bool acpi);
    ~LegacyDevices();
    LegacyDevices(const LegacyDevices&) = delete;
    LegacyDevices& operator=(const LegacyDevices&) = delete;

    devices::Serial& serial() const { return *serial_; }
    devices::I8042& i8042() const { return *i8042_; }
    devices::BootTimer& boot_timer() const { return *boot_timer_; }

private:
    std::vector<std::shared_ptr<EventFdIrq>> irqs_;
    std::shared_ptr<devices::Serial> serial_;
    std::shared_ptr<devices::I8042> i8042_;
    std::shared_ptr<devices::BootTimer> boot_timer_;
};

}  // namespace embervm::vmm
