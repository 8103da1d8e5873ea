// Test guest "balloon", balloon.mode=stress: follows the host's balloon target while it changes
// (run-balloon-test --mode stress changes it through the HTTP API), inflating and deflating in
// random batches, to catch a lost completion, kick or interrupt in the queue and notification
// code (split rings, ioeventfd kicks, irqfd interrupts) and in the device's page accounting.
//
// The balloon's pages come from a region of balloon.region_mib (default 128) MiB above the
// image; each page is the guest's, in flight (inflate, deflate, reporting) or in the balloon.
//   inflate/deflate  chains of 1 - 4096 PFNs (random, contiguous or scattered, some in reverse
//                    order) as 1 descriptor, 2 - 4 descriptors split at any byte, or an indirect
//                    table; in phases of 1, 2, 4, 8 or 32 chains in flight (the queue is full
//                    now and then). When the balloon is at the target, some churn: pages out and
//                    others in at once.
//   reporting        (PAGE_REPORTING) runs of the guest's pages, 1 - 4 ranges per chain
//   statistics       (STATS_VQ) the buffer the device hands back is refilled at once, with the
//                    balloon's current size and a sequence number (as minor faults), also in the
//                    middle of inflating
//   `actual`         written (and read back) now and then on the way and whenever the balloon
//                    reaches the target; then "balloon: stress: settled target T actual A" is
//                    printed (the host waits for it and compares the API's view)
//   waiting          mostly asleep until the device interrupts (lib/virtio_irq.h: used elements
//                    and configuration changes without an interrupt are reported as lost),
//                    sometimes polling; random pauses
// Checks (touching a page costs the host a fault or two, far more in a nested VM, so each chain
// checks its first, last and about 16 other pages): a page the guest owns keeps what it wrote
// (before it goes into the balloon, an eighth of all pages at every settle, all at the end: a
// discard of a page that was not given shows here); a page is zero once its inflate or report
// chain is used (the device gave it back to the host) and still zero when it is deflated;
// deflated and reported pages are usable (written and read back); `actual` reads back what was
// written; a chain completes within balloon.stall_ms (default 8000); a target beyond the region
// is an error. When the host sends "done" on the serial port (at target 0), every page must be
// the guest's with its contents: "balloon: stress: done settles=N inflated=P deflated=Q
// reported=R stats=S irqs=I".
//
// Knobs: balloon.seed=N, balloon.region_mib=N, balloon.qsize=N (every queue; default 32),
// balloon.no_event_idx, balloon.no_indirect, balloon.stall_ms=N, balloon.lost_irq_ms=N (default
// 2000); balloon.stress_inject=mask_irq|hang after balloon.stress_inject_at=N chains (default
// 200): the device's interrupt masked at the I/O APIC, or a halt for good with interrupts off.
#include "balloon.h"
#include "guest.h"
#include "io.h"
#include "irq.h"
#include "str.h"
#include "stress.h"
#include "virtio.h"
#include "virtio_irq.h"

#define INFLATE_Q 0
#define DEFLATE_Q 1
#define MAX_PAGES (512 * 256)  // balloon.region_mib at most 512
#define MAX_BATCH 4096         // PFNs per chain (16 KiB; the device takes up to 64 KiB)
#define SLOTS 32               // PFN arrays (chains in flight) per queue
#define MAX_PIECES 4
#define REPORT_RUNS 4
#define TICK_US 10000

enum page_state { PG_GUEST, PG_INFLATING, PG_BALLOON, PG_DEFLATING, PG_REPORTING, PG_STATES };
enum inject { INJECT_NONE, INJECT_MASK_IRQ, INJECT_HANG };

static struct {
    uint64_t seed, region_mib, stall_ms, lost_ms, inject_at;
    enum inject inject;
} opt;

static struct virtio_dev* dev;
static struct virtio_irq_waiter waiter;
static unsigned stats_q, report_q;
static int stats, report, indirect;
static uint64_t base_pfn, npages;
static uint8_t page_state[MAX_PAGES];
static uint16_t page_gen[MAX_PAGES];
static uint64_t count[PG_STATES];

