// blk.mode=stress: a long run of random requests on one writable drive, each checked, so that a
// request the device loses, an interrupt it forgets or data it misplaces shows up as a FAIL with
// the state of the queue, never as a guest that waits forever.
//
// The random phase (blk.stress_ops requests, random choices from blk.seed) goes in epochs of
// 64 - 1024 requests; each epoch draws a target queue depth (1, 2 - 8, 9 - 32 or up to the queue
// size), a largest request size (4, 32, 128 or 256 KiB), how often the guest pauses (busy-waits a
// random number of TSC cycles, up to ~2^23) between submissions and before reaping, how often it
// polls the used ring instead of sleeping until the interrupt, and how often an interrupt that
// came while it was busy is taken at once rather than at its next sleep. Every request draws:
//   kind    read, write, FLUSH (when offered), DISCARD, WRITE_ZEROES (with or without the unmap
//           flag; when offered), GET_ID, and a read beyond the end (must give IOERR)
//   place   4 KiB-aligned, right behind the previous request, or any sector; reads and writes of
//           1 sector up to the epoch's largest size, DISCARD / WRITE_ZEROES up to 2 MiB
//   shape   one data descriptor; data split at random (byte or sector) boundaries into up to 64
//           descriptors; the whole request in an indirect table; header direct and the rest
//           indirect; header inside the data descriptor (writes) or the status byte right behind
//           the data in the same descriptor (reads), the header in two pieces (indirect shapes
//           only when negotiated; chains never longer than the descriptors left or seg_max).
//           With indirect descriptors, half of the epochs deeper than 32 send only indirect
//           requests of up to 4 KiB, so that the queue fills up
//   buffer  in a 16 MiB pool, at a random 8-byte-aligned offset in its first page
// Requests are published in batches of random length (a kick per batch, when the device wants
// one; now and then an extra notification it did not ask for). The guest then waits for 1 or a
// random number of completions: mostly asleep (`sti; hlt`) until the device's interrupt, with
// EVENT_IDX by moving used_event that far ahead (as a driver delays its callback), without it by
// clearing VIRTQ_AVAIL_F_NO_INTERRUPT; sometimes spinning on the used ring with interrupts
// suppressed. It then takes all the used elements or only some of them.
//
// Data: a generation per sector of the used area (the first 512 MiB of the drive at most): 0 reads
// as zeros (blank, discarded, write-zeroed), g > 0 as the pattern of the write that had generation
// g: the 64-bit word j of sector s holds  S * K_SEED + s * K_SECTOR + g * K_GEN + j * K_WORD,  S the
// pattern seed. No request overlaps an in-flight write (reads may overlap reads), so every read has
// one expected content, and it is checked word by word as it completes. After the random phase
// the whole used area is read back and checked.
//
// Never waits forever: a periodic local APIC tick (lib/irq.h) wakes the guest while it sleeps
// (blk.stress_tick_ms=0 turns it off: then only the device's interrupts wake it, and a lost one
// that the VMM does not raise again hangs it until the host's timeout).
// Wake-ups that only the tick (or the VMM's watchdog) brought are counted and reported (see
// note_wakeup): the nested-KVM test VM's lost wake-ups (issue 13) show up there.
// It FAILS, naming the requests done and in flight, the oldest ones and the ring indices, when a
// request has been in flight for STALL_CYCLES, when the used ring has held what the guest waits
// for during LOST_IRQ_CYCLES without an interrupt, on DEVICE_NEEDS_RESET, on a wrong status,
// used length, used id or data.
//
// Console: "stress: drive ...", "stress: N/M requests, inflight K ..." every 10 % (and at least
// every PROGRESS_CYCLES), "stress: verify: ...", "stress: done ops=... reads=... writes=...
// flushes=... discards=... write_zeroes=... get_ids=... bad_reads=... max_qd=... irqs=...
// missed_wakeups=... late_irqs=...".
#include "blk_stress.h"

#include "blk_stress_int.h"
#include "io.h"
#include "irq.h"
#include "str.h"

const char* const kind_names[NUM_KINDS] = {"read",         "write",  "flush",          "discard",
                                           "write-zeroes", "get-id", "read-beyond-end"};
const char* const shape_names[NUM_SHAPES] = {"one", "split", "indirect", "mixed", "inline"};

struct req reqs[MAX_SLOTS];
static uint16_t free_slot[MAX_SLOTS];
static unsigned nfree_slots;
static uint16_t head_slot[VIRTQ_MAX_SIZE];
static struct virtio_blk_req_hdr hdrs[MAX_SLOTS] __attribute__((aligned(16)));
static struct virtio_blk_discard_segment segs[MAX_SLOTS] __attribute__((aligned(16)));
static volatile uint8_t statuses[MAX_SLOTS];
static struct virtq_desc tables[MAX_SLOTS][TABLE_ENTRIES] __attribute__((section(".noinit"), aligned(16)));
uint32_t gen_of[MAX_SECTORS] __attribute__((section(".noinit")));

struct stress_state st;

static void random_pause(void) {
    const uint32_t r = below(1000);
    const uint64_t cycles = r < 700 ? below(1u << 12) : r < 950 ? below(1u << 16) : r < 995 ? below(1u << 20)
                                                                                           : below(1u << 23);
    const uint64_t t0 = rdtsc();
    while (rdtsc() - t0 < cycles) cpu_pause();
}

// ---- requests ----


// 1 if [sector, sector + nsect) may not be touched by a `k` request now: an in-flight request
// that writes overlaps it, or `k` writes and any in-flight request overlaps it.
static int conflicts(enum kind k, uint64_t sector, uint32_t nsect) {
    for (unsigned i = 0; i < MAX_SLOTS; i++) {
        const struct req* r = &reqs[i];
        if (!r->busy || !has_range(r->kind) || (!writes_data(k) && !writes_data(r->kind))) continue;
        if (sector < r->sector + r->nsect && r->sector < sector + nsect) return 1;
    }
    return 0;
}

static void new_epoch(void) {
    const struct virtq* q = st.q;
    const uint32_t r = below(100);
    if (r < 30) st.target_qd = 1;
    else if (r < 60) st.target_qd = 2 + below(7);
    else if (r < 85) st.target_qd = 9 + below(24);
    else st.target_qd = 33 + below(q->size > 32 ? q->size - 32u : 1u);
    if (st.target_qd > q->size) st.target_qd = q->size;
    const uint32_t s = below(100);
    st.max_sectors = s < 40 ? 8 : s < 70 ? 64 : s < 90 ? 256 : MAX_IO_SECTORS;
    static const unsigned pause_choices[] = {0, 0, 5, 20, 60};
    st.pause_pct = pause_choices[below(ARRAY_SIZE(pause_choices))];
    static const unsigned poll_choices[] = {0, 0, 0, 5, 10, 25, 60};  // mostly asleep: 15 % polled
    st.poll_pct = poll_choices[below(ARRAY_SIZE(poll_choices))];
    static const unsigned take_choices[] = {100, 100, 50, 0};
    st.take_pct = take_choices[below(ARRAY_SIZE(take_choices))];
    static const unsigned kick_choices[] = {100, 50, 20, 5};
    st.kick_pct = kick_choices[below(ARRAY_SIZE(kick_choices))];
    // Half of the deep epochs use small requests in one descriptor each (an indirect table), so
    // that the queue can fill up to its size.
    st.compact = st.target_qd > 32 && st.b->indirect && percent(50);
    if (st.compact) st.max_sectors = 8;
    st.epoch_end = st.issued + 64 + below(961);
}

