// libguest: device interrupts through the I/O APIC, for guests that sleep until a device
// signals instead of polling (the way a real driver waits).
//
// libguest runs with interrupts off (IF = 0). irq_route_gsi() masks both 8259s, enables the
// local APIC and routes one I/O APIC pin (= GSI) to IRQ_VECTOR on this CPU, edge-triggered and
// active high, unmasked. irq_wait() then halts with interrupts on until something arrives: the
// handler (entry64.S) counts the interrupt in irq_count, sends the EOI and returns, and irq_wait()
// returns with interrupts off again. The caller checks its condition (used ring, InterruptStatus)
// with interrupts off before each irq_wait(): `sti; hlt` takes an interrupt that became pending
// after the check, so no wake-up is lost. Edge-triggered suits both kinds of sources: an irqfd
// pulse (embervm) and a level line that the driver lowers by acknowledging InterruptStatus
// (QEMU's virtio-mmio).
//
// A guest that must never sleep for good (a lost interrupt would then hang it) also starts the
// local APIC timer: irq_timer_start() makes it fire every few milliseconds on IRQ_TIMER_VECTOR,
// counted in irq_timer_count, apart from irq_count, so irq_wait() always returns and the caller
// can tell a device's interrupt from a tick.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "guest_defs.h"

#define IOAPIC_DEFAULT_BASE 0xfec00000u

extern volatile uint64_t irq_count;  // interrupts taken on IRQ_VECTOR

// Masks both 8259s and enables the local APIC (TPR 0): what MSIs need (pci.h). Returns NULL,
// or what failed.
const char* irq_lapic_setup(void);

// Routes `gsi` (an I/O APIC pin) to IRQ_VECTOR on the calling CPU. The I/O APIC's address comes
// from the MP table if there is one, else IOAPIC_DEFAULT_BASE. Returns NULL, or what failed.
const char* irq_route_gsi(uint32_t gsi);

// Masks the pin again.
void irq_unroute_gsi(uint32_t gsi);

extern volatile uint64_t irq_timer_count;  // local APIC timer ticks (irq_timer_start)
// rdtsc() when irq_stub / irq_timer_stub last ran (entry64.S).
extern volatile uint64_t irq_last_tsc, irq_timer_last_tsc;

// Starts the local APIC timer, periodic, every `period_us` microseconds on IRQ_TIMER_VECTOR
// (KVM's APIC bus runs at 1 GHz), and measures the TSC against it over a few periods.
// Returns TSC cycles per millisecond, or 0 if the timer did not tick within a bounded wait.
uint64_t irq_timer_start(uint32_t period_us);
void irq_timer_stop(void);

// One `sti; hlt; cli`: returns after an interrupt (or any other wake-up), interrupts off.
static inline void irq_wait(void) { __asm__ volatile("sti; hlt; cli" : : : "memory"); }
// Takes an interrupt that is pending (the handlers run), without halting.
static inline void irq_take_pending(void) { __asm__ volatile("sti; nop; cli" : : : "memory"); }
