// blk stress guest: waits for completions and the diagnosis when one never comes (blk_stress.c).
#include "blk_stress_int.h"

#include "io.h"
#include "irq.h"
#include "str.h"

// ---- diagnosis ----

void dump_state(void) {
    struct virtq* q = st.q;
    const uint64_t now = rdtsc();
    // (printf takes at most 255 characters a call.)
    printf("stress: state: %lu of %lu requests done, %u in flight, %lu issued%s\n", st.done, st.goal, st.inflight,
           st.issued, st.verifying ? " (verify phase)" : "");
    printf("stress: ring: avail.idx %u, used.idx %u, last_used %u, used_event %u, avail_event %u, avail.flags 0x%x, "
           "used.flags 0x%x, free descriptors %u\n",
           q->avail->idx, q->used->idx, q->last_used, *virtq_used_event(q), *virtq_avail_event(q), q->avail->flags,
           q->used->flags, q->num_free);
    printf("stress: device: InterruptStatus 0x%x, Status 0x%x; notifications %u (%u suppressed), irqs %lu, ticks %lu\n",
           virtio_read32(&st.b->v, VIRTIO_MMIO_INTERRUPT_STATUS), virtio_status(&st.b->v), q->notifications,
           q->suppressed, irq_count - st.irqs0, irq_timer_count - st.ticks0);
    // The oldest requests in flight, oldest first.
    uint64_t after = 0;
    for (unsigned shown = 0; shown < 8; shown++) {
        const struct req* best = NULL;
        for (unsigned i = 0; i < MAX_SLOTS; i++) {
            const struct req* r = &reqs[i];
            if (r->busy && r->number > after && (!best || r->number < best->number)) best = r;
        }
        if (!best) break;
        int used = 0;  // its completion is in the used ring, not taken yet
        for (uint16_t i = q->last_used; i != q->used->idx && !used; i++)
            used = q->used->ring[i % q->size].id == best->head;
        printf("stress: in flight: #%lu %s of sectors %lu+%u, shape %s (%u data descriptors), head %u, status byte "
               "0x%x, for %lu cycles%s\n",
               best->number, kind_names[best->kind], best->sector, best->nsect, shape_names[best->shape], best->pieces,
               best->head, *best->status, now - best->submitted, used ? " (completed, in the used ring)" : "");
        after = best->number;
    }
}

// Returns 0, or -1 (after FAIL) if the oldest request has been in flight for STALL_CYCLES or the
// device wants a reset.
static int check_health(uint64_t now) {
    const struct req* oldest = NULL;
    for (unsigned i = 0; i < MAX_SLOTS; i++) {
        if (reqs[i].busy && (!oldest || reqs[i].number < oldest->number)) oldest = &reqs[i];
    }
    if (oldest && now - oldest->submitted >= STALL_CYCLES) {
        STRESS_FAIL("request #%lu (%s of sectors %lu+%u) saw no completion for %lu TSC cycles; %lu requests done, "
                    "%u in flight\n",
                    oldest->number, kind_names[oldest->kind], oldest->sector, oldest->nsect, now - oldest->submitted,
                    st.done, st.inflight);
        return -1;
    }
    if (virtio_status(&st.b->v) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
        STRESS_FAIL("DEVICE_NEEDS_RESET after %lu requests done, %u in flight\n", st.done, st.inflight);
        return -1;
    }
    return 0;
}

// One late wake-up more of a kind (see note_wakeup); the first three are printed.
static void count_late_wakeup(uint64_t* n, uint64_t* longest, uint64_t cycles, const char* what) {
    (*n)++;
    if (cycles > *longest) *longest = cycles;
    if (*n <= 3) printf("stress: %s: %lu TSC cycles (%lu requests done)\n", what, cycles, st.done);
}

