// libguest: the local APIC in xAPIC mode (MMIO at 0xfee00000).
#pragma once

#include <stdint.h>

#define LAPIC_BASE 0xfee00000ull

#define LAPIC_ID 0x020
#define LAPIC_VERSION 0x030
#define LAPIC_TPR 0x080
#define LAPIC_EOI 0x0b0
#define LAPIC_PPR 0x0a0
#define LAPIC_SVR 0x0f0
#define LAPIC_ISR 0x100  // 8 registers, 0x10 apart: vectors 0-255
#define LAPIC_IRR 0x200
#define LAPIC_ESR 0x280
#define LAPIC_ICR_LOW 0x300
#define LAPIC_ICR_HIGH 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INITIAL 0x380
#define LAPIC_TIMER_CURRENT 0x390
#define LAPIC_TIMER_DIVIDE 0x3e0

#define LAPIC_SVR_ENABLE 0x100

// ICR low word.
#define ICR_DELIVERY_FIXED 0x000
#define ICR_DELIVERY_INIT 0x500
#define ICR_DELIVERY_STARTUP 0x600
#define ICR_DELIVERY_PENDING 0x1000
#define ICR_LEVEL_ASSERT 0x4000
#define ICR_TRIGGER_LEVEL 0x8000

static inline uint32_t lapic_read(uint32_t reg) { return *(volatile uint32_t*)(LAPIC_BASE + reg); }
static inline void lapic_write(uint32_t reg, uint32_t v) { *(volatile uint32_t*)(LAPIC_BASE + reg) = v; }
// Vector `v`'s bit in the ISR or IRR (`base`: LAPIC_ISR, LAPIC_IRR).
static inline int lapic_vector_bit(uint32_t base, uint8_t v) {
    return (int)((lapic_read(base + 0x10u * (v / 32u)) >> (v % 32u)) & 1u);
}

// Makes sure the APIC is globally enabled in xAPIC mode (IA32_APIC_BASE) and software-enabled
// (spurious vector 0xff). Returns 0, or -1 if the APIC is in x2APIC mode (no MMIO access).
int lapic_enable(void);

// This CPU's APIC ID.
static inline uint8_t lapic_id(void) { return (uint8_t)(lapic_read(LAPIC_ID) >> 24); }

// Sends an IPI (`icr_low`: vector | delivery mode | level/trigger) to the APIC with ID `dest`
// and waits, bounded, for the delivery-status bit to clear. Returns 0, or -1 if it stayed set.
int lapic_send_ipi(uint8_t dest, uint32_t icr_low);

static inline void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }
