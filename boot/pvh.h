// PVH boot: struct hvm_start_info (Xen's arch-independent start info, version 1) with the
// command line, the initrd as module 0 and the memory map, at layout::kPvhInfoAddr.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "boot/layout.h"
#include "boot/memory_map.h"
#include "memory/guest_memory.h"

namespace embervm::boot {

inline constexpr uint32_t kHvmStartMagic = 0x336ec578;  // "xEn3" with the 0x80 bit of the "E" set
inline constexpr uint32_t kHvmStartVersion = 1;          // version 1 has the memory map

struct HvmStartInfo {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;    // version >= 1
    uint32_t memmap_entries;  // version >= 1
    uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56);
static_assert(offsetof(HvmStartInfo, modlist_paddr) == 16);
static_assert(offsetof(HvmStartInfo, memmap_paddr) == 40);
static_assert(offsetof(HvmStartInfo, memmap_entries) == 48);

struct HvmModlistEntry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr;
    uint64_t reserved;
};
static_assert(sizeof(HvmModlistEntry) == 32);

struct HvmMemmapEntry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;  // e820 types
    uint32_t reserved;
};
static_assert(sizeof(HvmMemmapEntry) == 24);

// Where the pieces go: start info, then the module list, then the memory map, all in the page
// at kPvhInfoAddr (below the zero page).
inline constexpr uint64_t kPvhModlistAddr = layout::kPvhInfoAddr + 0x40;
inline constexpr uint64_t kPvhMemmapAddr = layout::kPvhInfoAddr + 0x80;
inline constexpr uint64_t kPvhMaxMemmapEntries = (layout::kZeroPageAddr - kPvhMemmapAddr) / sizeof(HvmMemmapEntry);
static_assert(kPvhModlistAddr >= layout::kPvhInfoAddr + sizeof(HvmStartInfo));
static_assert(kPvhMemmapAddr >= kPvhModlistAddr + sizeof(HvmModlistEntry));

struct PvhParams {
    uint64_t cmdline_addr = 0;
    std::optional<uint64_t> initrd_addr;  // the initrd, if any, as module 0
    uint64_t initrd_size = 0;
    std::vector<MemoryMapEntry> memory_map;
    uint64_t rsdp_addr = 0;  // the ACPI RSDP; 0: none
};

// Writes the start info, module list and memory map. Throws Error if the memory map does not
// fit in the space reserved for it.
void write_pvh_start_info(const memory::GuestMemory& mem, const PvhParams& params);

}  // namespace embervm::boot