// Called after a sleep in which the device's interrupt was taken (irq_count was `irqs`, the tick
// count `ticks`; `ready_since`: when a tick found the completions there without their interrupt,
// or 0). Counts two ways of waking up late that the tick recovers from:
//   missed wake-up  the interrupt was taken, yet the CPU stayed halted until the tick: it came
//                   inside the interrupt shadow of `sti`, right before `hlt` (the nested-SVM bug
//                   behind issue 13, README); the handler ran, the HLT did not end
//   late interrupt  it came LATE_IRQ_CYCLES or more after a tick saw the completions there (an
//                   interrupt lost on its way in and raised again by the VMM's watchdog)
static void note_wakeup(uint64_t irqs, uint64_t ticks, uint64_t ready_since) {
    const uint64_t irq_at = irq_last_tsc, tick_at = irq_timer_last_tsc;
    if (irq_at != 0 && irq_count == irqs + 1 && irq_timer_count != ticks && tick_at > irq_at &&
        tick_at - irq_at >= MISSED_WAKEUP_CYCLES) {
        count_late_wakeup(&st.missed_wakeups, &st.max_missed_wakeup, tick_at - irq_at,
                          "missed wake-up (the device's interrupt taken, the CPU halted on until the tick)");
    }
    if (irq_at != 0 && ready_since && irq_at > ready_since && irq_at - ready_since >= LATE_IRQ_CYCLES) {
        count_late_wakeup(&st.late_irqs, &st.max_late_irq, irq_at - ready_since,
                          "late interrupt (after the completions were in the used ring)");
    }
}

// A driver runs with interrupts on: takes an interrupt that came while the guest did not sleep and
// acknowledges it as a handler would (left unacknowledged, the VMM's watchdog would raise it
// again after 200 ms, as if it had been lost). Done after the waits that did not sleep in a share
// of them that each epoch draws: in the others an interrupt stays pending until the next `sti;
// hlt`, which is what lets the nested-SVM bug (note_wakeup) strike.
static void take_pending_interrupt(struct virtio_dev* d) {
    const uint64_t irqs = irq_count;
    irq_take_pending();
    if (irq_count != irqs) virtio_isr_ack(d, virtio_isr_read(d));
}

// Waits until at least `want` used elements are there: spinning on the used ring (interrupts
// suppressed) if `poll`, else asleep until the device's interrupt. Returns 0 or -1 (after FAIL).
int wait_for(unsigned want, int poll) {
    struct virtq* q = st.q;
    struct virtio_dev* d = &st.b->v;
    uint64_t checked = rdtsc();
    if (poll) {
        st.polls++;
        if (q->event_idx) *virtq_used_event(q) = (uint16_t)(q->last_used + 0x8000);
        else q->avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
        while (virtq_used_pending(q) < want) {
            cpu_pause();
            const uint64_t now = rdtsc();
            if (now - checked >= HEALTH_CYCLES) {
                if (check_health(now)) return -1;
                checked = now;
            }
        }
        if (percent(st.take_pct)) take_pending_interrupt(d);
        return 0;
    }
    // Ask for an interrupt once `want` elements are there ...
    if (q->event_idx) *virtq_used_event(q) = (uint16_t)(q->last_used + want - 1);
    else q->avail->flags = 0;
    // ... and make that store visible before the used index is read: otherwise the device could
    // publish, read the old used_event and skip the interrupt while we read the old index and
    // sleep (see bench_wait_irq in blk_bench.c).
    mb();
    if (virtq_used_pending(q) >= want) {
        st.no_wait++;
        if (percent(st.take_pct)) take_pending_interrupt(d);
        return 0;
    }
    st.sleeps++;
    uint64_t ready_since = 0;
    for (;;) {
        const uint64_t irqs = irq_count, ticks = irq_timer_count;
        irq_wait();  // the device's interrupt, or the tick
        const uint64_t now = rdtsc();
        if (irq_count != irqs) {
            note_wakeup(irqs, ticks, ready_since);
            virtio_isr_ack(d, virtio_isr_read(d));
            if (virtq_used_pending(q) >= want) return 0;
            ready_since = 0;
        } else if (virtq_used_pending(q) >= want) {
            // Woken by the tick: what we wait for is there, but its interrupt has not come (yet).
            if (!ready_since) {
                ready_since = now;
            } else if (now - ready_since >= LOST_IRQ_CYCLES) {
                STRESS_FAIL("lost interrupt: the %u completion(s) waited for sat in the used ring (used.idx %u, "
                            "used_event %u) for %lu TSC cycles, no interrupt; %lu requests done, %u in flight\n",
                            want, q->used->idx, *virtq_used_event(q), now - ready_since, st.done, st.inflight);
                return -1;
            }
        }
        if (now - checked >= HEALTH_CYCLES) {
            if (check_health(now)) return -1;
            checked = now;
        }
    }
}

