// libguest: starting application processors (APs) with INIT-SIPI-SIPI.
//
// smp_start_ap() copies the real-mode trampoline (trampoline.S) to AP_TRAMPOLINE_ADDR on first
// use and sends INIT, INIT de-assert, SIPI, SIPI to one AP through the xAPIC ICR. The AP goes
// 16-bit -> 32-bit -> 64-bit on the boot CPU's page tables (the CR3 of the caller), takes one of
// GUEST_MAX_CPUS - 1 stacks, loads libguest's IDT and calls `ap_main`. If ap_main returns, the
// AP halts. An AP whose stack index would exceed the pool halts at once.
#pragma once

#include <stdint.h>

#include "guest_defs.h"

typedef void (*ap_main_fn)(void);

// Returns 0, or -1 if an IPI was not delivered (ICR delivery status stuck).
int smp_start_ap(uint8_t apic_id, ap_main_fn ap_main);

// Busy-waits about `us` microseconds (TSC-based, assuming at least 1 GHz; only for the
// INIT-SIPI pacing, where a shorter wait is harmless under KVM).
void tsc_delay_us(uint64_t us);
