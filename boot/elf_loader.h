// ELF64 x86-64 kernel (`vmlinux`) parsing and loading: PT_LOAD segments at their physical
// addresses, the 64-bit entry (e_entry) and the PVH entry (XEN_ELFNOTE_PHYS32_ENTRY note).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "memory/guest_memory.h"

namespace embervm::boot {

// XEN_ELFNOTE_PHYS32_ENTRY: an ELF note named "Xen" holding the 32-bit PVH entry point.
inline constexpr uint32_t kXenElfNotePhys32Entry = 18;

struct ElfSegment {
    size_t phdr_index = 0;  // index in the program header table, for error messages
    uint64_t file_offset = 0;
    uint64_t file_size = 0;
    uint64_t paddr = 0;
    uint64_t mem_size = 0;  // >= file_size; the rest is zeroed (bss)
};

struct ElfKernel {
    uint64_t entry = 0;                  // e_entry: the 64-bit boot protocol entry
    std::optional<uint64_t> pvh_entry;   // from the PVH note, if present
    std::vector<ElfSegment> segments;    // PT_LOAD segments with mem_size > 0, sorted by paddr
    uint64_t start() const;              // lowest paddr
    uint64_t end() const;                // highest paddr + mem_size
};

// True if the image starts with the ELF magic (it may still be a malformed ELF).
bool has_elf_magic(std::span<const uint8_t> image);

// Validates everything that depends on the image alone (header, program headers, segment
// file ranges, notes, entry points) and returns what to load. Throws Error saying why not.
ElfKernel parse_elf_kernel(std::span<const uint8_t> image);

// Throws Error unless every segment lies in guest memory at or above 1 MiB.
void check_elf_placement(const ElfKernel& kernel, const memory::GuestMemory& mem);

// Copies the segments into guest memory and zeroes their bss parts. `kernel` must come from
// parse_elf_kernel(image) and have passed check_elf_placement().
// With fd >= 0 the segments are read from that file (the one `image` maps) with pread; bss is
// zeroed with GuestMemory::zero().
void load_elf_segments(const ElfKernel& kernel, std::span<const uint8_t> image, const memory::GuestMemory& mem,
                       int fd = -1);

}  // namespace embervm::boot
