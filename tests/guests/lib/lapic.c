// libguest: local APIC (see lapic.h).
#include "lapic.h"

#include "guest_defs.h"
#include "io.h"

#define MSR_APIC_BASE 0x1b
#define APIC_BASE_X2APIC (1u << 10)
#define APIC_BASE_ENABLE (1u << 11)
#define SPURIOUS_VECTOR IRQ_SPURIOUS_VECTOR

int lapic_enable(void) {
    const uint64_t base = rdmsr(MSR_APIC_BASE);
    if (base & APIC_BASE_X2APIC) return -1;
    if (!(base & APIC_BASE_ENABLE)) wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE);
    lapic_write(LAPIC_SVR, LAPIC_SVR_ENABLE | SPURIOUS_VECTOR);
    return 0;
}

int lapic_send_ipi(uint8_t dest, uint32_t icr_low) {
    lapic_write(LAPIC_ICR_HIGH, (uint32_t)dest << 24);
    lapic_write(LAPIC_ICR_LOW, icr_low);
    for (int i = 0; i < 10000; i++) {
        if (!(lapic_read(LAPIC_ICR_LOW) & ICR_DELIVERY_PENDING)) return 0;
        cpu_pause();
    }
    return -1;
}
