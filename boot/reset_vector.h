// A stub at the x86 reset vector (F000:FFF0) that resets the machine the way embervm can see: a
// kernel that "reboots through the BIOS" jumps there, and embervm has no BIOS.
//
// Linux takes that path on its own: with a hardware-reduced ACPI FADT (as embervm's) and no EFI,
// x86 Linux picks EFI as its reboot method (arch/x86/kernel/reboot.c, reboot_init():
// efi_reboot_required() is true for hardware-reduced ACPI), which does nothing without EFI
// runtime services, and falls back to BOOT_BIOS: machine_real_restart() switches to real mode
// and jumps to F000:FFF0, where zeroed memory would keep the vCPU running forever. The stub
// writes the ACPI reset register's value to layout::kAcpiResetPort, then pulses the i8042's
// reset line (for a guest without ACPI), then halts.
#pragma once

#include <array>
#include <cstdint>

#include "memory/guest_memory.h"

namespace embervm::boot {

// The stub's 16-bit code; it fits the 16 bytes from the reset vector to 1 MiB.
std::array<uint8_t, 16> reset_vector_stub();

// Writes it at layout::kResetVectorAddr (in the e820-reserved BIOS area).
void write_reset_vector_stub(const memory::GuestMemory& mem);

}  // namespace embervm::boot
