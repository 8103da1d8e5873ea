// blk test guest: blk.mode=bench, timed phases of requests at a fixed queue depth (blk.c).
#include "blk.h"

#include "io.h"
#include "irq.h"
#include "str.h"

#define BENCH_QD_MAX 32
#define BENCH_POOL_BYTES (1u << 20)
static uint8_t bench_pool[BENCH_POOL_BYTES] __attribute__((section(".noinit"), aligned(4096)));
static struct virtio_blk_req_hdr bench_hdr[BENCH_QD_MAX] __attribute__((aligned(16)));
static volatile uint8_t bench_status[BENCH_QD_MAX][16] __attribute__((aligned(16)));
static uint16_t bench_head_slot[VIRTQ_MAX_SIZE];

// Spins on the used ring (guest memory only: no VM exit while waiting) until the device returns
// something. Returns 0, or -1 after VIRTIO_WAIT_MIN_TSC_CYCLES without a completion.
static int bench_poll_ring(struct virtq* q) {
    const uint64_t start = rdtsc();
    for (uint32_t i = 1; !virtq_used_pending(q); i++) {
        if ((i & 1023) == 0 && rdtsc() - start >= VIRTIO_WAIT_MIN_TSC_CYCLES) return -1;
        cpu_pause();
    }
    return 0;
}

// Sleeps until the used ring holds something: `sti; hlt` until the device's interrupt, then, as
// Linux's virtio-mmio interrupt handler does, InterruptStatus read and acknowledged (which also
// lowers a level-triggered line). Returns 0, or -1 after VIRTIO_WAIT_MIN_TSC_CYCLES without a
// completion (if the interrupt never comes, hlt does not return: the host's timeout ends it).
static int bench_wait_irq(struct blk_dev* b, struct virtq* q) {
    const uint64_t start = rdtsc();
    // virtq_wait_used moved used_event on since the last kick's mb(): that store must be visible
    // before the used index is read. Otherwise (x86 lets a load pass an earlier store) the device
    // can publish, read the old used_event and skip the interrupt while we read the old index and
    // halt for good: a lost wake-up.
    mb();
    while (!virtq_used_pending(q)) {
        irq_wait();
        virtio_isr_ack(&b->v, virtio_isr_read(&b->v));
        if (rdtsc() - start >= VIRTIO_WAIT_MIN_TSC_CYCLES) return -1;
    }
    return 0;
}