// Draws the next request of the random phase. Returns 0 and fills the outputs, or -1 if the
// tries all hit in-flight requests.
static int pick_random(enum kind* kind, uint64_t* sector, uint32_t* nsect) {
    const struct blk_dev* b = st.b;
    for (int attempt = 0; attempt < 4; attempt++) {
        // Per mille: reads 440, writes 400, FLUSH 60, DISCARD 40, WRITE_ZEROES 40, GET_ID 10, beyond the end 10.
        static const struct {
            uint16_t below;
            enum kind kind;
        } mix[] = {{440, K_READ},         {840, K_WRITE},  {900, K_FLUSH},     {940, K_DISCARD},
                   {980, K_WRITE_ZEROES}, {990, K_GET_ID}, {1000, K_BAD_READ}};
        const uint32_t r = below(1000);
        unsigned m = 0;
        while (r >= mix[m].below) m++;
        enum kind k = mix[m].kind;
        if (k == K_FLUSH && !b->flush) k = K_READ;
        if ((k == K_DISCARD && !b->discard) || (k == K_WRITE_ZEROES && !b->write_zeroes)) k = K_WRITE;
        *kind = k;
        *sector = 0;
        *nsect = 0;
        if (k == K_FLUSH || k == K_GET_ID) return 0;
        if (k == K_BAD_READ) {
            *nsect = 1 + below(8);
            *sector = b->capacity + below(3) * below(1000);
            return 0;
        }
        uint32_t n;
        if (k == K_DISCARD || k == K_WRITE_ZEROES) {
            const uint32_t limit = k == K_DISCARD ? b->max_discard_sectors : b->max_wz_sectors;
            n = 1 + below(min_u(MAX_RANGE_SECTORS, limit ? limit : 1));
        } else {
            n = 1 + below(st.max_sectors);
            if (percent(50)) n = (n + 7) & ~7u;
        }
        if (n > st.area) n = (uint32_t)st.area;
        const uint64_t span = st.area - n + 1;  // possible first sectors
        const uint32_t where = below(100);
        uint64_t s;
        if (where < 20 && st.next_sector + n <= st.area) s = st.next_sector;
        else if (where < 90) s = (rnd() % span) & ~7ull;
        else s = rnd() % span;
        if (conflicts(k, s, n)) continue;
        *sector = s;
        *nsect = n;
        return 0;
    }
    return -1;
}

// Splits [addr, addr + len) into `k` buffers of at least one byte (at sector boundaries half of
// the time, when there are enough sectors), appended at out[*n].
static void split(struct virtio_buf* out, unsigned* n, uint64_t addr, uint32_t len, uint8_t write, unsigned k) {
    const uint32_t unit = (percent(50) && len % VIRTIO_BLK_SECTOR_SIZE == 0 && len / VIRTIO_BLK_SECTOR_SIZE >= k)
                              ? VIRTIO_BLK_SECTOR_SIZE
                              : 1;
    const uint32_t units = len / unit;
    uint32_t done = 0;
    for (unsigned i = 0; i < k; i++) {
        const uint32_t left = units - done, rest = k - 1 - i;
        uint32_t piece = left;
        if (rest) {
            const uint32_t most = left - rest, twice_avg = 2 * (left / (rest + 1));
            piece = 1 + below(min_u(most, twice_avg ? twice_avg : 1));
        }
        out[(*n)++] = (struct virtio_buf){addr + (uint64_t)done * unit, piece * unit, write};
        done += piece;
    }
}

