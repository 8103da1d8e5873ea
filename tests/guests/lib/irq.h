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
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "guest_defs.h"

#define IOAPIC_DEFAULT_BASE 0xfec00000u

extern volatile uint64_t irq_count;       // interrupts taken on IRQ_VECTOR
extern volatile uint64_t irq_tick_count;  // local APIC timer interrupts (IRQ_TICK_VECTOR)
// The TSC when the handler took the last one of each.
extern volatile uint64_t irq_last_tsc, irq_tick_last_tsc;

// Routes `gsi` (an I/O APIC pin) to IRQ_VECTOR on the calling CPU. The I/O APIC's address comes
// from the MP table if there is one, else IOAPIC_DEFAULT_BASE. Returns NULL, or what failed.
const char* irq_route_gsi(uint32_t gsi);

// Masks the pin again.
void irq_unroute_gsi(uint32_t gsi);

// Starts the local APIC timer, periodic, on IRQ_TICK_VECTOR every `period_us` microseconds
// (counted for KVM's 1 GHz APIC bus; another bus speed only changes the period). Its only job is
// to bound irq_wait(): a guest that waits for a device interrupt which never comes still wakes
// up now and then to check its own deadline. The handler counts in irq_tick_count, apart from
// the device interrupts. Returns NULL, or what failed.
const char* irq_tick_start(uint32_t period_us);
// Stops and masks the timer.
void irq_tick_stop(void);

// One `sti; hlt; cli`: returns after an interrupt (or any other wake-up), interrupts off.
static inline void irq_wait(void) { __asm__ volatile("sti; hlt; cli" : : : "memory"); }
// Takes an interrupt that is pending (the handlers run), without halting.
static inline void irq_take_pending(void) { __asm__ volatile("sti; nop; cli" : : : "memory"); }