// Chains in flight: per queue role (inflate, deflate, report) a slot per chain.
enum role { R_INFLATE, R_DEFLATE, R_REPORT, ROLES };
static uint32_t pfns[2][SLOTS][MAX_BATCH] __attribute__((section(".noinit"), aligned(4096)));
static struct virtq_desc tables[ROLES][SLOTS][MAX_PIECES] __attribute__((aligned(16)));
static uint16_t slot_free[ROLES][SLOTS], nfree[ROLES], head_slot[ROLES][VIRTQ_MAX_SIZE];
static uint32_t slot_pages[ROLES][SLOTS];                             // PFNs or pages in the chain
static uint32_t run_first[SLOTS][REPORT_RUNS], run_len[SLOTS][REPORT_RUNS], runs[SLOTS];  // reports
static uint8_t stats_buf[STATS_BUF_BYTES] __attribute__((aligned(64)));
static uint64_t ram_used, stats_seq;
static uint32_t actual_written;

static struct {
    uint64_t inflated, deflated, reported, chains, stats, settles, actual_writes, queue_full, churns, polls, pauses;
    uint64_t full_checks;
} st;

#define FAIL(...)                                      \
    do {                                               \
        printf("balloon: stress: FAIL: " __VA_ARGS__); \
        print_state();                                 \
        return -1;                                     \
    } while (0)

static unsigned role_queue(enum role r) { return r == R_INFLATE ? INFLATE_Q : r == R_DEFLATE ? DEFLATE_Q : report_q; }

static void print_state(void) {
    printf("balloon: stress: state: target %u, actual written %u; pages: guest %lu, inflating %lu, balloon %lu, "
           "deflating %lu, reporting %lu\n", virtio_config_read32(dev, CFG_NUM_PAGES), actual_written,
           count[PG_GUEST], count[PG_INFLATING], count[PG_BALLOON], count[PG_DEFLATING], count[PG_REPORTING]);
    for (unsigned qi = 0; qi < VIRTIO_MAX_QUEUES; qi++) {
        const struct virtq* q = &dev->vq[qi];
        if (!q->size) continue;
        printf("balloon: stress: state: queue %u: avail %u, used %u (driver at %u), %u descriptors free\n", qi,
               q->avail_idx, q->used->idx, q->last_used, q->num_free);
    }
    printf("balloon: stress: state: status 0x%x, InterruptStatus 0x%x, device interrupts %lu, timer ticks %lu\n",
           virtio_status(dev), virtio_isr_read(dev), irq_count, irq_timer_count);
}

// ---- pages ----

static volatile uint64_t* page_word(uint64_t p, unsigned w) {
    return phys_ptr((base_pfn + p) * PAGE + w * 8u);
}

// What a page holds: generation 0 means zeros (given back to the host and not written since),
// else a tag made of generation, PFN and seed at a few words.
static uint64_t tag(uint64_t p) { return (uint64_t)page_gen[p] << 40 ^ (base_pfn + p) ^ opt.seed << 20; }

static const unsigned tag_words[] = {0, 257, PAGE / 8 - 1};

// Writes a new tag into page `p` and reads it back.
static int page_write(uint64_t p) {
    if (++page_gen[p] == 0) page_gen[p] = 1;
    for (unsigned i = 0; i < ARRAY_SIZE(tag_words); i++) *page_word(p, tag_words[i]) = tag(p) + i;
    for (unsigned i = 0; i < ARRAY_SIZE(tag_words); i++) {
        if (*page_word(p, tag_words[i]) != tag(p) + i) FAIL("page 0x%lx does not keep what was written\n", base_pfn + p);
    }
    return 0;
}

// Checks page `p` holds zeros (`zero`) or what page_gen says.
static int page_check(uint64_t p, int zero, const char* when) {
    for (unsigned i = 0; i < ARRAY_SIZE(tag_words); i++) {
        const uint64_t got = *page_word(p, tag_words[i]), want = zero || !page_gen[p] ? 0 : tag(p) + i;
        if (got != want) {
            FAIL("page 0x%lx %s: word %u holds 0x%lx, expected 0x%lx\n", base_pfn + p, when, tag_words[i], got, want);
        }
    }
    return 0;
}