// Builds request `r` in slot `slot` and adds it to the queue. Returns 1, 0 if the queue has not
// enough free descriptors for it now, or -1 after a FAIL.
static int add_chain(struct req* r, unsigned slot) {
    struct virtq* q = st.q;
    const struct blk_dev* b = st.b;
    struct virtio_blk_req_hdr* hdr = &hdrs[slot];
    static const uint32_t types[NUM_KINDS] = {VIRTIO_BLK_T_IN,      VIRTIO_BLK_T_OUT,          VIRTIO_BLK_T_FLUSH,
                                              VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_T_GET_ID,
                                              VIRTIO_BLK_T_IN};
    const int sector_in_header = r->kind == K_READ || r->kind == K_WRITE || r->kind == K_BAD_READ;
    *hdr = (struct virtio_blk_req_hdr){types[r->kind], 0, sector_in_header ? r->sector : 0};
    statuses[slot] = 0xff;
    r->status = &statuses[slot];

    // The data: one buffer, split below.
    uint64_t daddr = (uint64_t)(uintptr_t)r->data;
    uint32_t dlen = r->data_len;
    uint8_t dwrite = r->kind == K_READ || r->kind == K_GET_ID || r->kind == K_BAD_READ;
    if (r->kind == K_DISCARD || r->kind == K_WRITE_ZEROES) {
        const uint32_t flags = r->kind == K_WRITE_ZEROES && percent(50) ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0;
        segs[slot] = (struct virtio_blk_discard_segment){r->sector, r->nsect, flags};
        daddr = (uint64_t)(uintptr_t)&segs[slot];
        dlen = sizeof(segs[slot]);
        dwrite = 0;
    }

    // Data pieces: at most seg_max, and no chain (indirect tables included) longer than the queue.
    const unsigned max_pieces =
        min_u(min_u(b->seg_max ? b->seg_max : 254, MAX_PIECES), q->size > 2 ? q->size - 2u : 1u);
    const unsigned free = q->num_free;
    enum shape sh = st.compact ? SH_INDIRECT : (enum shape)below(NUM_SHAPES);
    if (sh == SH_INLINE && r->kind != K_READ && r->kind != K_WRITE) sh = SH_SPLIT;
    if ((sh == SH_INDIRECT || sh == SH_MIXED) && !b->indirect) sh = SH_SPLIT;
    // Direct shapes need the header, the data pieces and the status byte in the ring.
    if ((sh == SH_ONE || sh == SH_SPLIT || sh == SH_INLINE) && free < (dlen ? 3u : 2u)) {
        if (!b->indirect || free < 1) return 0;
        sh = SH_INDIRECT;
    }
    if (sh == SH_MIXED && free < 2) sh = SH_INDIRECT;
    if (free < 1) return 0;

    unsigned k = dlen ? 1 : 0;  // data pieces
    if (dlen && sh != SH_ONE && sh != SH_INLINE) {
        unsigned most = percent(50) ? min_u(4, max_pieces) : max_pieces;
        if (sh == SH_SPLIT) most = min_u(most, free - 2);
        if (most > dlen) most = dlen;
        k = 1 + below(most ? most : 1);
    }
    r->shape = sh;
    r->pieces = (uint16_t)k;

    struct virtio_buf direct[TABLE_ENTRIES], ind[TABLE_ENTRIES];
    unsigned nd = 0, ni = 0;
    const struct virtio_buf hb = {(uint64_t)(uintptr_t)hdr, sizeof(*hdr), 0};
    const struct virtio_buf sb = {(uint64_t)(uintptr_t)&statuses[slot], 1, 1};
    if (sh == SH_INLINE && r->kind == K_READ) {
        // The header in two pieces; the data and the status byte behind it in one.
        direct[nd++] = (struct virtio_buf){hb.addr, 4, 0};
        direct[nd++] = (struct virtio_buf){hb.addr + 4, sizeof(*hdr) - 4, 0};
        direct[nd++] = (struct virtio_buf){daddr, dlen + 1, 1};
        r->status = r->data + dlen;
        *r->status = 0xff;
    } else if (sh == SH_INLINE) {
        // The header copied right in front of the data, both in one descriptor.
        memcpy(r->data - sizeof(*hdr), hdr, sizeof(*hdr));
        direct[nd++] = (struct virtio_buf){daddr - sizeof(*hdr), dlen + (uint32_t)sizeof(*hdr), 0};
        direct[nd++] = sb;
    } else {
        // The header in the ring (but for SH_INDIRECT), then the data and the status byte: in the
        // ring for the direct shapes, in the table for the others.
        if (sh == SH_INDIRECT) ind[ni++] = hb;
        else direct[nd++] = hb;
        const int in_table = sh == SH_INDIRECT || sh == SH_MIXED;
        split(in_table ? ind : direct, in_table ? &ni : &nd, daddr, dlen, dwrite, k);
        if (in_table) ind[ni++] = sb;
        else direct[nd++] = sb;
    }
    const int head = virtq_add_ex(q, direct, nd, ni ? tables[slot] : NULL, ind, ni);
    if (head < 0) {
        STRESS_FAIL("a chain of %u direct descriptors and %u indirect ones did not fit %u free descriptors\n", nd, ni,
                    free);
        return -1;
    }
    r->head = (uint16_t)head;
    head_slot[head] = (uint16_t)slot;
    return 1;
}