// `ops` requests of `req_bytes` each, at most `qd` in flight; random 4 KiB-aligned offsets or
// sequential ones (wrapping at the end of the drive). Returns 0 or -1 (after printing why).
static int bench_phase(struct blk_dev* b, const char* name, int is_write, uint32_t req_bytes, unsigned qd,
                       uint64_t ops, int random) {
    struct virtq* q = &b->v.vq[0];
    const uint64_t req_sectors = req_bytes / VIRTIO_BLK_SECTOR_SIZE;
    if (qd > BENCH_QD_MAX || (uint64_t)qd * req_bytes > BENCH_POOL_BYTES || b->capacity < req_sectors) {
        FAIL("bench %s: %u x %u bytes do not fit (capacity %lu sectors)\n", name, qd, req_bytes, b->capacity);
        return -1;
    }
    const uint64_t positions = b->capacity / req_sectors;  // sequential: request-sized steps
    const uint64_t random_slots = b->capacity / 8;         // random: 4 KiB-aligned offsets
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ req_bytes ^ qd;
    unsigned free_slots[BENCH_QD_MAX], nfree = 0;
    for (unsigned i = 0; i < qd; i++) free_slots[nfree++] = qd - 1 - i;
    uint64_t issued = 0, done = 0;
    unsigned inflight = 0, max_inflight = 0;

    printf("bench: %s start\n", name);
    const uint64_t irqs_before = irq_count;
    while (done < ops) {
        int added = 0;
        while (inflight < qd && issued < ops) {
            const unsigned slot = free_slots[nfree - 1];
            uint64_t sector;
            if (random) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                sector = (rng % random_slots) * 8;
                if (sector + req_sectors > b->capacity) sector = b->capacity - req_sectors;
            } else {
                sector = (issued % positions) * req_sectors;
            }
            bench_hdr[slot] = (struct virtio_blk_req_hdr){is_write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, 0, sector};
            bench_status[slot][0] = 0xff;
            const struct virtio_buf bufs[3] = {
                {(uint64_t)(uintptr_t)&bench_hdr[slot], sizeof(bench_hdr[slot]), 0},
                {(uint64_t)(uintptr_t)(bench_pool + (size_t)slot * req_bytes), req_bytes, (uint8_t)!is_write},
                {(uint64_t)(uintptr_t)&bench_status[slot][0], 1, 1},
            };
            const int head = virtq_add(q, bufs, 3);
            if (head < 0) break;
            bench_head_slot[head] = (uint16_t)slot;
            nfree--;
            issued++;
            inflight++;
            added = 1;
        }
        if (inflight > max_inflight) max_inflight = inflight;
        if (added) {
            virtq_publish(q);
            virtq_kick(&b->v, q);
        }
        if ((opt.bench_poll ? bench_poll_ring(q) : bench_wait_irq(b, q)) != 0) {
            FAIL("bench %s: no completion for 2^35 TSC cycles after %lu requests (status 0x%x)\n", name, done,
                 virtio_status(&b->v));
            return -1;
        }
        do {
            struct virtq_used_elem e;
            const enum virtq_wait_result w = virtq_wait_used(&b->v, q, &e);
            if (w != VIRTQ_USED || e.id >= q->size || virtq_free_chain(q, e.id) != 0) {
                FAIL("bench %s: %s after %lu requests\n", name,
                     w == VIRTQ_TIMEOUT ? "timeout" : w == VIRTQ_NEEDS_RESET ? "DEVICE_NEEDS_RESET" : "bad used id",
                     done);
                return -1;
            }
            const unsigned slot = bench_head_slot[e.id];
            if (bench_status[slot][0] != VIRTIO_BLK_S_OK) {
                FAIL("bench %s: request status %u\n", name, bench_status[slot][0]);
                return -1;
            }
            free_slots[nfree++] = slot;
            inflight--;
            done++;
        } while (virtq_used_pending(q));
    }
    // The host takes the first byte of this line as the end of the phase.
    const uint64_t irqs = irq_count - irqs_before;
    printf("bench: %s done ops=%lu bytes=%lu qd=%u irqs=%lu\n", name, done, done * req_bytes, max_inflight, irqs);
    return 0;
}

void bench_drive(struct blk_dev* b) {
    const uint32_t seq_bytes = 128 * 1024;
    const uint64_t seq_ops = opt.bench_seq_mib * (1024 * 1024 / seq_bytes);
    printf("bench: drive %s, %lu sectors, %s, %s\n", b->id, b->capacity, b->event_idx ? "EVENT_IDX" : "no EVENT_IDX",
           opt.bench_poll ? "polling the used ring" : "waiting for interrupts");
    if (!opt.bench_poll) {
        const char* err = irq_route_gsi(b->v.gsi);
        if (err) {
            FAIL("bench: GSI %u: %s\n", b->v.gsi, err);
            return;
        }
    }
    if (bench_phase(b, "randread-4k-qd1", 0, 4096, 1, opt.bench_ops, 1) == 0 &&
        bench_phase(b, "randread-4k-qd32", 0, 4096, 32, 2 * opt.bench_ops, 1) == 0 &&
        bench_phase(b, "seqread-128k-qd8", 0, seq_bytes, 8, seq_ops, 0) == 0 &&
        bench_phase(b, "seqwrite-128k-qd8", 1, seq_bytes, 8, seq_ops, 0) == 0 && b->flush)
        flush(b);  // untimed: nothing dirty is left for the next run
    if (!opt.bench_poll) irq_unroute_gsi(b->v.gsi);
}