static void set_state(uint64_t p, enum page_state s) {
    count[page_state[p]]--;
    count[s]++;
    page_state[p] = (uint8_t)s;
}

// Pages against their state: the guest's keep their contents, the balloon's read as zeros. All
// of them (every == 1), or a random one in `every`.
static int check_pages(uint32_t every) {
    st.full_checks += every == 1;
    for (uint64_t p = 0; p < npages; p++) {
        // Long with interrupts off (each page a fault or two): acknowledge as a handler would.
        if (waiter.dev && (p & 1023) == 0) virtio_irq_ack(&waiter);
        if (every > 1 && rand_below(every)) continue;
        if (page_state[p] == PG_GUEST && page_check(p, 0, "(the guest's)") != 0) return -1;
        if (page_state[p] == PG_BALLOON && page_check(p, 1, "(in the balloon)") != 0) return -1;
    }
    return 0;
}

// Up to `want` pages in state `from`, moved to `to`, their PFNs into `out`: one contiguous run
// from a random start, or scattered ones; sometimes in reverse order.
static uint32_t pick_pages(enum page_state from, enum page_state to, uint32_t want, uint32_t* out) {
    const uint64_t start = rand_u64() % npages;
    const int scattered = rand_chance(50);
    uint32_t got = 0;
    for (uint64_t i = 0; i < 2 * npages && got < want && count[from]; i++) {
        const uint64_t p = (start + i) % npages;
        if (page_state[p] != from || (scattered && i < npages && rand_chance(50))) continue;
        set_state(p, to);
        out[got++] = (uint32_t)(base_pfn + p);
    }
    if (rand_chance(25)) {
        for (uint32_t i = 0; i < got / 2; i++) {
            const uint32_t t = out[i];
            out[i] = out[got - 1 - i];
            out[got - 1 - i] = t;
        }
    }
    return got;
}

// Whether the i-th of n pages of a chain is checked: the first, the last and about 16 others.
static int sampled(uint32_t i, uint32_t n) { return i == 0 || i + 1 == n || rand_below(n) < 16; }

static uint32_t batch_size(uint64_t limit) {
    const unsigned r = rand_below(100);
    uint64_t n = r < 40 ? 1 + rand_below(16) : r < 80 ? 1 + rand_below(1024) : 1 + rand_below(MAX_BATCH);
    return (uint32_t)(n < limit ? n : limit);
}

// ---- chains ----

// Adds `n` buffers on the role's queue, directly or (sometimes) through the slot's indirect
// table. Returns the head or -1.
static int add(enum role r, uint16_t slot, struct virtio_buf* b, unsigned n) {
    struct virtq* q = &dev->vq[role_queue(r)];
    const int head = indirect && rand_chance(30) ? virtq_add_ex(q, NULL, 0, tables[r][slot], b, n) : virtq_add(q, b, n);
    if (head >= 0) head_slot[r][head] = slot;
    return head;
}

static void kick(enum role r) {
    struct virtq* q = &dev->vq[role_queue(r)];
    virtq_publish(q);
    virtq_kick(dev, q);
}