// Submits the next request (not yet published). Returns 1, 0 if nothing can go now (no room,
// or in-flight requests in the way), -1 after a FAIL.
static int submit_next(void) {
    enum kind kind;
    uint64_t sector;
    uint32_t nsect;
    if (nfree_slots == 0) return 0;
    if (st.verifying) {
        kind = K_READ;
        sector = st.issued * VERIFY_SECTORS;
        nsect = (uint32_t)(st.area - sector < VERIFY_SECTORS ? st.area - sector : VERIFY_SECTORS);
    } else if (pick_random(&kind, &sector, &nsect) != 0) {
        return 0;
    }
    const unsigned slot = free_slot[nfree_slots - 1];
    struct req* r = &reqs[slot];
    *r = (struct req){.kind = kind, .sector = sector, .nsect = nsect, .page = -1};
    const uint32_t len = kind == K_GET_ID ? VIRTIO_BLK_ID_BYTES
                         : (kind == K_READ || kind == K_WRITE || kind == K_BAD_READ) ? nsect * VIRTIO_BLK_SECTOR_SIZE
                                                                                    : 0;
    if (len) {
        // Room for a header copy in front (inline writes) and a status byte behind (inline reads).
        const uint32_t offset = 16 + 8 * below((POOL_PAGE - 16) / 8);
        const uint32_t pages = (offset + len + 1 + POOL_PAGE - 1) / POOL_PAGE;
        const int page = pool_alloc(pages);
        if (page < 0) return 0;
        r->page = page;
        r->pages = pages;
        r->data = pool + (size_t)page * POOL_PAGE + offset;
        r->data_len = len;
        if (kind == K_WRITE) {
            r->gen = ++st.next_gen;
            fill(r->data, sector, nsect, r->gen);
        } else {
            // Not zeros: a read that leaves (part of) the buffer alone must not pass.
            uint64_t* p = (uint64_t*)r->data;
            for (uint32_t i = 0; i < len / 8; i++) p[i] = 0xa5a5a5a5a5a5a5a5ull;
        }
    }
    const int added = add_chain(r, slot);
    if (added <= 0) {
        if (r->page >= 0) pool_free(r->page, r->pages);
        if (kind == K_WRITE) st.next_gen--;
        return added;
    }
    nfree_slots--;
    r->busy = 1;
    r->number = ++st.issued;
    r->submitted = rdtsc();
    st.shapes[r->shape]++;
    if (++st.inflight > st.max_inflight) st.max_inflight = st.inflight;
    if (has_range(kind)) st.next_sector = sector + nsect < st.area ? sector + nsect : 0;
    return 1;
}

static void publish_and_kick(void) {
    struct virtq* q = st.q;
    virtq_publish(q);
    if (percent(2)) virtq_notify(&st.b->v, q);  // one the device did not ask for: harmless
    else virtq_kick(&st.b->v, q);
}

