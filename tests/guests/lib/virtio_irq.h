// libguest: sleeping until a virtio device interrupts, the way a real driver waits, with the
// bounds a test needs: the sleep never lasts for good, and a lost interrupt is reported.
//
//   virtio_irq_setup()   routes the device's GSI (irq.h) and starts the local APIC timer, which
//                        wakes every sleep now and then (and gives the TSC rate)
//   virtio_irq_sleep()   asks for used-buffer interrupts on the given queues, then halts until
//                        the device's interrupt comes, or returns at once if a used element or a
//                        configuration change is already there
//
// A lost interrupt: the device published a used element on a queue whose driver asked for an
// interrupt (used_event at the index it waits for, or no VIRTQ_AVAIL_F_NO_INTERRUPT), or bumped
// ConfigGeneration, while the driver slept, and no interrupt came (see below for how long). Before it
// halts, the driver stores used_event and then, after a full barrier, reads the used index: if
// that read still shows nothing new, the device, which stores the used index and then (after its
// own barrier) reads used_event, must see the new used_event and interrupt (virtio 1.2, 2.7.10).
// On a timer tick the waiter looks at the used indices and ConfigGeneration; work visible
// without an interrupt while nothing changes any more (no used index, no ConfigGeneration) for
// `lost_ms` is reported (VIRTIO_IRQ_LOST with a description): a device may publish a batch
// element by element and interrupt only at its end. An interrupt that comes after the work was
// seen on a tick is counted as late, from that first sight (the device still busy with its
// batch, or the VMM's thread descheduled between publishing and signalling). The tick also ends
// a halt whose wake-up interrupt was taken just before the `hlt` (QEMU's SVM emulation lets an
// interrupt in inside the STI shadow; see the project README): that interrupt was counted, so
// the sleep ends as woken, not as lost.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "virtio.h"

struct virtio_irq_waiter {
    struct virtio_dev* dev;
    uint64_t tsc_per_ms;  // measured against the local APIC timer
    uint32_t lost_ms;
    uint32_t config_gen;  // ConfigGeneration the driver has seen (updated by every wake-up)
    uint32_t isr;         // InterruptStatus bits of the last interrupt (acknowledged)
    // Counters.
    uint64_t sleeps;      // halts that waited for an interrupt
    uint64_t irqs;        // device interrupts that ended a sleep
    uint64_t ticks;       // timer ticks inside sleeps
    uint64_t late;        // interrupts that came after the work was seen on a tick
    uint64_t late_max_ms;
    char lost[200];  // VIRTIO_IRQ_LOST: what was pending, for how long
};

enum virtio_irq_result {
    VIRTIO_IRQ_READY,    // work was pending before the sleep: no halt
    VIRTIO_IRQ_WOKEN,    // the device interrupted (w->isr holds InterruptStatus)
    VIRTIO_IRQ_TIMEOUT,  // max_ms passed with nothing pending
    VIRTIO_IRQ_LOST,     // work pending, rings quiet and no interrupt for lost_ms (w->lost says what)
};

// Routes d->gsi to this CPU, starts the timer (a tick every `tick_us`), reads ConfigGeneration.
// Returns NULL, or what failed.
const char* virtio_irq_setup(struct virtio_irq_waiter* w, struct virtio_dev* d, uint32_t tick_us, uint32_t lost_ms);

// Sleeps until the device interrupts, for at most `max_ms` (the caller's own bound), with
// used-buffer interrupts asked for on the queues in `queue_mask` (bit i: d->vq[i]). The caller
// must have taken every used element of those queues first, or the sleep returns READY.
enum virtio_irq_result virtio_irq_sleep(struct virtio_irq_waiter* w, uint32_t queue_mask, uint32_t max_ms);

// Acknowledges whatever InterruptStatus holds, as a driver's interrupt handler does. A driver
// that takes used elements without sleeping (polling, or busy) calls it when it does, so that
// the device does not see an interrupt left unacknowledged (embervm's watchdog raises such an
// interrupt again). virtio_irq_sleep() does it too.
void virtio_irq_ack(struct virtio_irq_waiter* w);

// Milliseconds since `tsc` (a rdtsc() value), by the measured rate.
uint64_t virtio_irq_ms_since(const struct virtio_irq_waiter* w, uint64_t tsc);