// One inflate or deflate chain of up to `limit` pages: how many pages went, 0 (no room), or -1.
static int send_pfns(enum role r, uint64_t limit) {
    if (!nfree[r]) return 0;
    const uint16_t slot = slot_free[r][nfree[r] - 1];
    uint32_t* a = pfns[r][slot];
    const enum page_state from = r == R_INFLATE ? PG_GUEST : PG_BALLOON;
    const enum page_state to = r == R_INFLATE ? PG_INFLATING : PG_DEFLATING;
    const uint32_t n = pick_pages(from, to, batch_size(limit), a);
    if (!n) return 0;
    // Each page costs the host a fault or two when touched (more in a nested VM): a sample.
    for (uint32_t i = 0; i < n; i++) {
        const uint64_t p = a[i] - base_pfn;
        if (sampled(i, n) && page_check(p, r == R_DEFLATE, r == R_INFLATE ? "before inflating" : "before deflating")) {
            return -1;
        }
    }
    // The array as 1 descriptor, or 2 - 4 split anywhere (even inside a PFN).
    struct virtio_buf b[MAX_PIECES];
    const unsigned pieces = rand_chance(60) || n * 4 < MAX_PIECES ? 1 : 2 + rand_below(MAX_PIECES - 1);
    stress_split(b, pieces, (uint64_t)(uintptr_t)a, n * 4, 0);
    if (add(r, slot, b, pieces) < 0) {
        for (uint32_t i = 0; i < n; i++) set_state(a[i] - base_pfn, from);  // the queue is full
        st.queue_full++;
        return 0;
    }
    slot_pages[r][slot] = n;
    nfree[r]--;
    st.chains++;
    return (int)n;
}

// Reports 1 - 4 runs of the guest's pages. 1: added, 0: no room or no pages.
static int send_report(void) {
    if (!report || !nfree[R_REPORT]) return 0;
    const uint16_t slot = slot_free[R_REPORT][nfree[R_REPORT] - 1];
    struct virtio_buf b[REPORT_RUNS];
    unsigned n = 0, pages = 0;
    const unsigned want = 1 + rand_below(REPORT_RUNS);
    for (unsigned tries = 0; n < want && tries < 8; tries++) {
        uint64_t p = rand_u64() % npages, len = 0;
        const uint64_t max = 1 + rand_below(128);
        while (p + len < npages && len < max && page_state[p + len] == PG_GUEST) len++;
        if (!len) continue;
        for (uint64_t i = 0; i < len; i++) set_state(p + i, PG_REPORTING);
        run_first[slot][n] = (uint32_t)p;
        run_len[slot][n] = (uint32_t)len;
        b[n++] = (struct virtio_buf){(base_pfn + p) * PAGE, (uint32_t)(len * PAGE), 1};
        pages += (unsigned)len;
    }
    if (!n) return 0;
    if (add(R_REPORT, slot, b, n) < 0) {
        for (unsigned i = 0; i < n; i++) {
            for (uint32_t k = 0; k < run_len[slot][i]; k++) set_state(run_first[slot][i] + k, PG_GUEST);
        }
        st.queue_full++;
        return 0;
    }
    runs[slot] = n;
    slot_pages[R_REPORT][slot] = pages;
    nfree[R_REPORT]--;
    st.chains++;
    return 1;
}

static int post_stats(void) {
    struct virtq* q = &dev->vq[stats_q];
    const uint64_t free_bytes = ram_total - ram_used - (count[PG_BALLOON] + count[PG_INFLATING]) * PAGE;
    const struct virtio_buf b = {(uint64_t)(uintptr_t)stats_buf, (uint32_t)fill_stats(stats_buf, free_bytes, ++stats_seq),
                                 0};
    if (virtq_add(q, &b, 1) < 0) FAIL("the statistics queue has no room for its one buffer\n");
    virtq_publish(q);
    virtq_kick(dev, q);
    return 0;
}

