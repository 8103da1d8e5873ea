// x86-64 guest physical memory layout used by the VMM and the boot loaders.
#pragma once

#include <cstdint>

namespace embervm::boot::layout {

// Low memory, below 1 MiB.
inline constexpr uint64_t kGdtAddr = 0x500;          // boot GDT (4 entries)
inline constexpr uint64_t kIdtAddr = 0x520;          // empty boot IDT
inline constexpr uint64_t kPvhInfoAddr = 0x6000;     // hvm_start_info + memmap (PVH boot)
inline constexpr uint64_t kZeroPageAddr = 0x7000;    // struct boot_params (Linux boot protocol)
inline constexpr uint64_t kBootStackTop = 0x8ff0;    // initial RSP for 64-bit entry
inline constexpr uint64_t kPml4Addr = 0x9000;        // identity page tables: PML4,
inline constexpr uint64_t kPdptAddr = 0xa000;        //   PDPT,
inline constexpr uint64_t kPdAddr = 0xb000;          //   4 PDs of 2 MiB pages (0 - 4 GiB)
inline constexpr uint64_t kCmdlineAddr = 0x20000;    // kernel command line
inline constexpr uint64_t kCmdlineMax = 0x10000;     // bytes reserved for it (incl. NUL)
inline constexpr uint64_t kEbdaStart = 0x9fc00;      // MP table lives here; reserved in e820
inline constexpr uint64_t kHighMemStart = 0x100000;  // 1 MiB: first byte of "high" memory
inline constexpr uint64_t kBzImageLoadAddr = 0x100000;

// The ACPI tables (boot/acpi), RSDP first, in the BIOS area [0xe0000, 1 MiB): guest RAM that
// guest_memory_map() already reports as reserved (with the EBDA, [kEbdaStart, 1 MiB)), and where
// a guest that is not told the RSDP's address scans for it (every 16 bytes in [0xe0000, 1 MiB)).
inline constexpr uint64_t kAcpiTablesStart = 0xe0000;
inline constexpr uint64_t kAcpiTablesMaxSize = kHighMemStart - kAcpiTablesStart;
// The real-mode reset vector F000:FFF0, where a "BIOS reboot" jumps (boot/reset_vector.h).
inline constexpr uint64_t kResetVectorAddr = 0xffff0;

// 32-bit MMIO hole [3 GiB, 4 GiB): guest RAM above 3 GiB is placed at 4 GiB.
inline constexpr uint64_t kMmioHoleStart = 0xc0000000;
inline constexpr uint64_t kMmioHoleEnd = 0x100000000;

// Devices inside the hole.
// The PCI BAR window (--enable-pci): [3 GiB, 3.25 GiB), where BARs are assigned and decoded.
inline constexpr uint64_t kPciMmioStart = 0xc0000000;
inline constexpr uint64_t kPciMmioSize = 0x10000000;
// The ECAM window of PCI bus 0 (--enable-pci): 1 MiB, announced by ACPI's MCFG and reserved in
// the memory map when ACPI is on (test guests use this address directly).
inline constexpr uint64_t kPciEcamStart = 0xe0000000;
inline constexpr uint64_t kPciEcamSize = 0x100000;
inline constexpr uint64_t kBootTimerAddr = 0xd0000000;  // 4 KiB: boot-timer device
inline constexpr uint64_t kVirtioMmioStart = 0xd0001000;  // 4 KiB per virtio-mmio device
inline constexpr uint64_t kVirtioMmioSize = 0x1000;
inline constexpr uint64_t kIoapicAddr = 0xfec00000;
inline constexpr uint64_t kLapicAddr = 0xfee00000;

// Legacy port I/O.
inline constexpr uint16_t kCom1Port = 0x3f8;
inline constexpr uint32_t kCom1Irq = 4;
inline constexpr uint16_t kI8042Port = 0x60;          // data port; command/status at 0x64
inline constexpr uint32_t kI8042KbdIrq = 1;           // the i8042's keyboard interrupt
inline constexpr uint16_t kDebugExitPort = 0xf4;      // test guests: write status byte to exit
// The ACPI FADT's hardware-reduced sleep and reset registers (devices/acpi_pm), one byte each,
// above the ISA range so they alias no legacy device.
inline constexpr uint16_t kAcpiSleepControlPort = 0x600;
inline constexpr uint16_t kAcpiSleepStatusPort = 0x601;
inline constexpr uint16_t kAcpiResetPort = 0x602;

}  // namespace embervm::boot::layout
