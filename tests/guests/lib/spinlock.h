// libguest: a test-and-set spinlock and an atomic counter for multi-CPU test guests.
// Only `xchg` (implicitly locked) and `lock xadd` are used: KVM's instruction emulator on the
// project's nested-KVM hosts handles those, while it lacks cmpxchg16b.
#pragma once

#include <stdint.h>

struct spinlock {
    volatile uint32_t locked;
};

static inline uint32_t atomic_xchg32(volatile uint32_t* p, uint32_t v) {
    __asm__ volatile("xchgl %0, %1" : "+r"(v), "+m"(*p) : : "memory");
    return v;
}

// Atomically adds `v` to *p and returns the old value.
static inline uint32_t atomic_fetch_add32(volatile uint32_t* p, uint32_t v) {
    __asm__ volatile("lock xaddl %0, %1" : "+r"(v), "+m"(*p) : : "memory", "cc");
    return v;
}

static inline uint32_t atomic_read32(const volatile uint32_t* p) { return *p; }

static inline void spin_lock(struct spinlock* l) {
    while (atomic_xchg32(&l->locked, 1) != 0) {
        while (l->locked) __asm__ volatile("pause" : : : "memory");
    }
}

// Returns 1 if the lock was taken.
static inline int spin_trylock(struct spinlock* l) { return atomic_xchg32(&l->locked, 1) == 0; }

static inline void spin_unlock(struct spinlock* l) {
    __asm__ volatile("" : : : "memory");
    l->locked = 0;  // a plain store releases on x86
}
