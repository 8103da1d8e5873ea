// Test guest "triple_fault": crashes on purpose. It loads an interrupt descriptor table of limit
// 0, then raises a breakpoint: the #BP cannot be delivered (#GP), nor can the #GP (#DF), nor the
// #DF, so the CPU shuts down (a triple fault, KVM's shutdown exit). embervm must end with status
// 3, not the 0 of a clean reboot (tests/guests/meson.build: guest-triple-fault).
#include "guest.h"

int guest_main(void) {
    printf("triple_fault: loading an empty IDT and raising #BP\n");
    const struct {
        uint16_t limit;
        uint64_t base;
    } GUEST_PACKED empty_idt = {0, 0};
    __asm__ volatile("cli\n\tlidt %0\n\tint3" : : "m"(empty_idt) : "memory");
    printf("triple_fault: FAIL: still running after the fault\n");
    return GUEST_FAIL;
}
