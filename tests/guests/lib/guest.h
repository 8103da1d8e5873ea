// libguest: the runtime of embervm's freestanding test guests (tests/guests/).
//
// A test guest is a small C program linked with libguest at physical 2 MiB (guest.ld). The
// VMM boots it like a kernel. libguest's start-up code (entry64.S; entry_pvh.S for PVH guests)
// sets up a stack, its own GDT and an IDT that reports CPU exceptions, initializes COM1, and
// calls the guest's
//
//     int guest_main(void);
//
// whose return value becomes the VMM's exit status (through guest_exit()).
//
// Exit-status convention (the debug-exit port 0xf4; embervm exits with the byte written).
// The values stay clear of what embervm itself uses: 0 (guest reboot/power-off), 1 (VMM error),
// 2 (bad configuration), 3 (guest triple fault), 128+N (killed by signal N); and of 124/137
// (timeout(1)).
//   GUEST_PASS   33 (0x21)  the guest ran its checks and they passed
//   GUEST_FAIL   34 (0x22)  a check failed (the guest printed why)
//   GUEST_CRASH  35 (0x23)  an unexpected CPU exception (libguest printed vector, RIP, error code)
// A guest may exit with another status on purpose (tests/guests/cmdline.c exits with the N of
// "exit=N"), so a test always checks for the exact status it expects.
// Under QEMU's isa-debug-exit device the process status is (v << 1) | 1 instead.
#pragma once

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "guest_defs.h"

#define GUEST_PASS 0x21
#define GUEST_FAIL 0x22
#define GUEST_CRASH 0x23

#define GUEST_DEBUG_EXIT_PORT 0xf4

#define GUEST_NORETURN __attribute__((noreturn))
#define GUEST_PACKED __attribute__((packed))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

// The guest's program; provided by each guest, called once on the boot CPU.
int guest_main(void);

// Ends the VM: writes `status` to the debug-exit port, then halts forever.
GUEST_NORETURN void guest_exit(uint8_t status);

// Prints "PANIC: <message>" and exits with GUEST_FAIL.
GUEST_NORETURN void guest_panic(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Halts this CPU forever (interrupts off).
GUEST_NORETURN void cpu_halt_forever(void);

// ---- how the guest was booted (boot.c) ----

enum boot_protocol {
    // Linux 64-bit boot protocol: entered in long mode, RSI = zero page (struct boot_params).
    BOOT_LINUX64 = BOOT_PROTOCOL_LINUX64,
    // PVH: entered in 32-bit protected mode, EBX = struct hvm_start_info.
    BOOT_PVH = BOOT_PROTOCOL_PVH,
};

enum boot_protocol boot_protocol(void);
const char* boot_protocol_name(void);  // "linux64" or "pvh"
// Physical address of the zero page (BOOT_LINUX64) or of hvm_start_info (BOOT_PVH).
uint64_t boot_info_addr(void);
// The kernel command line (NUL-terminated, identity-mapped), or "" when there is none.
const char* boot_cmdline(void);

// Zero page (struct boot_params) fields the guests read. Offsets from Linux's
// Documentation/arch/x86/zero-page.rst and boot.rst.
#define ZP_EXT_CMD_LINE_PTR 0x0c8  // u32: high 32 bits of the command line address
#define ZP_E820_ENTRIES 0x1e8      // u8
#define ZP_HDR_BOOT_FLAG 0x1fe     // u16: 0xaa55
#define ZP_HDR_HEADER 0x202        // u32: "HdrS"
#define ZP_HDR_CMD_LINE_PTR 0x228  // u32: low 32 bits of the command line address
#define ZP_E820_TABLE 0x2d0        // struct boot_e820_entry[128]

// struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h).
#define HVM_START_MAGIC 0x336ec578u
struct hvm_start_info {
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

// ---- console (serial.c, print.c) ----

void serial_init(void);
void serial_putc(char c);  // '\n' is sent as "\r\n"
void serial_write(const char* s, size_t n);
// Waits (polling the line status register) for a received byte and returns it.
int serial_getc(void);
// A received byte, or -1 if none is waiting.
int serial_trygetc(void);

// printf to COM1. Supports %c %s %d %i %u %x %X %p %%, the flags '0' and '-', a field width,
// and the length modifiers l, ll, z. A call's whole output is sent under the console lock, so
// lines printed by different CPUs never interleave (up to 256 bytes per call).
int printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char* fmt, va_list ap);
int snprintf(char* buf, size_t size, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
int vsnprintf(char* buf, size_t size, const char* fmt, va_list ap);

// ---- CPU exceptions (runtime.c) ----

// Loads libguest's IDT on this CPU (done by the start-up code for the boot CPU; an AP's entry
// path in smp.c does it too). Every exception prints its vector and RIP and exits GUEST_CRASH.
void idt_load(void);
