// libguest: the AP start-up trampoline. smp.c copies [ap_trampoline_start, ap_trampoline_end)
// to AP_TRAMPOLINE_ADDR; a SIPI with vector AP_TRAMPOLINE_ADDR >> 12 starts an AP there in real
// mode (CS = AP_TRAMPOLINE_ADDR >> 4, IP = 0). The code is position-dependent on that address.

#include "guest_defs.h"

#define TRAMPOLINE_ADDR(label) (AP_TRAMPOLINE_ADDR + ((label) - ap_trampoline_start))

    .section .rodata.trampoline, "a"
    .p2align 4
    .globl ap_trampoline_start, ap_trampoline_end, ap_trampoline_cr3
    .code16
ap_trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl trampoline_gdt_ptr - ap_trampoline_start   // DS-relative (DS = CS)
    mov %cr0, %eax
    or $CR0_PE, %eax
    mov %eax, %cr0
    ljmpl $GUEST_CS32, $TRAMPOLINE_ADDR(trampoline_32)

    .code32
trampoline_32:
    mov $GUEST_DS, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov TRAMPOLINE_ADDR(ap_trampoline_cr3), %eax
    mov %eax, %cr3
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    or $(CR0_PG | CR0_PE), %eax
    mov %eax, %cr0
    ljmp $GUEST_CS64, $ap_entry64      // into the image (linked below 4 GiB)

    .p2align 3
trampoline_gdt_ptr:                    // libguest's GDT (entry64.S)
    .word 4 * 8 - 1
    .long gdt
ap_trampoline_cr3:                     // written by smp.c: the boot CPU's CR3
    .long 0
ap_trampoline_end:

// ---- 64-bit AP entry, in the image ----
    .text
    .code64
ap_entry64:
    mov $GUEST_DS, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov $1, %eax
    lock xadd %eax, ap_next_stack(%rip)
    cmp $(GUEST_MAX_CPUS - 1), %eax
    jae cpu_halt_forever
    inc %eax
    imul $AP_STACK_SIZE, %eax
    lea ap_stacks(%rip), %rsp
    add %rax, %rsp
    xor %ebp, %ebp
    call smp_ap_start
    jmp cpu_halt_forever

    .bss
    .p2align 2
ap_next_stack:
    .long 0

    .section .noinit, "aw", @nobits
    .p2align 4
ap_stacks:
    .skip AP_STACK_SIZE * (GUEST_MAX_CPUS - 1)

    .section .note.GNU-stack, "", @progbits