// A used chain of role `r` (head `id`): the pages change hands and are checked.
static int complete(enum role r, uint32_t id) {
    struct virtq* q = &dev->vq[role_queue(r)];
    if (id >= q->size || virtq_free_chain(q, id) != 0) FAIL("queue %u: used id %u is not in flight\n", role_queue(r), id);
    const uint16_t slot = head_slot[r][id];
    slot_free[r][nfree[r]++] = slot;
    // Given back (inflated, reported): zeros from the moment the chain is used; deflated or
    // reported pages are the guest's again, a sample written and read back.
    if (r == R_REPORT) {
        for (unsigned i = 0; i < runs[slot]; i++) {
            for (uint32_t k = 0; k < run_len[slot][i]; k++) {
                const uint64_t p = run_first[slot][i] + k;
                page_gen[p] = 0;
                if (sampled(k, run_len[slot][i]) && (page_check(p, 1, "after its report was used") || page_write(p))) {
                    return -1;
                }
                set_state(p, PG_GUEST);
            }
        }
        st.reported += slot_pages[r][slot];
        return 0;
    }
    const uint32_t n = slot_pages[r][slot];
    for (uint32_t i = 0; i < n; i++) {
        const uint64_t p = pfns[r][slot][i] - base_pfn;
        if (r == R_INFLATE) {
            page_gen[p] = 0;
            if (sampled(i, n) && page_check(p, 1, "after its inflate chain was used") != 0) return -1;
            set_state(p, PG_BALLOON);
        } else {
            if (sampled(i, n) && page_write(p) != 0) return -1;
            set_state(p, PG_GUEST);
        }
    }
    if (r == R_INFLATE) st.inflated += slot_pages[r][slot];
    else st.deflated += slot_pages[r][slot];
    return 0;
}

// Takes every used element; returns how many, or -1.
static int reap(void) {
    int n = 0;
    struct virtq_used_elem e;
    for (enum role r = R_INFLATE; r < ROLES; r++) {
        if (r == R_REPORT && !report) continue;
        while (virtq_pop_used(&dev->vq[role_queue(r)], &e)) {
            if (complete(r, e.id) != 0) return -1;
            n++;
        }
    }
    if (stats) {
        struct virtq* q = &dev->vq[stats_q];
        while (virtq_pop_used(q, &e)) {
            if (e.id >= q->size || virtq_free_chain(q, e.id) != 0) FAIL("statistics: used id %u\n", e.id);
            st.stats++;
            if (post_stats() != 0) return -1;
            n++;
        }
    }
    return n;
}

static int write_actual(uint32_t pages) {
    if (pages == actual_written) return 0;
    virtio_config_write32(dev, CFG_ACTUAL, pages);
    const uint32_t back = virtio_config_read32(dev, CFG_ACTUAL);
    if (back != pages) FAIL("actual reads back %u after %u was written\n", back, pages);
    actual_written = pages;
    st.actual_writes++;
    return 0;
}

// Every queue the device completes on (bit i: dev->vq[i]).
static uint32_t device_queues(void) {
    uint32_t mask = 1u << INFLATE_Q | 1u << DEFLATE_Q;
    if (stats) mask |= 1u << stats_q;
    if (report) mask |= 1u << report_q;
    return mask;
}

static int wait_for_device(void) {
    const uint32_t mask = device_queues();
    if (rand_chance(20)) {
        st.polls++;
        for (unsigned qi = 0; qi < VIRTIO_MAX_QUEUES; qi++) {
            if (mask & (1u << qi)) virtq_interrupts(&dev->vq[qi], 0);
        }
        const uint64_t start = rdtsc(), limit = 20 * waiter.tsc_per_ms;
        for (;;) {
            for (unsigned qi = 0; qi < VIRTIO_MAX_QUEUES; qi++) {
                if ((mask & (1u << qi)) && virtq_used_pending(&dev->vq[qi])) return 0;
            }
            if (rdtsc() - start >= limit) return 0;
            cpu_pause();
        }
    }
    if (virtio_irq_sleep(&waiter, mask, 50) == VIRTIO_IRQ_LOST) FAIL("lost interrupt: %s\n", waiter.lost);
    if ((waiter.isr & VIRTIO_MMIO_INT_CONFIG) && (virtio_status(dev) & VIRTIO_STATUS_DEVICE_NEEDS_RESET)) {
        FAIL("DEVICE_NEEDS_RESET\n");
    }
    return 0;
}

// "done" on the serial port ends the run; other lines are ignored.
static int host_says_done(void) {
    static char line[16];
    static unsigned len;
    for (int c; (c = serial_trygetc()) >= 0;) {
        if (c == '\n' || c == '\r') {
            const int done = len == 4 && !strncmp(line, "done", 4);
            len = 0;
            if (done) return 1;
        } else if (len < sizeof(line)) {
            line[len++] = (char)c;
        }
    }
    return 0;
}

