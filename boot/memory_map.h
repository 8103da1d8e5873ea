// The guest's physical memory map: RAM ranges for GuestMemory and the e820-style map that
// the zero page and the PVH start info describe to the kernel.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/guest_memory.h"

namespace embervm::boot {

// e820 / hvm_memmap_table_entry types.
enum class MemoryType : uint32_t { Ram = 1, Reserved = 2 };

struct MemoryMapEntry {
    uint64_t addr = 0;
    uint64_t size = 0;
    MemoryType type = MemoryType::Ram;

    bool operator==(const MemoryMapEntry&) const = default;
};

// The memory map for `mem`: RAM [0, kEbdaStart), reserved [kEbdaStart, 1 MiB) (EBDA with the
// MP table, VGA hole, BIOS area), then every guest RAM byte above 1 MiB as RAM (adjacent
// regions merged). Throws Error if guest memory does not start at 0 or does not extend past
// 1 MiB: the boot structures live there.
std::vector<MemoryMapEntry> guest_memory_map(const memory::GuestMemory& mem);

// Adds [addr, addr + size) as Reserved to `map`, in address order; it must not overlap an
// entry (throws Error). For MMIO ranges the guest must leave alone, such as the PCI ECAM window.
void reserve_in_memory_map(std::vector<MemoryMapEntry>& map, uint64_t addr, uint64_t size);

// End of the RAM that is contiguous from 1 MiB and below the 32-bit MMIO hole: where the
// kernel, initrd and everything 32-bit boot code can reach must live.
uint64_t low_ram_end(const memory::GuestMemory& mem);

// "[0, 0x8000000)" or "[0, 0xc0000000) and [0x100000000, 0x140000000)": for error messages.
std::string describe_guest_ram(const memory::GuestMemory& mem);

}  // namespace embervm::boot
