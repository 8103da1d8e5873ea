// The DSDT: AML naming the guest's devices that cannot be probed, and the \_S5 sleep type.
//
// The devices are the virtio-mmio windows, COM1, the i8042 and the PCI root bridge; \_S5 is what `poweroff` writes to
// the FADT's sleep control register.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "boot/acpi/platform.h"

namespace embervm::boot::acpi {

// The most virtio-mmio devices the DSDT names (VR00 to VRFF).
inline constexpr size_t kDsdtMaxVirtioDevices = 256;
inline constexpr uint8_t kDsdtRevision = 2;  // 64-bit AML integers

// The AML body (everything after the SDT header):
//   Scope (\_SB) {
//     Device (COM1) { _HID EisaId ("PNP0501"), _UID 1, _CRS { IO 0x3f8/8, IRQNoFlags {4} } }
//     Device (PS2K) { _HID EisaId ("PNP0303"), _CRS { IO 0x60/1, IO 0x64/1, IRQNoFlags {1} } }
//     Device (VRnn) { _HID "LNRO0005", _UID n, _CRS { Memory32Fixed (ReadWrite, addr, size),
//                     Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {gsi} } }  // per device
//     Device (PCI0) { _HID EisaId ("PNP0A03"), _SEG 0, _BBN 0, _UID 0,
//                     _CRS { WordBusNumber 0-0, IO 0xcf8/8,
//                            DWordMemory (ResourceProducer, NonCacheable, ReadWrite) BAR window } }
//   }
//   Name (\_S5, Package (4) {5, 5, 0, 0})
// COM1 and PS2K only when the guest has them, PCI0 only with PCI. PCI0 has no _PRT (its
// functions have no INTx pins) and no I/O window (no function has an I/O BAR). The virtio interrupts are edge-triggered and
// active high, as the MP table announces them (ISA bus, "conforms to the bus") and as KVM's
// irqfd delivers them (a pulse on the I/O APIC pin), the same as Firecracker's DSDT.
// Throws Error for more than kDsdtMaxVirtioDevices devices or a window (virtio-mmio or the PCI
// BAR window) not below 4 GiB.
std::vector<uint8_t> build_dsdt_aml(const AcpiLayout& guest);

// The whole DSDT: SDT header (checksum set) and build_dsdt_aml(guest).
std::vector<uint8_t> build_dsdt(const AcpiLayout& guest);

}  // namespace embervm::boot::acpi
