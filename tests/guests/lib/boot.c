// libguest: what the boot protocol handed over (zero page or hvm_start_info).
#include "guest.h"
#include "io.h"

static enum boot_protocol protocol;
static uint64_t info_addr;

// The identity mapping that both entry paths run on covers 0 - 4 GiB.
#define IDENTITY_MAPPED_END 0x100000000ull

void boot_record(enum boot_protocol p, uint64_t info);  // called by runtime.c
void boot_record(enum boot_protocol p, uint64_t info) {
    protocol = p;
    info_addr = info;
}

enum boot_protocol boot_protocol(void) { return protocol; }

const char* boot_protocol_name(void) { return protocol == BOOT_PVH ? "pvh" : "linux64"; }

uint64_t boot_info_addr(void) { return info_addr; }

const char* boot_cmdline(void) {
    uint64_t addr = 0;
    if (info_addr == 0 || info_addr >= IDENTITY_MAPPED_END) return "";
    if (protocol == BOOT_LINUX64) {
        const volatile uint8_t* zp = phys_ptr(info_addr);
        addr = *(const volatile uint32_t*)(zp + ZP_HDR_CMD_LINE_PTR) |
               (uint64_t)*(const volatile uint32_t*)(zp + ZP_EXT_CMD_LINE_PTR) << 32;
    } else {
        const volatile struct hvm_start_info* si = phys_ptr(info_addr);
        if (si->magic != HVM_START_MAGIC) return "";
        addr = si->cmdline_paddr;
    }
    if (addr == 0 || addr >= IDENTITY_MAPPED_END) return "";
    return phys_ptr(addr);
}
