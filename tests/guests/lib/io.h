// libguest: port I/O, MMIO and the few privileged CPU instructions the test guests use.
// Everything here is a single instruction; see PLATFORM.md for which ones KVM's emulator lacks
// (never use int3, fwait, popcnt, clac, xrstor or cmpxchg16b in a test guest).
#pragma once

#include <stdint.h>

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }

static inline uint8_t inb(uint16_t port) {
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint16_t inw(uint16_t port) {
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t inl(uint16_t port) {
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

// A pointer to guest-physical address `addr` (both boot paths run on an identity map of 0 - 4 GiB).
// The empty asm hides the constant from GCC, which would otherwise warn about accesses to
// addresses in the first page (the BIOS data area, for example).
static inline void* phys_ptr(uint64_t addr) {
    void* p = (void*)(uintptr_t)addr;
    __asm__("" : "+r"(p));
    return p;
}

// MMIO: one access of exactly the given width (volatile, never split or merged).
static inline uint8_t mmio_read8(uint64_t addr) { return *(volatile uint8_t*)addr; }
static inline uint16_t mmio_read16(uint64_t addr) { return *(volatile uint16_t*)addr; }
static inline uint32_t mmio_read32(uint64_t addr) { return *(volatile uint32_t*)addr; }
static inline uint64_t mmio_read64(uint64_t addr) { return *(volatile uint64_t*)addr; }
static inline void mmio_write8(uint64_t addr, uint8_t v) { *(volatile uint8_t*)addr = v; }
static inline void mmio_write16(uint64_t addr, uint16_t v) { *(volatile uint16_t*)addr = v; }
static inline void mmio_write32(uint64_t addr, uint32_t v) { *(volatile uint32_t*)addr = v; }
static inline void mmio_write64(uint64_t addr, uint64_t v) { *(volatile uint64_t*)addr = v; }

// Compiler-only barrier; x86 keeps stores in order, so this is enough around shared flags.
static inline void barrier(void) { __asm__ volatile("" : : : "memory"); }
// Full barrier (a locked add to the stack: mfence is not needed and lfence is not emulated).
static inline void mb(void) { __asm__ volatile("lock addl $0, (%%rsp)" : : : "memory", "cc"); }

static inline void cpu_pause(void) { __asm__ volatile("pause" : : : "memory"); }
static inline void cpu_cli(void) { __asm__ volatile("cli" : : : "memory"); }
static inline void cpu_sti(void) { __asm__ volatile("sti" : : : "memory"); }
static inline void cpu_hlt(void) { __asm__ volatile("hlt" : : : "memory"); }

static inline uint64_t rdtsc(void) {
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline uint64_t rdmsr(uint32_t msr) {
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v) {
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

static inline uint64_t read_cr3(void) {
    uint64_t v;
    __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}

static inline void cpuid(uint32_t leaf, uint32_t subleaf, uint32_t* a, uint32_t* b, uint32_t* c, uint32_t* d) {
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(subleaf));
}