// Checks and retires the request the used element `e` completes. Returns 0 or -1 (after FAIL).
static int complete(const struct virtq_used_elem* e) {
    struct virtq* q = st.q;
    struct req* r = e->id < q->size ? &reqs[head_slot[e->id]] : NULL;
    if (!r || !r->busy || r->head != e->id || virtq_free_chain(q, e->id) != 0) {
        STRESS_FAIL("used element with id %u (len %u), which is not a request in flight\n", e->id, e->len);
        return -1;
    }
    const uint8_t status = *r->status;
    const uint8_t want = r->kind == K_BAD_READ ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
    const uint32_t want_len = r->kind == K_READ ? r->data_len + 1 : r->kind == K_GET_ID ? VIRTIO_BLK_ID_BYTES + 1 : 1;
    if (status != want || (r->kind != K_BAD_READ && e->len != want_len)) {
        STRESS_FAIL("request #%lu (%s of sectors %lu+%u, shape %s): status %u (%s), used len %u; expected %s, used len "
                    "%u; %lu requests done, %u in flight\n",
                    r->number, kind_names[r->kind], r->sector, r->nsect, shape_names[r->shape], status,
                    blk_err_name(status), e->len, blk_err_name(want), want_len, st.done, st.inflight);
        return -1;
    }
    if (r->kind == K_READ && verify_read(r) != 0) return -1;
    if (r->kind == K_GET_ID && memcmp(r->data, st.b->id, strnlen(st.b->id, VIRTIO_BLK_ID_BYTES)) != 0) {
        STRESS_FAIL("request #%lu: GET_ID returned another id than at the start (%s)\n", r->number, st.b->id);
        return -1;
    }
    if (writes_data(r->kind)) {
        const uint32_t gen = r->kind == K_WRITE ? r->gen : 0;
        for (uint32_t s = 0; s < r->nsect; s++) gen_of[r->sector + s] = gen;
    }
    if (r->page >= 0) pool_free(r->page, r->pages);
    r->busy = 0;
    free_slot[nfree_slots++] = (uint16_t)(r - reqs);
    st.inflight--;
    st.done++;
    st.count[r->kind]++;
    return 0;
}

static void progress(void) {
    const uint64_t now = rdtsc();
    if (st.done < st.next_progress && now - st.last_line < PROGRESS_CYCLES) return;
    printf("stress: %s%lu/%lu requests, inflight %u (target %u, max %u), irqs %lu\n", st.verifying ? "verify: " : "",
           st.done, st.goal, st.inflight, st.target_qd, st.max_inflight, irq_count - st.irqs0);
    const uint64_t step = st.goal >= 10 ? st.goal / 10 : 1;
    while (st.next_progress <= st.done) st.next_progress += step;
    st.last_line = now;
}

// Runs `goal` requests (the random phase, or the verify phase's reads). Returns 0 or -1.
static int run_phase(uint64_t goal) {
    struct virtq* q = st.q;
    st.goal = goal;
    st.issued = st.done = 0;
    st.next_progress = goal >= 10 ? goal / 10 : 1;
    st.last_line = rdtsc();
    st.epoch_end = 0;
    while (st.done < goal) {
        if (!st.verifying && st.issued >= st.epoch_end) new_epoch();
        unsigned added = 0;
        while (st.issued < goal && st.inflight < st.target_qd) {
            if (st.pause_pct && percent(st.pause_pct)) random_pause();
            const int r = submit_next();
            if (r < 0) return -1;
            if (r == 0) break;  // no room, or in-flight requests in the way: wait for completions
            added++;
            if (percent(st.kick_pct)) {
                publish_and_kick();
                added = 0;
            }
        }
        if (added) publish_and_kick();
        if (st.inflight == 0) {
            STRESS_FAIL("nothing could be submitted to an idle queue (request %lu of %lu)\n", st.issued + 1, goal);
            return -1;
        }
        // Wait for 1 or more completions; half of the time for more than the used ring holds now
        // (else, with a fast device, the guest would hardly ever have to wait).
        const unsigned pending = virtq_used_pending(q);
        unsigned want = percent(25) ? 1 + below(st.inflight) : 1;
        if (pending < st.inflight && percent(50)) want = pending + 1 + below(st.inflight - pending);
        if (st.pause_pct && percent(st.pause_pct)) random_pause();
        if (wait_for(want, percent(st.poll_pct)) != 0) return -1;
        unsigned n = virtq_used_pending(q);
        if (percent(30)) n = 1 + below(n);
        for (unsigned i = 0; i < n; i++) {
            struct virtq_used_elem e;
            if (!virtq_pop_used(q, &e)) break;
            if (complete(&e) != 0) return -1;
        }
        progress();
    }
    return 0;
}