// After the interrupt is masked, the check must fire whatever the workload does next: the
// host may end the run a few chains later, and a chain the device completes before the guest
// halts needs no wake-up. The statistics buffer is a request the device answers on its own
// (every stats_interval), so the guest sleeps, never polling, until a sleep ends other than
// READY: the answer or a pending chain completes while it halts, and no interrupt comes.
static int probe_lost_interrupt(void) {
    if (!stats) FAIL("balloon.stress_inject=mask_irq needs the statistics queue (stats_interval)\n");
    for (unsigned quiet = 0; quiet < 3;) {
        switch (virtio_irq_sleep(&waiter, device_queues(), 5000)) {
            case VIRTIO_IRQ_READY:
                if (reap() < 0) return -1;
                break;
            case VIRTIO_IRQ_LOST: FAIL("lost interrupt: %s\n", waiter.lost);
            case VIRTIO_IRQ_WOKEN: FAIL("an interrupt came through the masked I/O APIC pin\n");
            case VIRTIO_IRQ_TIMEOUT: quiet++; break;
        }
    }
    FAIL("inject: no statistics request in 15 s of sleeping with the interrupt masked\n");
}

static int inject_fault(void) {
    const enum inject what = opt.inject;
    opt.inject = INJECT_NONE;
    if (what == INJECT_MASK_IRQ) {
        printf("balloon: stress: inject: masking the device's interrupt at the I/O APIC after %lu chains\n", st.chains);
        irq_unroute_gsi(dev->gsi);
        // An interrupt the I/O APIC delivered before the mask may still wait in the local APIC (the
        // guest runs with interrupts off between sleeps): taken here, not in the probe.
        const uint64_t before = irq_count;
        // Halting until two timer ticks passed takes it (a `sti; cli` loop may not: QEMU's TCG
        // looks for interrupts only between translated blocks).
        const uint64_t ticks = irq_timer_count;
        while (irq_timer_count < ticks + 2) irq_wait();
        printf("balloon: stress: inject: %lu interrupt(s) delivered before the mask taken\n", irq_count - before);
        return probe_lost_interrupt();
    }
    if (what == INJECT_HANG) {
        printf("balloon: stress: inject: halting with interrupts off after %lu chains\n", st.chains);
        irq_timer_stop();
        cpu_halt_forever();
    }
    return 0;
}

// Chains in flight at most changes in phases: with 1, every chain waits for an interrupt.
static unsigned chain_limit;
static uint64_t chain_limit_until;
static int may_send(void) {
    if (st.chains >= chain_limit_until) {
        static const uint8_t choices[] = {1, 1, 2, 4, 8, SLOTS};
        chain_limit = choices[rand_below(ARRAY_SIZE(choices))];
        chain_limit_until = st.chains + 10 + rand_below(40);
    }
    unsigned out = 0;
    for (enum role r = R_INFLATE; r < ROLES; r++) out += SLOTS - nfree[r];
    return out < chain_limit;
}

