// libguest: constants shared by the C and the assembly start-up code (no C declarations).
#pragma once

// Boot protocols (enum boot_protocol in guest.h).
#define BOOT_PROTOCOL_LINUX64 1
#define BOOT_PROTOCOL_PVH 2

// Selectors of libguest's GDT (entry64.S). The same values as the VMM's boot GDT.
#define GUEST_CS32 0x08
#define GUEST_CS64 0x10
#define GUEST_DS 0x18

#define BOOT_STACK_SIZE 0x4000
#define AP_STACK_SIZE 0x2000

// Most CPUs a guest can start (embervm allows up to 32 vCPUs).
#define GUEST_MAX_CPUS 32

// Physical page the AP start-up trampoline is copied to (SIPI vector 0x10). The VMM uses
// 0x500 - 0x9fff (GDT, zero page, boot stack, page tables) and 0x20000 - 0x2ffff (command line).
#define AP_TRAMPOLINE_ADDR 0x10000

#define MSR_EFER 0xc0000080
#define EFER_LME 0x100
#define CR0_PE 0x1
#define CR0_PG 0x80000000
#define CR4_PAE 0x20

// The vector libguest's device-interrupt handler (irq.c, entry64.S) serves, the local APIC
// timer's vector (irq_timer_start) and the local APIC's spurious-interrupt vector (lapic.c).
#define IRQ_VECTOR 0x40
#define IRQ_TIMER_VECTOR 0x41
#define IRQ_SPURIOUS_VECTOR 0xff
// MSIs (pci.c): vector MSI_VECTOR_BASE + i is counted in msi_count[i] (entry64.S has one stub
// per vector: keep its .irp lists at MSI_VECTORS entries).
#define MSI_VECTOR_BASE 0x50
#define MSI_VECTORS 32
#define LAPIC_EOI_ADDR 0xfee000b0
