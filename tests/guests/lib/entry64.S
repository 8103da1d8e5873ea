// libguest: 64-bit start-up code, the GDT and the CPU-exception stubs.
//
// _start is the ELF entry point for the Linux 64-bit boot protocol: the VMM enters in long
// mode with paging on (identity map of 0 - 4 GiB), CS = 0x10, DS/ES/SS = 0x18, RSI = the zero
// page, interrupts off. The PVH entry (entry_pvh.S) reaches long mode itself and joins at
// start64_common. Both then run on libguest's own GDT, stack and IDT.

#include "guest_defs.h"

    .section .text.entry, "ax"
    .code64
    .globl _start
    .type _start, @function
_start:
    cli
    cld
    mov $BOOT_PROTOCOL_LINUX64, %edi
    // RSI: zero page (already in the second argument register)
    jmp start64_common
    .size _start, . - _start

// EDI = boot protocol, RSI = boot information (physical). Never returns.
    .globl start64_common
    .type start64_common, @function
start64_common:
    mov %edi, %r12d
    mov %rsi, %r13
    lgdt gdt_ptr(%rip)
    mov $GUEST_DS, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    // Our own stack first: PVH enters without one (RSP is undefined), and lretq needs it.
    lea boot_stack_top(%rip), %rsp
    // Reload CS from our GDT (the VMM's CS selector may name a different descriptor).
    lea 1f(%rip), %rax
    pushq $GUEST_CS64
    pushq %rax
    lretq
1:
    xor %ebp, %ebp
    // Zero .bss: the loader clears it too, but do not rely on that. It is small; the stacks and
    // page tables live in .noinit and are not touched here.
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
2:  cmp %rcx, %rdi
    jae 3f
    movq $0, (%rdi)
    add $8, %rdi
    jmp 2b
3:
    mov %r12d, %edi
    mov %r13, %rsi
    call guest_start
    jmp cpu_halt_forever
    .size start64_common, . - start64_common

// ---- CPU exceptions: vector and error code onto the stack, then guest_exception(frame) ----

    .macro EXCEPTION_STUB vector, has_error_code
    .p2align 4
exception_stub_\vector:
    .if \has_error_code == 0
    pushq $0
    .endif
    pushq $\vector
    jmp exception_common
    .endm

    .text
    EXCEPTION_STUB 0, 0
    EXCEPTION_STUB 1, 0
    EXCEPTION_STUB 2, 0
    EXCEPTION_STUB 3, 0
    EXCEPTION_STUB 4, 0
    EXCEPTION_STUB 5, 0
    EXCEPTION_STUB 6, 0
    EXCEPTION_STUB 7, 0
    EXCEPTION_STUB 8, 1
    EXCEPTION_STUB 9, 0
    EXCEPTION_STUB 10, 1
    EXCEPTION_STUB 11, 1
    EXCEPTION_STUB 12, 1
    EXCEPTION_STUB 13, 1
    EXCEPTION_STUB 14, 1
    EXCEPTION_STUB 15, 0
    EXCEPTION_STUB 16, 0
    EXCEPTION_STUB 17, 1
    EXCEPTION_STUB 18, 0
    EXCEPTION_STUB 19, 0
    EXCEPTION_STUB 20, 0
    EXCEPTION_STUB 21, 1
    EXCEPTION_STUB 22, 0
    EXCEPTION_STUB 23, 0
    EXCEPTION_STUB 24, 0
    EXCEPTION_STUB 25, 0
    EXCEPTION_STUB 26, 0
    EXCEPTION_STUB 27, 0
    EXCEPTION_STUB 28, 0
    EXCEPTION_STUB 29, 1
    EXCEPTION_STUB 30, 1
    EXCEPTION_STUB 31, 0

exception_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    and $-16, %rsp
    call guest_exception
    jmp cpu_halt_forever

// ---- device interrupts and the APIC timer (irq.c): count, EOI, return; the interrupted code
// notices the event ----

    // The device interrupts: counted, with the TSC when it was taken (irq_last_tsc).
    .p2align 4
    .globl irq_stub
irq_stub:
    push %rax
    push %rdx
    incq irq_count(%rip)
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, irq_last_tsc(%rip)
    mov $LAPIC_EOI_ADDR, %eax  // zero-extended: 0x00000000fee000b0
    movl $0, (%rax)
    pop %rdx
    pop %rax
    iretq

    // The local APIC timer (irq_timer_start), counted apart from the device interrupts, with
    // the TSC when it was taken.
    .p2align 4
    .globl irq_timer_stub
irq_timer_stub:
    push %rax
    push %rdx
    incq irq_timer_count(%rip)
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, irq_timer_last_tsc(%rip)
    mov $LAPIC_EOI_ADDR, %eax
    movl $0, (%rax)
    pop %rdx
    pop %rax
    iretq

    // MSIs (pci.c): vector MSI_VECTOR_BASE + i counted in msi_count[i], and in irq_count like
    // any device interrupt (irq_wait() callers see it), with the TSC in irq_last_tsc.
    .macro MSI_STUB index
    .p2align 4
msi_stub_\index:
    push %rax
    push %rdx
    incq msi_count + 8 * \index(%rip)
    incq irq_count(%rip)
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, irq_last_tsc(%rip)
    mov $LAPIC_EOI_ADDR, %eax
    movl $0, (%rax)
    pop %rdx
    pop %rax
    iretq
    .endm
    .irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    MSI_STUB \i
    .endr

    // The local APIC's spurious-interrupt vector: no EOI.
    .p2align 4
    .globl irq_spurious_stub
irq_spurious_stub:
    iretq

    .section .rodata
    .p2align 3
    .globl exception_stub_table
exception_stub_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exception_stub_\v
    .endr
    .globl msi_stub_table
msi_stub_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad msi_stub_\v
    .endr

// ---- GDT (also loaded by the AP trampoline and the PVH entry, hence in the low 4 GiB) ----
// Accessed bits are preset so that the CPU never writes to the descriptors.
    .data
    .p2align 4
    .globl gdt, gdt_ptr
gdt:
    .quad 0                     // 0x00 null
    .quad 0x00cf9b000000ffff    // 0x08 GUEST_CS32: flat 32-bit code
    .quad 0x00af9b000000ffff    // 0x10 GUEST_CS64: 64-bit code
    .quad 0x00cf93000000ffff    // 0x18 GUEST_DS:   flat data
gdt_end:
    .p2align 3
    // Limit and base; the 6-byte form (16-bit limit, 32-bit base) is what `lgdtl` reads in
    // 16/32-bit code, the 10-byte form what `lgdt` reads in 64-bit code.
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt

// ---- stacks (not zeroed, not in the file) ----
    .section .noinit, "aw", @nobits
    .p2align 4
    .globl boot_stack_top
boot_stack:
    .skip BOOT_STACK_SIZE
boot_stack_top:

    .section .note.GNU-stack, "", @progbits