static int run(void) {
    uint64_t last_progress = rdtsc();
    uint32_t settled_at = ~0u, settled_gen = 0;
    int done = 0;
    for (;;) {
        const int got = reap();
        if (got < 0) return -1;
        if (got) {
            virtio_irq_ack(&waiter);
            last_progress = rdtsc();
        }
        if (opt.inject && st.chains >= opt.inject_at && inject_fault() != 0) return -1;
        if (!done) done = host_says_done();
        const uint32_t target = virtio_config_read32(dev, CFG_NUM_PAGES);
        if (target > npages) FAIL("target %u pages is beyond the %lu pages of the region\n", target, npages);
        // Pages inflating count as the balloon's already; deflating ones as gone.
        const uint64_t committed = count[PG_BALLOON] + count[PG_INFLATING];
        const int steady = !count[PG_INFLATING] && !count[PG_DEFLATING];
        int sent = 0;
        unsigned kicks = 0;
        if (!may_send()) {
            // Enough chains in flight for this phase.
        } else if (committed < target) {
            sent = send_pfns(R_INFLATE, target - committed);
            kicks |= 1u << R_INFLATE;
        } else if (committed > target && count[PG_BALLOON]) {
            sent = send_pfns(R_DEFLATE, committed - target < count[PG_BALLOON] ? committed - target : count[PG_BALLOON]);
            kicks |= 1u << R_DEFLATE;
        } else if (steady && count[PG_BALLOON] && rand_chance(10)) {
            // At the target: churn. Some pages out; the next rounds inflate others while they go.
            sent = send_pfns(R_DEFLATE, 1 + rand_below(64));
            kicks |= 1u << R_DEFLATE;
            if (sent > 0) st.churns++;
        }
        if (sent < 0) return -1;
        if (!done && rand_chance(4) && may_send() && send_report() > 0) {
            sent = 1;
            kicks |= 1u << R_REPORT;
        }
        if (sent) {
            for (enum role r = R_INFLATE; r < ROLES; r++) {
                if (kicks & (1u << r)) kick(r);
            }
            // Often straight to sleep: the device then completes while the guest halts.
            if (rand_chance(60)) {
                if (wait_for_device() != 0) return -1;
                continue;
            }
        }
        // `actual`: now and then on the way to a new target (not while churning at one), always
        // once the balloon is there. A target set again (ConfigGeneration moved) is settled anew.
        const int at_target = steady && count[PG_BALLOON] == target;
        if ((at_target || (target != settled_at && rand_chance(10))) && write_actual((uint32_t)count[PG_BALLOON]) != 0) {
            return -1;
        }
        const uint32_t gen = at_target ? virtio_config_generation(dev) : settled_gen;
        if (at_target && (settled_at != target || gen != settled_gen)) {
            settled_at = target;
            settled_gen = gen;
            st.settles++;
            if (check_pages(8) != 0) return -1;
            printf("balloon: stress: settled target %u actual %u (%lu inflated, %lu deflated, %lu reported, %lu "
                   "statistics so far)\n", target, actual_written, st.inflated, st.deflated, st.reported, st.stats);
        }
        if (done && at_target && target == 0 && !count[PG_REPORTING]) break;
        if (rand_chance(2)) {
            st.pauses++;
            const uint64_t until = rdtsc() + rand_below(2000) * waiter.tsc_per_ms / 1000;
            while (rdtsc() < until) cpu_pause();
        }
        if (sent || got) continue;
        const uint64_t busy = count[PG_INFLATING] + count[PG_DEFLATING] + count[PG_REPORTING];
        if (!busy) {
            last_progress = rdtsc();
        } else if (virtio_irq_ms_since(&waiter, last_progress) >= opt.stall_ms) {
            FAIL("stall: chains in flight and no used element for %lu ms\n", opt.stall_ms);
        }
        if (wait_for_device() != 0) return -1;
    }
    if (opt.inject) FAIL("inject: the run ended after %lu chains, before balloon.stress_inject_at\n", st.chains);
    return check_pages(1);
}

// ---- set-up ----

uint64_t balloon_stress_features(const char* cmdline) {
    uint64_t f = 0;
    if (!cmdline_has_word(cmdline, "balloon.no_event_idx")) f |= VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
    if (!cmdline_has_word(cmdline, "balloon.no_indirect")) f |= VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC);
    return f;
}

static int knob(const char* cmdline, const char* key, uint64_t* v, uint64_t min, uint64_t max) {
    return stress_knob(cmdline, "balloon: stress: ", key, v, min, max);
}

uint16_t balloon_stress_queue_size(const char* cmdline) {
    uint64_t q = 32;
    if (knob(cmdline, "balloon.qsize", &q, 2, VIRTQ_MAX_SIZE) != 0) return 0;
    if (q & (q - 1)) {
        printf("balloon: stress: FAIL: balloon.qsize must be a power of two\n");
        return 0;
    }
    return (uint16_t)q;
}

