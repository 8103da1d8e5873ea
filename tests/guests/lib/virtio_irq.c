// libguest: sleeping on a virtio device's interrupt, bounded, with lost-interrupt detection
// (see virtio_irq.h).
#include "virtio_irq.h"

#include "guest.h"
#include "io.h"
#include "irq.h"
#include "str.h"

const char* virtio_irq_setup(struct virtio_irq_waiter* w, struct virtio_dev* d, uint32_t tick_us, uint32_t lost_ms) {
    memset(w, 0, sizeof(*w));
    w->dev = d;
    w->lost_ms = lost_ms;
    // virtio-pci: MSI-X, set up by virtio_negotiate(); virtio-mmio: the GSI's I/O APIC pin.
    const char* err = virtio_is_pci(d) ? irq_lapic_setup() : irq_route_gsi(d->gsi);
    if (err) return err;
    w->tsc_per_ms = irq_timer_start(tick_us);
    if (!w->tsc_per_ms) return "the local APIC timer does not tick";
    w->config_gen = virtio_config_generation(d);
    return NULL;
}

uint64_t virtio_irq_ms_since(const struct virtio_irq_waiter* w, uint64_t tsc) {
    return (rdtsc() - tsc) / w->tsc_per_ms;
}

// The first queue of `mask` with a used element the driver has not taken: its index + 1, or 0.
static unsigned pending_queue(const struct virtio_dev* d, uint32_t mask) {
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) {
        if ((mask & (1u << i)) && d->vq[i].size && virtq_used_pending(&d->vq[i])) return i + 1;
    }
    return 0;
}

// The used indices of the queues in `mask`, side by side: changes while the device publishes.
static uint64_t used_indices(const struct virtio_dev* d, uint32_t mask) {
    uint64_t v = 0;
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) {
        if ((mask & (1u << i)) && d->vq[i].size) v |= (uint64_t)d->vq[i].used->idx << (16 * i);
    }
    return v;
}

static void describe_lost(struct virtio_irq_waiter* w, unsigned q1, uint32_t gen, uint64_t ms) {
    struct virtio_dev* d = w->dev;
    const uint32_t isr = virtio_isr_read(d);
    if (q1) {
        const struct virtq* q = &d->vq[q1 - 1];
        snprintf(w->lost, sizeof(w->lost),
                 "queue %u: used idx %u, driver at %u, used_event %u, avail flags 0x%x, InterruptStatus 0x%x: "
                 "no interrupt %lu ms after the first sight",
                 q1 - 1, q->used->idx, q->last_used, q->avail->ring[q->size], q->avail->flags, isr, ms);
    } else {
        snprintf(w->lost, sizeof(w->lost),
                 "ConfigGeneration %u -> %u, InterruptStatus 0x%x: no interrupt %lu ms after the first sight",
                 w->config_gen, gen, isr, ms);
    }
}

void virtio_irq_ack(struct virtio_irq_waiter* w) { virtio_isr_ack(w->dev, virtio_isr_read(w->dev)); }

enum virtio_irq_result virtio_irq_sleep(struct virtio_irq_waiter* w, uint32_t queue_mask, uint32_t max_ms) {
    struct virtio_dev* d = w->dev;
    virtio_irq_ack(w);  // what the driver is about to look at needs no interrupt any more
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) {
        if ((queue_mask & (1u << i)) && d->vq[i].size) virtq_interrupts(&d->vq[i], 1);
    }
    // used_event before the used index (store-load): see virtio_irq.h.
    mb();
    uint32_t gen = virtio_config_generation(d);
    if (pending_queue(d, queue_mask) || gen != w->config_gen) {
        w->config_gen = gen;
        return VIRTIO_IRQ_READY;
    }
    const uint64_t start = rdtsc(), base = irq_count;
    uint64_t seen_at = 0;   // when a tick first found work pending
    uint64_t quiet_at = 0;  // since when the rings and ConfigGeneration have not changed
    uint64_t last_used = 0;
    uint32_t last_gen = gen;
    w->sleeps++;
    for (;;) {
        irq_wait();
        if (irq_count != base) {
            w->isr = virtio_isr_read(d);
            virtio_isr_ack(d, w->isr);
            w->config_gen = virtio_config_generation(d);
            w->irqs++;
            if (seen_at) {
                const uint64_t ms = virtio_irq_ms_since(w, seen_at);
                w->late++;
                if (ms > w->late_max_ms) w->late_max_ms = ms;
            }
            return VIRTIO_IRQ_WOKEN;
        }
        w->ticks++;
        const unsigned q1 = pending_queue(d, queue_mask);
        const uint64_t used = used_indices(d, queue_mask);
        gen = virtio_config_generation(d);
        if (q1 || gen != w->config_gen) {
            // A device may publish a batch element by element and interrupt once at its end:
            // lost only once nothing has changed for lost_ms.
            if (!seen_at || used != last_used || gen != last_gen) quiet_at = rdtsc();
            if (!seen_at) seen_at = quiet_at;
            last_used = used;
            last_gen = gen;
            if (virtio_irq_ms_since(w, quiet_at) >= w->lost_ms) {
                describe_lost(w, q1, gen, virtio_irq_ms_since(w, seen_at));
                return VIRTIO_IRQ_LOST;
            }
        } else if (virtio_irq_ms_since(w, start) >= max_ms) {
            return VIRTIO_IRQ_TIMEOUT;
        }
    }
}
