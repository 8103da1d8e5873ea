// Test guest "hello" (and "hello_pvh", the same program linked with the PVH entry): prints a
// greeting, how it was booted and its command line, and exits with GUEST_PASS.
// Also prints the memory map it was given (e820 table or PVH memmap).
// A PVH boot with a bad hvm_start_info magic exits with GUEST_FAIL.
#include "guest.h"
#include "io.h"

int guest_main(void) {
    printf("hello from embervm test guest\n");
    const uint64_t info = boot_info_addr();
    if (boot_protocol() == BOOT_PVH) {
        const struct hvm_start_info* si = phys_ptr(info);
        printf("boot protocol: pvh (hvm_start_info at 0x%lx, magic 0x%x, version %u)\n", info, si->magic,
               si->version);
        if (si->magic != HVM_START_MAGIC) {
            printf("hello: FAIL: hvm_start_info magic 0x%x, expected 0x%x\n", si->magic, HVM_START_MAGIC);
            return GUEST_FAIL;
        }
        const struct hvm_memmap_entry {
            uint64_t addr, size;
            uint32_t type, reserved;
        }* map = phys_ptr(si->memmap_paddr);
        for (uint32_t i = 0; si->version >= 1 && i < si->memmap_entries && i < 128; i++) {
            printf("memory map: 0x%lx-0x%lx type %u\n", map[i].addr, map[i].addr + map[i].size, map[i].type);
        }
    } else {
        printf("boot protocol: linux64 (zero page at 0x%lx)\n", info);
        const uint8_t* zp = phys_ptr(info);
        const struct e820_entry {
            uint64_t addr, size;
            uint32_t type;
        } GUEST_PACKED* map = (const void*)(zp + ZP_E820_TABLE);
        for (unsigned i = 0; i < zp[ZP_E820_ENTRIES] && i < 128; i++) {
            printf("memory map: 0x%lx-0x%lx type %u\n", map[i].addr, map[i].addr + map[i].size, map[i].type);
        }
    }
    printf("cmdline: %s\n", boot_cmdline());
    return GUEST_PASS;
}
