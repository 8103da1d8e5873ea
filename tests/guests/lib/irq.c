// libguest: device interrupts through the I/O APIC (see irq.h).
#include "irq.h"

#include "io.h"
#include "lapic.h"
#include "mptable.h"

volatile uint64_t irq_count;        // incremented by irq_stub (entry64.S)
volatile uint64_t irq_timer_count;  // incremented by irq_timer_stub
volatile uint64_t irq_last_tsc, irq_timer_last_tsc;  // written by the two stubs

#define IOAPIC_REGSEL 0x00
#define IOAPIC_WINDOW 0x10
#define IOAPIC_REG_VERSION 0x01
#define IOAPIC_REG_REDIR 0x10  // pin n: low word 0x10 + 2n, high word 0x11 + 2n
#define IOAPIC_REDIR_MASKED (1u << 16)

static uint32_t ioapic_base;

static uint32_t ioapic_read(uint32_t reg) {
    mmio_write32(ioapic_base + IOAPIC_REGSEL, reg);
    return mmio_read32(ioapic_base + IOAPIC_WINDOW);
}

static void ioapic_write(uint32_t reg, uint32_t v) {
    mmio_write32(ioapic_base + IOAPIC_REGSEL, reg);
    mmio_write32(ioapic_base + IOAPIC_WINDOW, v);
}

const char* irq_lapic_setup(void) {
    // The legacy PICs would otherwise deliver ISA IRQs on their own (exception) vectors.
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    if (lapic_enable() != 0) return "the local APIC is in x2APIC mode";
    lapic_write(LAPIC_TPR, 0);
    return NULL;
}

const char* irq_route_gsi(uint32_t gsi) {
    if (ioapic_base == 0) {
        struct mp_info mp;
        ioapic_base = IOAPIC_DEFAULT_BASE;
        if (mptable_read(&mp) == NULL && mp.ioapic_count > 0 && mp.ioapic_addr != 0) ioapic_base = mp.ioapic_addr;
    }
    const char* err = irq_lapic_setup();
    if (err) return err;
    const uint32_t pins = ((ioapic_read(IOAPIC_REG_VERSION) >> 16) & 0xff) + 1;
    if (gsi >= pins) return "the GSI is beyond the first I/O APIC's pins";
    // High word first: the entry is unmasked only once the destination is right.
    ioapic_write(IOAPIC_REG_REDIR + 2 * gsi + 1, (uint32_t)lapic_id() << 24);
    ioapic_write(IOAPIC_REG_REDIR + 2 * gsi, IRQ_VECTOR);  // fixed, physical, active high, edge
    return NULL;
}

void irq_unroute_gsi(uint32_t gsi) {
    if (ioapic_base) ioapic_write(IOAPIC_REG_REDIR + 2 * gsi, IOAPIC_REDIR_MASKED | IRQ_VECTOR);
}

#define LAPIC_LVT_MASKED (1u << 16)
#define LAPIC_TIMER_PERIODIC (1u << 17)
#define LAPIC_DIVIDE_BY_16 0x3
#define APIC_BUS_MHZ 1000  // KVM's default APIC bus: 1 GHz
#define CALIBRATION_PERIODS 10

// Spins with interrupts on until irq_timer_count passes `count`; 0, or -1 after ~2^36 TSC
// cycles (the timer is dead: a hlt would never return).
static int spin_until_tick(uint64_t count) {
    const uint64_t start = rdtsc();
    while (irq_timer_count <= count) {
        cpu_sti();
        cpu_pause();
        cpu_cli();
        if (rdtsc() - start > (1ull << 36)) return -1;
    }
    return 0;
}

uint64_t irq_timer_start(uint32_t period_us) {
    if (lapic_enable() != 0) return 0;
    lapic_write(LAPIC_TIMER_DIVIDE, LAPIC_DIVIDE_BY_16);
    lapic_write(LAPIC_LVT_TIMER, LAPIC_TIMER_PERIODIC | IRQ_TIMER_VECTOR);
    lapic_write(LAPIC_TIMER_INITIAL, period_us * APIC_BUS_MHZ / 16);
    // Measure from one tick to the CALIBRATION_PERIODS-th after it.
    if (spin_until_tick(irq_timer_count) != 0) return 0;
    const uint64_t first = irq_timer_count, t0 = rdtsc();
    if (spin_until_tick(first + CALIBRATION_PERIODS - 1) != 0) return 0;
    const uint64_t cycles = rdtsc() - t0;
    const uint64_t per_ms = cycles * 1000 / ((uint64_t)period_us * CALIBRATION_PERIODS);
    return per_ms ? per_ms : 1;
}

void irq_timer_stop(void) {
    lapic_write(LAPIC_LVT_TIMER, LAPIC_LVT_MASKED | IRQ_TIMER_VECTOR);
    lapic_write(LAPIC_TIMER_INITIAL, 0);
}
