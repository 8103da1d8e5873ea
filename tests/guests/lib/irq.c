// libguest: device interrupts through the I/O APIC (see irq.h).
#include "irq.h"

#include "io.h"
#include "lapic.h"
#include "mptable.h"

volatile uint64_t irq_count;       // incremented by irq_stub (entry64.S)
volatile uint64_t irq_tick_count;  // incremented by irq_tick_stub (entry64.S)
volatile uint64_t irq_last_tsc, irq_tick_last_tsc;  // written by the two stubs

#define IOAPIC_REGSEL 0x00
#define IOAPIC_WINDOW 0x10
#define IOAPIC_REG_VERSION 0x01
#define IOAPIC_REG_REDIR 0x10  // pin n: low word 0x10 + 2n, high word 0x11 + 2n
#define IOAPIC_REDIR_MASKED (1u << 16)

#define LVT_MASKED (1u << 16)
#define LVT_TIMER_PERIODIC (1u << 17)
#define TIMER_DIVIDE_BY_16 0x3
#define TIMER_TICKS_PER_US (1000 / 16)  // a 1 GHz APIC bus divided by 16

static uint32_t ioapic_base;

static uint32_t ioapic_read(uint32_t reg) {
    mmio_write32(ioapic_base + IOAPIC_REGSEL, reg);
    return mmio_read32(ioapic_base + IOAPIC_WINDOW);
}

static void ioapic_write(uint32_t reg, uint32_t v) {
    mmio_write32(ioapic_base + IOAPIC_REGSEL, reg);
    mmio_write32(ioapic_base + IOAPIC_WINDOW, v);
}

const char* irq_route_gsi(uint32_t gsi) {
    if (ioapic_base == 0) {
        struct mp_info mp;
        ioapic_base = IOAPIC_DEFAULT_BASE;
        if (mptable_read(&mp) == NULL && mp.ioapic_count > 0 && mp.ioapic_addr != 0) ioapic_base = mp.ioapic_addr;
    }
    // The legacy PICs would otherwise deliver ISA IRQs on their own (exception) vectors.
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    if (lapic_enable() != 0) return "the local APIC is in x2APIC mode";
    lapic_write(LAPIC_TPR, 0);
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

const char* irq_tick_start(uint32_t period_us) {
    if (period_us == 0 || period_us > UINT32_MAX / TIMER_TICKS_PER_US) return "tick period out of range";
    if (lapic_enable() != 0) return "the local APIC is in x2APIC mode";
    lapic_write(LAPIC_TIMER_DIVIDE, TIMER_DIVIDE_BY_16);
    lapic_write(LAPIC_LVT_TIMER, LVT_TIMER_PERIODIC | IRQ_TICK_VECTOR);
    lapic_write(LAPIC_TIMER_INITIAL, period_us * TIMER_TICKS_PER_US);  // starts counting
    return NULL;
}

void irq_tick_stop(void) {
    lapic_write(LAPIC_TIMER_INITIAL, 0);
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | IRQ_TICK_VECTOR);
}
