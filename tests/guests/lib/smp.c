// libguest: AP start-up (see smp.h).
#include "smp.h"

#include "guest.h"
#include "io.h"
#include "lapic.h"
#include "str.h"

extern const uint8_t ap_trampoline_start[], ap_trampoline_end[], ap_trampoline_cr3[];
void smp_ap_start(void);  // called by ap_entry64 (trampoline.S) on the AP's own stack

static volatile ap_main_fn ap_main_function;
static int trampoline_installed;

void tsc_delay_us(uint64_t us) {
    const uint64_t start = rdtsc();
    const uint64_t cycles = us * 1000;  // >= 1 GHz TSC
    while (rdtsc() - start < cycles) cpu_pause();
}

static void install_trampoline(void) {
    const size_t size = (size_t)(ap_trampoline_end - ap_trampoline_start);
    uint8_t* dst = phys_ptr(AP_TRAMPOLINE_ADDR);
    memcpy(dst, ap_trampoline_start, size);
    *(volatile uint32_t*)(dst + (ap_trampoline_cr3 - ap_trampoline_start)) = (uint32_t)read_cr3();
    trampoline_installed = 1;
}

int smp_start_ap(uint8_t apic_id, ap_main_fn ap_main) {
    if (!trampoline_installed) install_trampoline();
    ap_main_function = ap_main;
    mb();
    const uint32_t sipi = ICR_DELIVERY_STARTUP | (AP_TRAMPOLINE_ADDR >> 12);
    int rc = lapic_send_ipi(apic_id, ICR_DELIVERY_INIT | ICR_LEVEL_ASSERT | ICR_TRIGGER_LEVEL);
    rc |= lapic_send_ipi(apic_id, ICR_DELIVERY_INIT | ICR_TRIGGER_LEVEL);  // de-assert
    tsc_delay_us(10000);
    rc |= lapic_send_ipi(apic_id, sipi);
    tsc_delay_us(200);
    rc |= lapic_send_ipi(apic_id, sipi);
    return rc;
}

void smp_ap_start(void) {
    idt_load();
    const ap_main_fn fn = ap_main_function;
    if (fn) fn();
}