int balloon_stress(const char* cmdline, struct virtio_dev* d, unsigned sq, unsigned rq, uint64_t used) {
    dev = d;
    stats_q = sq;
    report_q = rq;
    ram_used = used;
    stats = (d->features & VIRTIO_BIT(BALLOON_F_STATS_VQ)) != 0;
    report = (d->features & VIRTIO_BIT(BALLOON_F_PAGE_REPORTING)) != 0;
    indirect = (d->features & VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC)) != 0;
    opt.seed = 1;
    opt.region_mib = 128;
    opt.stall_ms = 8000;
    opt.lost_ms = 2000;
    opt.inject_at = 200;
    if (knob(cmdline, "balloon.seed", &opt.seed, 0, ~0ull) || knob(cmdline, "balloon.region_mib", &opt.region_mib, 1, 512) ||
        knob(cmdline, "balloon.stall_ms", &opt.stall_ms, 100, 600000) ||
        knob(cmdline, "balloon.lost_irq_ms", &opt.lost_ms, 10, 600000) ||
        knob(cmdline, "balloon.stress_inject_at", &opt.inject_at, 0, ~0ull)) {
        return GUEST_FAIL;
    }
    size_t n;
    const char* v = cmdline_find(cmdline, "balloon.stress_inject", &n);
    if (v) {
        if (n == 8 && !strncmp(v, "mask_irq", 8)) opt.inject = INJECT_MASK_IRQ;
        else if (n == 4 && !strncmp(v, "hang", 4)) opt.inject = INJECT_HANG;
        else {
            printf("balloon: stress: FAIL: bad balloon.stress_inject (mask_irq or hang)\n");
            return GUEST_FAIL;
        }
    }
    rand_seed(opt.seed);
    const uint64_t base = pick_region(opt.region_mib * MIB);
    if (!base) {
        printf("balloon: stress: FAIL: no %lu MiB of RAM above the image\n", opt.region_mib);
        return GUEST_FAIL;
    }
    base_pfn = base / PAGE;
    npages = opt.region_mib * MIB / PAGE;
    count[PG_GUEST] = npages;
    for (uint64_t p = 0; p < npages; p++) {
        if (page_write(p) != 0) return GUEST_FAIL;
    }
    for (enum role r = R_INFLATE; r < ROLES; r++) {
        for (uint16_t i = 0; i < SLOTS; i++) slot_free[r][i] = (uint16_t)(SLOTS - 1 - i);
        nfree[r] = SLOTS;
    }
    const char* err = virtio_irq_setup(&waiter, d, TICK_US, (uint32_t)opt.lost_ms);
    if (err) {
        printf("balloon: stress: FAIL: interrupts: %s\n", err);
        return GUEST_FAIL;
    }
    if (stats && post_stats() != 0) return GUEST_FAIL;
    printf("balloon: stress: ready: %lu MiB at 0x%lx, seed %lu, queues of %u, %s, %s, statistics %d, reporting %d, "
           "TSC %lu kHz\n", opt.region_mib, base, opt.seed, d->vq[0].size,
           d->vq[0].event_idx ? "EVENT_IDX" : "no EVENT_IDX", indirect ? "indirect" : "no indirect", stats, report,
           waiter.tsc_per_ms);
    if (run() != 0) return GUEST_FAIL;
    if (virtio_status(d) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
        printf("balloon: stress: FAIL: DEVICE_NEEDS_RESET\n");
        return GUEST_FAIL;
    }
    printf("balloon: stress: %lu chains, %lu churns, queue full %lu times, actual written %lu times, %lu full "
           "checks\n", st.chains, st.churns, st.queue_full, st.actual_writes, st.full_checks);
    printf("balloon: stress: sleeps %lu (late interrupts %lu, at most %lu ms), polls %lu, pauses %lu\n", waiter.sleeps,
           waiter.late, waiter.late_max_ms, st.polls, st.pauses);
    printf("balloon: stress: done settles=%lu inflated=%lu deflated=%lu reported=%lu stats=%lu irqs=%lu\n", st.settles,
           st.inflated, st.deflated, st.reported, st.stats, irq_count);
    return GUEST_PASS;
}
