// The zero page (struct boot_params) for the Linux 64-bit boot protocol: setup header,
// command line and initrd pointers, and the e820 memory map.
#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <span>
#include <vector>

#include "boot/memory_map.h"
#include "memory/guest_memory.h"

namespace embervm::boot {

static_assert(sizeof(boot_params) == 0x1000);
static_assert(offsetof(boot_params, acpi_rsdp_addr) == 0x070);
static_assert(offsetof(boot_params, ext_ramdisk_image) == 0x0c0);
static_assert(offsetof(boot_params, ext_ramdisk_size) == 0x0c4);
static_assert(offsetof(boot_params, ext_cmd_line_ptr) == 0x0c8);
static_assert(offsetof(boot_params, e820_entries) == 0x1e8);
static_assert(offsetof(boot_params, hdr) == 0x1f1);
static_assert(offsetof(boot_params, e820_table) == 0x2d0);
static_assert(sizeof(boot_e820_entry) == 20);
static_assert(offsetof(setup_header, type_of_loader) == 0x210 - 0x1f1);
static_assert(offsetof(setup_header, loadflags) == 0x211 - 0x1f1);
static_assert(offsetof(setup_header, ramdisk_image) == 0x218 - 0x1f1);
static_assert(offsetof(setup_header, ramdisk_size) == 0x21c - 0x1f1);
static_assert(offsetof(setup_header, heap_end_ptr) == 0x224 - 0x1f1);
static_assert(offsetof(setup_header, cmd_line_ptr) == 0x228 - 0x1f1);
static_assert(offsetof(setup_header, initrd_addr_max) == 0x22c - 0x1f1);
static_assert(offsetof(setup_header, kernel_alignment) == 0x230 - 0x1f1);
static_assert(offsetof(setup_header, cmdline_size) == 0x238 - 0x1f1);

// The first boot protocol whose kernels read acpi_rsdp_addr (boot.rst: 2.14, Linux 4.20).
inline constexpr uint16_t kBootProtocolAcpiRsdp = 0x20e;

// "Undefined" boot loader id (boot.rst: type_of_loader 0xff).
inline constexpr uint8_t kTypeOfLoaderUndefined = 0xff;
// End of the real-mode heap relative to the real-mode code, minus 0x200 (boot.rst example).
inline constexpr uint16_t kHeapEndPtr = 0xe000 - 0x200;

struct ZeroPageParams {
    // bzImage: the image's header bytes from 0x1f1 to its end. Empty for an ELF kernel: a
    // default header (boot flag, "HdrS", protocol 2.12, ...) is written instead.
    std::span<const uint8_t> header_bytes;
    uint64_t cmdline_addr = 0;
    uint64_t initrd_addr = 0;  // 0 and 0 without an initrd
    uint64_t initrd_size = 0;
    std::vector<MemoryMapEntry> memory_map;
    // The ACPI RSDP (0: none). Written to acpi_rsdp_addr for a bzImage of boot protocol
    // >= 2.14 (older ones have padding there and scan for the RSDP, which they find: it is at
    // layout::kAcpiTablesStart), and for an ELF vmlinux (no header to tell; a kernel older than
    // 4.20 ignores the padding).
    uint64_t acpi_rsdp_addr = 0;
};

// The setup header an ELF vmlinux (which has none) is given.
setup_header default_setup_header();

// Builds the zero page. Throws Error if the memory map has more entries than it holds.
boot_params build_zero_page(const ZeroPageParams& params);

// Writes it at layout::kZeroPageAddr.
void write_zero_page(const memory::GuestMemory& mem, const boot_params& params);

}  // namespace embervm::boot