int blk_stress(struct blk_dev* b, const struct blk_stress_options* o) {
    struct virtq* q = &b->v.vq[0];
    memset(&st, 0, sizeof(st));
    st.b = b;
    st.q = q;
    st.area = b->capacity < MAX_SECTORS ? b->capacity : MAX_SECTORS;
    st.pseed = o->pattern_seed;
    st.rng = o->rng_seed * K_SEED + K_WORD;  // never 0
    for (unsigned i = 0; i < MAX_SLOTS; i++) free_slot[i] = (uint16_t)(MAX_SLOTS - 1 - i);
    nfree_slots = MAX_SLOTS;
    pool_reset();
    memset(gen_of, 0, st.area * sizeof(gen_of[0]));
    printf("stress: drive %s, %lu of %lu sectors used, queue size %u, %s, %s, %s%s%s; %lu requests, seed %lu, "
           "tick %u ms\n",
           b->id, st.area, b->capacity, q->size, b->event_idx ? "EVENT_IDX" : "no EVENT_IDX",
           b->indirect ? "indirect descriptors" : "no indirect descriptors", b->flush ? "flush" : "no flush",
           b->discard ? ", discard" : "", b->write_zeroes ? ", write-zeroes" : "", o->ops, o->rng_seed,
           o->tick_us / 1000);
    const char* err = irq_route_gsi(b->v.gsi);
    if (!err && o->tick_us && irq_timer_start(o->tick_us) == 0) err = "the local APIC timer does not tick";
    if (err) {
        printf("blk: FAIL: stress: interrupts: %s\n", err);
        return -1;
    }
    virtio_isr_ack(&b->v, virtio_isr_read(&b->v));
    st.irqs0 = irq_count;
    st.ticks0 = irq_timer_count;
    st.tsc0 = rdtsc();

    int rc = run_phase(o->ops);
    const uint64_t cycles = rdtsc() - st.tsc0;
    const uint64_t irqs = irq_count - st.irqs0;
    uint64_t count[NUM_KINDS];
    memcpy(count, st.count, sizeof(count));
    const unsigned max_qd = st.max_inflight;
    if (rc == 0) {
        printf("stress: waits: sleeps=%lu polls=%lu no_waits=%lu ticks=%lu notifications=%u suppressed=%u cycles=%lu; "
               "shapes: one %lu, split %lu, indirect %lu, mixed %lu, inline %lu\n",
               st.sleeps, st.polls, st.no_wait, irq_timer_count - st.ticks0, q->notifications, q->suppressed, cycles,
               st.shapes[SH_ONE], st.shapes[SH_SPLIT], st.shapes[SH_INDIRECT], st.shapes[SH_MIXED],
               st.shapes[SH_INLINE]);
        // Everything read back once more, a few requests in flight, no pauses, mostly asleep.
        st.verifying = 1;
        st.target_qd = min_u(VERIFY_QD, q->size);
        st.pause_pct = 0;
        st.poll_pct = 10;
        st.kick_pct = 100;
        st.take_pct = 100;
        rc = run_phase((st.area + VERIFY_SECTORS - 1) / VERIFY_SECTORS);
        if (rc == 0)
            printf("stress: verify: all %lu sectors read back as expected in %lu requests\n", st.area, st.done);
    }
    irq_timer_stop();
    irq_unroute_gsi(b->v.gsi);
    virtio_isr_ack(&b->v, virtio_isr_read(&b->v));  // the last one: nothing for the VMM to raise again
    if (rc != 0) return -1;
    printf("stress: wake-ups: missed %lu (longest %lu TSC cycles), late interrupts %lu (longest %lu)\n",
           st.missed_wakeups, st.max_missed_wakeup, st.late_irqs, st.max_late_irq);
    printf("stress: done ops=%lu reads=%lu writes=%lu flushes=%lu discards=%lu write_zeroes=%lu get_ids=%lu "
           "bad_reads=%lu max_qd=%u irqs=%lu missed_wakeups=%lu late_irqs=%lu\n",
           o->ops, count[K_READ], count[K_WRITE], count[K_FLUSH], count[K_DISCARD], count[K_WRITE_ZEROES],
           count[K_GET_ID], count[K_BAD_READ], max_qd, irqs, st.missed_wakeups, st.late_irqs);
    return 0;
}
