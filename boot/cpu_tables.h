// Boot-time CPU tables: the GDT (one layout serving both entry protocols), an empty IDT and
// identity-mapped page tables for [0, 4 GiB), plus the kvm_segment values matching the GDT.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <cstdint>

#include "boot/boot.h"
#include "boot/layout.h"
#include "memory/guest_memory.h"

namespace embervm::boot {

// GDT selectors. Entries 0 and 1 are null; 2 is the code segment (64-bit for the Linux 64-bit
// boot protocol, which wants __BOOT_CS = 0x10; flat 32-bit for PVH); 3 is a flat data segment
// (__BOOT_DS = 0x18).
inline constexpr uint16_t kBootCodeSelector = 0x10;
inline constexpr uint16_t kBootDataSelector = 0x18;
inline constexpr size_t kGdtEntries = 4;
inline constexpr uint16_t kGdtLimit = kGdtEntries * 8 - 1;
inline constexpr uint16_t kIdtLimit = 0;  // empty: any exception before the kernel's own IDT is fatal

static_assert(layout::kGdtAddr + kGdtEntries * 8 <= layout::kIdtAddr);

// A segment descriptor from its access/flags word (bits 0-7 access byte, 12-15 G/D/L/AVL),
// base and 20-bit limit.
constexpr uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit) {
    return (uint64_t{base & 0xff000000u} << 32) | (uint64_t{flags & 0xf0ffu} << 40) |
           (uint64_t{limit & 0x000f0000u} << 32) | (uint64_t{base & 0x00ffffffu} << 16) | uint64_t{limit & 0xffffu};
}

inline constexpr uint64_t kCode64Descriptor = gdt_entry(0xa09b, 0, 0xfffff);  // G, L, present, exec/read, accessed
inline constexpr uint64_t kCode32Descriptor = gdt_entry(0xc09b, 0, 0xfffff);  // G, D, present, exec/read, accessed
inline constexpr uint64_t kDataDescriptor = gdt_entry(0xc093, 0, 0xfffff);    // G, B, present, read/write, accessed

// The GDT for an entry protocol.
std::array<uint64_t, kGdtEntries> boot_gdt(EntryProtocol protocol);

// The kvm_segment a CPU holds after loading `descriptor` with `selector`.
kvm_segment segment_from_descriptor(uint64_t descriptor, uint16_t selector);

// Writes the GDT at kGdtAddr and a zeroed IDT at kIdtAddr.
void write_gdt_and_idt(const memory::GuestMemory& mem, EntryProtocol protocol);

// Writes a PML4 at kPml4Addr, a PDPT at kPdptAddr and four page directories from kPdAddr that
// identity-map [0, 4 GiB) with 2 MiB pages.
void write_page_tables(const memory::GuestMemory& mem);

}  // namespace embervm::boot
