// libguest: C start-up (called by entry64.S), exit, panic and the CPU-exception report.
#include "guest.h"
#include "io.h"
#include "str.h"

void boot_record(enum boot_protocol p, uint64_t info);
void console_write_unlocked_fallback(const char* s, size_t n);
GUEST_NORETURN void guest_start(uint32_t protocol, uint64_t info);
// Register frame built by the exception stubs in entry64.S (lowest address first).
struct exception_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error_code;
    uint64_t rip, cs, rflags, rsp, ss;  // pushed by the CPU
};
void guest_exception(const struct exception_frame* f);  // called by the stubs

struct idt_gate {
    uint16_t offset_low;
    uint16_t selector;
    uint8_t ist;
    uint8_t type_attr;
    uint16_t offset_mid;
    uint32_t offset_high;
    uint32_t reserved;
} GUEST_PACKED;

struct descriptor_ptr {
    uint16_t limit;
    uint64_t base;
} GUEST_PACKED;

#define KERNEL_CS 0x10
#define IDT_INTERRUPT_GATE 0x8e  // present, DPL 0, 64-bit interrupt gate
#define EXCEPTION_VECTORS 32
#define IDT_VECTORS 256

extern const uint64_t exception_stub_table[EXCEPTION_VECTORS];  // entry64.S
extern char irq_stub[], irq_timer_stub[], irq_spurious_stub[];   // entry64.S
extern const uint64_t msi_stub_table[MSI_VECTORS];               // entry64.S
// All 256 vectors: an interrupt on a vector without a gate raises #NP (error code vector * 8 + 2),
// which is reported like any other exception.
static struct idt_gate idt[IDT_VECTORS] __attribute__((aligned(16)));

static void idt_set(unsigned v, uint64_t handler) {
    idt[v] = (struct idt_gate){
        .offset_low = (uint16_t)handler,
        .selector = KERNEL_CS,
        .ist = 0,
        .type_attr = IDT_INTERRUPT_GATE,
        .offset_mid = (uint16_t)(handler >> 16),
        .offset_high = (uint32_t)(handler >> 32),
        .reserved = 0,
    };
}

static void idt_build(void) {
    for (unsigned v = 0; v < EXCEPTION_VECTORS; v++) idt_set(v, exception_stub_table[v]);
    // Device interrupts (irq.c); they only arrive once a guest routes one and enables interrupts.
    idt_set(IRQ_VECTOR, (uint64_t)(uintptr_t)irq_stub);
    idt_set(IRQ_TIMER_VECTOR, (uint64_t)(uintptr_t)irq_timer_stub);
    idt_set(IRQ_SPURIOUS_VECTOR, (uint64_t)(uintptr_t)irq_spurious_stub);
    // MSIs (pci.c), each vector counted apart.
    for (unsigned i = 0; i < MSI_VECTORS; i++) idt_set(MSI_VECTOR_BASE + i, msi_stub_table[i]);
}

void idt_load(void) {
    const struct descriptor_ptr ptr = {sizeof(idt) - 1, (uint64_t)(uintptr_t)idt};
    __asm__ volatile("lidt %0" : : "m"(ptr));
}

void guest_start(uint32_t protocol, uint64_t info) {
    boot_record((enum boot_protocol)protocol, info);
    serial_init();
    idt_build();
    idt_load();
    const int status = guest_main();
    guest_exit((uint8_t)status);
}

void cpu_halt_forever(void) {
    for (;;) {
        cpu_cli();
        cpu_hlt();
    }
}

void guest_exit(uint8_t status) {
    outb(GUEST_DEBUG_EXIT_PORT, status);
    // The VMM stops at the write above; halt in case the device is missing.
    cpu_halt_forever();
}

void guest_panic(const char* fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(buf, sizeof(buf), "PANIC: ");
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    if ((size_t)n >= sizeof(buf) - 1) n = sizeof(buf) - 2;
    buf[n++] = '\n';
    console_write_unlocked_fallback(buf, (size_t)n);
    guest_exit(GUEST_FAIL);
}

static const char* const exception_names[EXCEPTION_VECTORS] = {
    "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow", "#BR bound range",
    "#UD invalid opcode", "#NM device not available", "#DF double fault", "coprocessor overrun",
    "#TS invalid TSS", "#NP segment not present", "#SS stack fault", "#GP general protection",
    "#PF page fault", "reserved 15", "#MF x87 error", "#AC alignment check", "#MC machine check",
    "#XM SIMD error", "#VE virtualization", "#CP control protection", "reserved 22", "reserved 23",
    "reserved 24", "reserved 25", "reserved 26", "reserved 27", "#HV hypervisor injection",
    "#VC VMM communication", "#SX security", "reserved 31"};

void guest_exception(const struct exception_frame* f) {
    uint64_t cr2 = 0;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    char buf[256];
    const int n = snprintf(buf, sizeof(buf),
                           "CRASH: CPU exception %lu (%s) at rip=0x%lx error=0x%lx cr2=0x%lx rsp=0x%lx\n",
                           f->vector, exception_names[f->vector & 31], f->rip, f->error_code, cr2, f->rsp);
    console_write_unlocked_fallback(buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
    guest_exit(GUEST_CRASH);
}
