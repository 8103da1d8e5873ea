// libguest: PVH entry (linked only into PVH guests).
//
// The XEN_ELFNOTE_PHYS32_ENTRY note tells the VMM to enter at _start_pvh32 in 32-bit protected
// mode, paging off, flat CS/DS, EBX = physical address of struct hvm_start_info. This code
// identity-maps 0 - 4 GiB with 2 MiB pages (tables in .noinit), enables PAE, EFER.LME and
// paging, and far-jumps into 64-bit code on libguest's GDT, then joins start64_common.

#include "guest_defs.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define PTE_PRESENT_RW 0x3
#define PDE_LARGE_PRESENT_RW 0x83  // 2 MiB page

    .section .note.Xen, "a", @note
    .p2align 2
    .long 4                         // namesz: "Xen\0"
    .long 4                         // descsz
    .long XEN_ELFNOTE_PHYS32_ENTRY  // type
    .asciz "Xen"
    .long _start_pvh32              // desc: 32-bit physical entry address

    .section .text.entry, "ax"
    .code32
    .globl _start_pvh32
    .type _start_pvh32, @function
_start_pvh32:
    cli
    cld
    mov %ebx, %esi                  // keep hvm_start_info
    lgdt gdt_ptr
    mov $GUEST_DS, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss

    // PML4 and PDPT: clear both pages (adjacent, 2 x 1024 dwords).
    mov $pvh_pml4, %edi
    mov $2048, %ecx
    xor %eax, %eax
1:  mov %eax, (%edi)
    add $4, %edi
    dec %ecx
    jnz 1b
    movl $(pvh_pdpt + PTE_PRESENT_RW), pvh_pml4
    // PDPT[0..3] -> the four page directories.
    mov $pvh_pdpt, %edi
    mov $(pvh_pd + PTE_PRESENT_RW), %eax
    mov $4, %ecx
2:  mov %eax, (%edi)
    add $8, %edi
    add $0x1000, %eax
    dec %ecx
    jnz 2b
    // 4 x 512 PDEs of 2 MiB pages: 0 - 4 GiB (the high dwords are all zero).
    mov $pvh_pd, %edi
    mov $PDE_LARGE_PRESENT_RW, %eax
    mov $2048, %ecx
3:  mov %eax, (%edi)
    movl $0, 4(%edi)
    add $8, %edi
    add $0x200000, %eax
    dec %ecx
    jnz 3b

    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov $pvh_pml4, %eax
    mov %eax, %cr3
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    or $(CR0_PG | CR0_PE), %eax
    mov %eax, %cr0
    ljmp $GUEST_CS64, $pvh_long_mode

    .code64
pvh_long_mode:
    mov $BOOT_PROTOCOL_PVH, %edi
    mov %esi, %esi                  // hvm_start_info, zero-extended
    jmp start64_common
    .size _start_pvh32, . - _start_pvh32

    .section .noinit, "aw", @nobits
    .p2align 12
pvh_pml4:
    .skip 0x1000
pvh_pdpt:
    .skip 0x1000
pvh_pd:
    .skip 0x4000

    .section .note.GNU-stack, "", @progbits
