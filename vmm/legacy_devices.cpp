// Creates the legacy PC devices (serial, i8042, debug-exit, boot timer, ACPI PM ports) and wires
// them to the VM.
#include "vmm/legacy_devices.h"

#include <fmt/format.h>

#include "boot/layout.h"
#include "devices/acpi_pm.h"
#include "devices/boot_timer.h"
#include "devices/bus.h"
#include "devices/debug_exit.h"
#include "devices/i8042.h"
#include "vmm/kvm/kvm.h"
#include "vmm/sys/eventfd.h"
#include "vmm/sys/log.h"

namespace embervm::vmm {

LegacyDevices::LegacyDevices(KvmVm& vm, Bus& pio_bus, Bus& mmio_bus, devices::Serial::OutputSink console_out,
                             std::function<void(VmExit)> end_vm, bool acpi) {
    auto com1_irq = std::make_shared<EventFdIrq>();
    vm.register_irqfd(com1_irq->fd(), boot::layout::kCom1Irq);
    irqs_.push_back(com1_irq);
    serial_ = std::make_shared<devices::Serial>(com1_irq, std::move(console_out));
    pio_bus.insert(serial_, boot::layout::kCom1Port, devices::Serial::kSize);

    auto kbd_irq = std::make_shared<EventFdIrq>();
    vm.register_irqfd(kbd_irq->fd(), boot::layout::kI8042KbdIrq);
    irqs_.push_back(kbd_irq);
    i8042_ = std::make_shared<devices::I8042>(
        [end_vm] { end_vm(VmExit{VmExit::Reason::GuestReset, 0, "i8042 reset"}); }, kbd_irq);
    pio_bus.insert(i8042_, boot::layout::kI8042Port, devices::I8042::kSize);

    pio_bus.insert(std::make_shared<devices::DebugExit>([end_vm](uint8_t status) {
                       end_vm(VmExit{VmExit::Reason::DebugExit, status,
                                     fmt::format("debug-exit port written with {}", status)});
                   }),
                   boot::layout::kDebugExitPort, devices::DebugExit::kSize);

    if (acpi) {
        pio_bus.insert(std::make_shared<devices::AcpiPm>(
                           [end_vm] { end_vm(VmExit{VmExit::Reason::GuestShutdown, 0, "ACPI S5"}); },
                           [end_vm] { end_vm(VmExit{VmExit::Reason::GuestReset, 0, "ACPI reset"}); }),
                       boot::layout::kAcpiSleepControlPort, devices::AcpiPm::kSize);
    }

    boot_timer_ = std::make_shared<devices::BootTimer>(log::process_start());
    mmio_bus.insert(boot_timer_, boot::layout::kBootTimerAddr, 0x1000);
}

LegacyDevices::~LegacyDevices() = default;

}  // namespace embervm::vmm
