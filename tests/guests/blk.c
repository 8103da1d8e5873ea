// Test guest "blk": drives every virtio-blk device the VMM announced on the command line
// ("virtio_mmio.device=4K@0xADDR:GSI") through libguest's virtio-mmio driver and checks the
// device's semantics from the inside.
//
// Command line (besides the virtio_mmio.device= entries):
//   blk.mode=full               (default) per drive: GET_ID, configuration, pattern written over
//                               the whole disk and read back, FLUSH, DISCARD / WRITE_ZEROES,
//                               error statuses; read-only drives: pattern verified, writes refused
//   blk.mode=write              write the pattern over every writable drive, FLUSH, exit PASS
//   blk.mode=write-flush-idle   the same, then print "blk: flushed" and halt forever (the host
//                               SIGKILLs the VMM and checks the image file)
//   blk.mode=verify             read every drive and verify the pattern, exit PASS
//   blk.mode=burst              per drive: as many one-sector requests as the queue holds made
//                               available with one kick (more than the async engine's depth of
//                               128), writes then reads; then single requests (read-only drives:
//                               reads of the pattern only)
//   blk.mode=bench              benchmark phases on the first writable drive, or on the drive
//                               blk.bench_drive=ID names (the host times the console lines, see
//                               scripts/bench-blk): 4 KiB random reads at queue depth 1 and 32 (as
//                               many as the queue holds, up to 32), 128 KiB sequential reads and
//                               writes at depth 8; each phase prints "bench: <phase> start" and
//                               then "bench: <phase> done ops=N bytes=B qd=D" (D: most requests
//                               that were in flight at once); offsets from a fixed xorshift64
//                               sequence. The guest waits for completions like a driver: halted
//                               until the device's interrupt (I/O APIC -> IRQ_VECTOR, see
//                               lib/irq.h), then it reads and acknowledges InterruptStatus and
//                               takes what the used ring holds. The done line adds irqs=N (the
//                               interrupts taken)
//   blk.mode=stress             a long run of random requests on the first writable drive: random
//                               queue depth, sizes, descriptor shapes, kinds (reads, writes,
//                               FLUSH, DISCARD, WRITE_ZEROES, GET_ID, reads beyond the end),
//                               pauses and ways of waiting, every read checked against the data
//                               the guest knows it wrote; bounded waits that FAIL naming the
//                               requests done and in flight (blk_stress.c). The drive must be
//                               blank. "stress: done ops=..." then PASS
//   blk.stress_ops=N            stress: requests of the random phase (default 20000)
//   blk.stress_tick_ms=N        stress: the local APIC tick that bounds every sleep (default 20;
//                               0: none, the guest then relies on the device's interrupts and
//                               the VMM's watchdog alone, and a lost wake-up hangs it)
//   blk.bench_poll              bench: spin on the used ring in guest memory instead (no VM
//                               exits while waiting, but the vCPU never sleeps)
//   blk.bench_ops=N             requests of the QD1 4 KiB phase (default 8000; QD32 phase: 2 x N)
//   blk.bench_seq_mib=N         MiB per sequential phase, wrapping over the drive (default 1024)
//   blk.bench_drive=ID          the drive to benchmark (GET_ID, or vda, vdb, ... without one)
//   blk.seed=N                  pattern seed (default 1); stress: also the random choices
//   blk.qsize=N                 queue size (power of two, 4 - 256; default: the largest, 256)
//   blk.no_event_idx, blk.no_indirect   do not negotiate VIRTIO_F_EVENT_IDX / INDIRECT_DESC
//   blk.expect_drives=N         FAIL unless exactly N virtio-blk devices were found
//
// The pattern: the 64-bit little-endian word j (0..63) of sector s of the drive whose GET_ID is
// `id` holds  S * K_SEED + s * K_SECTOR + j * K_WORD  (mod 2^64), where S = seed + fnv1a64(id)
// (fnv1a64 over the id's bytes up to the first NUL, at most 20). Different drives thus hold
// different data. tests/guests/run-blk-test computes the same pattern on the host.
//
// Requests: several in flight at once (SLOTS), each 1 - 256 sectors, in six shapes (one data
// descriptor; data split at odd offsets; one descriptor per sector up to the queue size; the
// whole request in an indirect table; header direct + data and status in an indirect table;
// header inside the data descriptor (OUT) or status inside it (IN)), rotated so that the read
// pass splits the disk differently from the write pass.
//
// Console: "blk: id <id>", "blk: <id>: ..." progress lines; "blk: PASS ..." or "blk: FAIL: ...".
#include "blk_stress.h"
#include "guest.h"
#include "io.h"
#include "irq.h"
#include "str.h"
#include "virtio.h"
#include "virtio_blk.h"

#define MAX_DRIVES 8
#define SLOTS 4
#define SLOT_SECTORS 256
#define SLOT_BYTES (SLOT_SECTORS * VIRTIO_BLK_SECTOR_SIZE)
#define SLOT_PREFIX 64  // room for a header right before the data (shape "inline")
#define TABLE_ENTRIES 64

#define K_SEED 0x9e3779b97f4a7c15ull
#define K_SECTOR 0xd6e8feb86659fd93ull
#define K_WORD 0x2545f4914f6cdd1dull
#define WORDS_PER_SECTOR (VIRTIO_BLK_SECTOR_SIZE / 8)

enum mode { MODE_FULL, MODE_WRITE, MODE_WRITE_FLUSH_IDLE, MODE_VERIFY, MODE_BURST, MODE_BENCH, MODE_STRESS };

static struct {
    enum mode mode;
    uint64_t seed;
    uint16_t qsize;
    uint64_t wanted;
    long expect_drives;
    uint64_t bench_ops;
    uint64_t bench_seq_mib;
    const char* bench_id;  // blk.bench_drive=, not NUL-terminated: bench_id_len bytes of the command line
    size_t bench_id_len;
    int bench_poll;
    uint64_t stress_ops;
    uint64_t stress_tick_ms;
} opt;

// ---- buffers (identity-mapped guest RAM) ----

struct slot_mem {
    uint8_t prefix[SLOT_PREFIX];
    uint8_t data[SLOT_BYTES];
    uint8_t status_after;  // status byte right behind the data (shape "inline", IN)
    uint8_t pad[4096 - SLOT_PREFIX - 1];
};
static struct slot_mem slot_mem[SLOTS] __attribute__((section(".noinit"), aligned(4096)));
static struct virtq_desc itable[SLOTS][TABLE_ENTRIES] __attribute__((aligned(16)));
static struct virtio_blk_req_hdr slot_hdr[SLOTS] __attribute__((aligned(16)));
static volatile uint8_t slot_status[SLOTS][64] __attribute__((aligned(64)));
static uint8_t small_buf[4 * VIRTIO_BLK_SECTOR_SIZE] __attribute__((aligned(512)));

static struct blk_dev drives[MAX_DRIVES];
static int failures;

#define FAIL(...)                      \
    do {                               \
        printf("blk: FAIL: " __VA_ARGS__); \
        failures++;                    \
    } while (0)

// ---- the pattern ----

static uint64_t fnv1a64(const char* s, size_t max) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < max && s[i]; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t drive_seed(const struct blk_dev* b) { return opt.seed + fnv1a64(b->id, VIRTIO_BLK_ID_BYTES); }

static void pattern_fill(void* buf, uint64_t sector, uint32_t nsect, uint64_t seed) {
    uint64_t* p = buf;
    uint64_t base = seed * K_SEED + sector * K_SECTOR;
    for (uint32_t s = 0; s < nsect; s++) {
        uint64_t v = base;
        for (unsigned j = 0; j < WORDS_PER_SECTOR; j += 4) {
            p[0] = v;
            p[1] = v + K_WORD;
            p[2] = v + 2 * K_WORD;
            p[3] = v + 3 * K_WORD;
            v += 4 * K_WORD;
            p += 4;
        }
        base += K_SECTOR;
    }
}

// Returns 0, or -1 after printing the first mismatch.
static int pattern_check(const struct blk_dev* b, const void* buf, uint64_t sector, uint32_t nsect, uint64_t seed) {
    const uint64_t* p = buf;
    uint64_t base = seed * K_SEED + sector * K_SECTOR;
    for (uint32_t s = 0; s < nsect; s++, p += WORDS_PER_SECTOR, base += K_SECTOR) {
        uint64_t acc = 0, v = base;
        for (unsigned j = 0; j < WORDS_PER_SECTOR; j += 4) {
            acc |= (p[j] ^ v) | (p[j + 1] ^ (v + K_WORD)) | (p[j + 2] ^ (v + 2 * K_WORD)) |
                   (p[j + 3] ^ (v + 3 * K_WORD));
            v += 4 * K_WORD;
        }
        if (acc == 0) continue;
        for (unsigned j = 0; j < WORDS_PER_SECTOR; j++) {
            const uint64_t want = base + j * K_WORD;
            if (p[j] != want) {
                FAIL("%s: sector %lu byte %u: read 0x%lx, expected 0x%lx (pattern seed %lu)\n", b->id, sector + s,
                     j * 8, p[j], want, opt.seed);
                return -1;
            }
        }
    }
    return 0;
}

static int zero_check(const struct blk_dev* b, const void* buf, uint64_t sector, uint32_t nsect, const char* what) {
    const uint64_t* p = buf;
    for (uint32_t s = 0; s < nsect; s++, p += WORDS_PER_SECTOR) {
        uint64_t acc = 0;
        for (unsigned j = 0; j < WORDS_PER_SECTOR; j++) acc |= p[j];
        if (acc) {
            for (unsigned j = 0; j < WORDS_PER_SECTOR; j++) {
                if (p[j]) {
                    FAIL("%s: after %s, sector %lu byte %u reads 0x%lx, expected zeros\n", b->id, what, sector + s,
                         j * 8, p[j]);
                    return -1;
                }
            }
        }
    }
    return 0;
}

// ---- pattern I/O with several requests in flight ----

enum shape { SHAPE_ONE, SHAPE_SPLIT, SHAPE_PER_SECTOR, SHAPE_INDIRECT, SHAPE_MIXED, SHAPE_INLINE, NUM_SHAPES };
static const char* const shape_names[NUM_SHAPES] = {"one-data-desc", "split", "per-sector", "indirect", "mixed",
                                                    "inline"};
static const uint32_t request_sectors[] = {128, 1, 256, 37, 8, 255, 64, 3, 200, 16, 129};
// Data split points: odd lengths, so sectors straddle descriptors.
static const uint32_t split_lengths[] = {512, 4096, 100, 1948, 3, 509, 8192, 1024, 7, 2555};

struct io_slot {
    int busy;
    int head;
    int is_read;
    enum shape shape;
    uint64_t sector;
    uint32_t nsect;
    volatile uint8_t* status;  // where the device puts the status byte
};

// Splits [addr, addr + len) into at most `max_pieces` buffers (per `sh`) appended to out[*n].
static void split_data(struct virtio_buf* out, unsigned* n, uint64_t addr, uint32_t len, uint8_t write, enum shape sh,
                       unsigned max_pieces, unsigned rot) {
    uint32_t done = 0;
    unsigned pieces = 0;
    while (done < len) {
        uint32_t piece;
        if (sh == SHAPE_ONE) piece = len;
        else if (sh == SHAPE_PER_SECTOR) piece = VIRTIO_BLK_SECTOR_SIZE;
        else piece = split_lengths[(rot + pieces) % ARRAY_SIZE(split_lengths)];
        if (pieces + 1 >= max_pieces || piece > len - done) piece = len - done;
        out[(*n)++] = (struct virtio_buf){addr + done, piece, write};
        done += piece;
        pieces++;
    }
}

static unsigned min_u(unsigned a, unsigned b) { return a < b ? a : b; }

// Builds and adds one request for slot `i`. Returns the head, or -1 if the queue has no room.
static int add_request(struct blk_dev* b, unsigned i, struct io_slot* s, unsigned rot) {
    struct virtq* q = &b->v.vq[0];
    struct slot_mem* m = &slot_mem[i];
    const uint32_t len = s->nsect * VIRTIO_BLK_SECTOR_SIZE;
    const uint8_t dw = (uint8_t)s->is_read;  // data is device-writable for IN
    struct virtio_blk_req_hdr* hdr = &slot_hdr[i];
    const uint64_t data = (uint64_t)(uintptr_t)m->data;
    const uint64_t status = (uint64_t)(uintptr_t)&slot_status[i][0];
    slot_status[i][0] = 0xff;
    s->status = &slot_status[i][0];

    // Chain length limits: the queue size (spec 2.7.5.3.1) and seg_max data segments.
    const unsigned seg_max = b->seg_max ? b->seg_max : 254;
    const unsigned max_data_direct = min_u(seg_max, q->size > 2 ? q->size - 2u : 1u);
    const unsigned max_data_table = min_u(max_data_direct, TABLE_ENTRIES - 2);

    enum shape sh = s->shape;
    if (!b->indirect && (sh == SHAPE_INDIRECT || sh == SHAPE_MIXED)) sh = SHAPE_SPLIT;
    s->shape = sh;

    struct virtio_buf direct[VIRTQ_MAX_SIZE];
    struct virtio_buf ind[TABLE_ENTRIES];
    unsigned nd = 0, ni = 0;
    hdr->type = s->is_read ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
    hdr->reserved = 0;
    hdr->sector = s->sector;
    const struct virtio_buf hdr_buf = {(uint64_t)(uintptr_t)hdr, sizeof(*hdr), 0};
    const struct virtio_buf status_buf = {status, 1, 1};

    switch (sh) {
        case SHAPE_ONE:
        case SHAPE_SPLIT:
        case SHAPE_PER_SECTOR:
            direct[nd++] = hdr_buf;
            split_data(direct, &nd, data, len, dw, sh, max_data_direct, rot);
            direct[nd++] = status_buf;
            break;
        case SHAPE_INDIRECT:
            ind[ni++] = hdr_buf;
            split_data(ind, &ni, data, len, dw, SHAPE_SPLIT, max_data_table, rot);
            ind[ni++] = status_buf;
            break;
        case SHAPE_MIXED:
            direct[nd++] = hdr_buf;
            split_data(ind, &ni, data, len, dw, SHAPE_SPLIT, max_data_table, rot + 3);
            ind[ni++] = status_buf;
            break;
        case SHAPE_INLINE:
            if (s->is_read) {
                // Header in two pieces; data and status byte in one writable descriptor.
                direct[nd++] = (struct virtio_buf){(uint64_t)(uintptr_t)hdr, 4, 0};
                direct[nd++] = (struct virtio_buf){(uint64_t)(uintptr_t)hdr + 4, sizeof(*hdr) - 4, 0};
                direct[nd++] = (struct virtio_buf){data, len + 1, 1};
                s->status = (volatile uint8_t*)(uintptr_t)(data + len);  // m->data[len] or m->status_after
                *s->status = 0xff;
            } else {
                // Header and data in one readable descriptor; the status on its own.
                memcpy(m->prefix + SLOT_PREFIX - sizeof(*hdr), hdr, sizeof(*hdr));
                direct[nd++] = (struct virtio_buf){data - sizeof(*hdr), (uint32_t)(len + sizeof(*hdr)), 0};
                direct[nd++] = status_buf;
            }
            break;
        default:
            break;
    }
    if (nd + (ni ? 1 : 0) > q->size) guest_panic("blk: request of %u descriptors on a queue of %u", nd, q->size);
    return virtq_add_ex(q, direct, nd, ni ? itable[i] : NULL, ind, ni);
}

// Reads (verifying the pattern) or writes [first, first + count) with several requests in
// flight. `variant` rotates request sizes and shapes. Returns 0 or -1 (after printing why).
static int pattern_pass(struct blk_dev* b, int is_read, uint64_t first, uint64_t count, unsigned variant) {
    struct virtq* q = &b->v.vq[0];
    struct io_slot slots[SLOTS];
    memset(slots, 0, sizeof(slots));
    const uint64_t seed = drive_seed(b);
    const uint64_t end = first + count;
    uint64_t next = first;
    unsigned k = variant, inflight = 0, requests = 0;
    unsigned per_shape[NUM_SHAPES];
    memset(per_shape, 0, sizeof(per_shape));

    while (next < end || inflight) {
        int added = 0;
        for (unsigned i = 0; i < SLOTS && next < end; i++) {
            if (slots[i].busy) continue;
            struct io_slot* s = &slots[i];
            uint32_t n = request_sectors[k % ARRAY_SIZE(request_sectors)];
            if (n > end - next) n = (uint32_t)(end - next);
            s->is_read = is_read;
            s->sector = next;
            s->nsect = n;
            s->shape = (enum shape)((k * 5 + variant) % NUM_SHAPES);
            if (!is_read) pattern_fill(slot_mem[i].data, next, n, seed);
            const int head = add_request(b, i, s, k);
            if (head < 0) {
                if (inflight == 0 && !added) {
                    FAIL("%s: a %u-sector request does not fit the empty queue\n", b->id, n);
                    return -1;
                }
                break;  // no room: wait for completions first
            }
            s->head = head;
            s->busy = 1;
            per_shape[s->shape]++;
            next += n;
            k++;
            inflight++;
            added = 1;
        }
        if (added) {
            virtq_publish(q);
            virtq_kick(&b->v, q);
        }
        struct virtq_used_elem e;
        const enum virtq_wait_result w = virtq_wait_used(&b->v, q, &e);
        if (w != VIRTQ_USED) {
            FAIL("%s: %s at sector %lu: %s (%u requests in flight, status 0x%x)\n", b->id, is_read ? "read" : "write",
                 next, w == VIRTQ_TIMEOUT ? "no used element (timeout)" : "DEVICE_NEEDS_RESET", inflight,
                 virtio_status(&b->v));
            return -1;
        }
        unsigned i = 0;
        while (i < SLOTS && !(slots[i].busy && (uint32_t)slots[i].head == e.id)) i++;
        if (i == SLOTS || virtq_free_chain(q, e.id) != 0) {
            FAIL("%s: used element with id %u, which is not in flight\n", b->id, e.id);
            return -1;
        }
        struct io_slot* s = &slots[i];
        s->busy = 0;
        inflight--;
        requests++;
        const uint8_t st = *s->status;
        const uint32_t want_len = is_read ? s->nsect * VIRTIO_BLK_SECTOR_SIZE + 1 : 1;
        if (st != VIRTIO_BLK_S_OK) {
            FAIL("%s: %s of sectors %lu+%u (%s): status %u (%s)\n", b->id, is_read ? "read" : "write", s->sector,
                 s->nsect, shape_names[s->shape], st, blk_err_name(st));
            return -1;
        }
        if (e.len != want_len) {
            FAIL("%s: %s of sectors %lu+%u (%s): used len %u, expected %u\n", b->id, is_read ? "read" : "write",
                 s->sector, s->nsect, shape_names[s->shape], e.len, want_len);
            return -1;
        }
        if (is_read && pattern_check(b, slot_mem[i].data, s->sector, s->nsect, seed) != 0) {
            printf("blk: %s: (that read was %u sectors in shape %s)\n", b->id, s->nsect, shape_names[s->shape]);
            return -1;
        }
    }
    // The device signalled used buffers (the driver never suppressed them; one may be skipped
    // when the driver had already moved used_event on, but not all): InterruptStatus bit 0.
    if (!(virtio_wait_isr(&b->v, VIRTIO_MMIO_INT_VRING) & VIRTIO_MMIO_INT_VRING)) {
        FAIL("%s: no used-buffer interrupt (InterruptStatus bit 0) during %u requests\n", b->id, requests);
        return -1;
    }
    printf("blk: %s: %s sectors %lu-%lu in %u requests (shapes: %u one, %u split, %u per-sector, %u indirect, "
           "%u mixed, %u inline)\n",
           b->id, is_read ? "read and verified" : "wrote pattern to", first, end - 1, requests, per_shape[0],
           per_shape[1], per_shape[2], per_shape[3], per_shape[4], per_shape[5]);
    return 0;
}

// ---- a burst: many one-sector requests made available at once ----

#define BURST_MAX 256
static struct virtio_blk_req_hdr burst_hdr[BURST_MAX] __attribute__((aligned(16)));
static volatile uint8_t burst_status[BURST_MAX];
static struct virtq_desc burst_table[BURST_MAX][3] __attribute__((aligned(16)));
static uint16_t burst_head_to_req[VIRTQ_MAX_SIZE];

static uint64_t burst_sector(const struct blk_dev* b, unsigned i) { return ((uint64_t)i * 97 + 11) % b->capacity; }

// As many one-sector requests as the queue holds, published with one kick: more than the
// async engine's queue depth (128), so the device must hold requests back and resume them when
// completions arrive. With indirect descriptors each request is one descriptor (a 3-entry
// table); without, two: reads "header | data + status", writes "header + data | status" (the
// header copied right in front of the data). Writes (seed `seed`) or reads and verifies.
static int burst(struct blk_dev* b, int is_read, uint64_t seed) {
    struct virtq* q = &b->v.vq[0];
    const int ind = b->indirect;
    // Request i's data: area + i * stride + 512 - stride_data_off; see below.
    const uint32_t stride = ind ? 512 : 1024;
    uint8_t* const area = slot_mem[0].data;
    unsigned n = ind ? q->size : q->size / 2;
    if (n > BURST_MAX) n = BURST_MAX;
    if (n > SLOT_BYTES / stride) n = SLOT_BYTES / stride;
    if (n > b->capacity) n = (unsigned)b->capacity;
    for (unsigned i = 0; i < n; i++) {
        const uint64_t sector = burst_sector(b, i);
        // Direct form: [496..512) header copy, [512..1024) data, the status at 1024 (the first
        // byte of the next request's unused space).
        uint8_t* d = area + (uint64_t)i * stride + (ind ? 0 : 512);
        if (!is_read) pattern_fill(d, sector, 1, seed);
        else memset(d, 0, 512);
        burst_hdr[i] = (struct virtio_blk_req_hdr){is_read ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT, 0, sector};
        burst_status[i] = 0xff;
        const uint64_t hdr = (uint64_t)(uintptr_t)&burst_hdr[i];
        const uint64_t data = (uint64_t)(uintptr_t)d;
        int head;
        if (ind) {
            const struct virtio_buf t[3] = {
                {hdr, sizeof(burst_hdr[i]), 0},
                {data, 512, (uint8_t)is_read},
                {(uint64_t)(uintptr_t)&burst_status[i], 1, 1},
            };
            head = virtq_add_ex(q, NULL, 0, burst_table[i], t, 3);
        } else if (is_read) {
            d[512] = 0xff;
            const struct virtio_buf t[2] = {{hdr, sizeof(burst_hdr[i]), 0}, {data, 513, 1}};
            head = virtq_add(q, t, 2);
        } else {
            memcpy(d - sizeof(burst_hdr[i]), &burst_hdr[i], sizeof(burst_hdr[i]));
            const struct virtio_buf t[2] = {
                {data - sizeof(burst_hdr[i]), 512 + sizeof(burst_hdr[i]), 0},
                {(uint64_t)(uintptr_t)&burst_status[i], 1, 1},
            };
            head = virtq_add(q, t, 2);
        }
        if (head < 0) {
            FAIL("%s: burst: request %u of %u does not fit the queue\n", b->id, i, n);
            return -1;
        }
        burst_head_to_req[head] = (uint16_t)i;
    }
    virtq_publish(q);
    virtq_kick(&b->v, q);
    for (unsigned done = 0; done < n; done++) {
        struct virtq_used_elem e;
        const enum virtq_wait_result w = virtq_wait_used(&b->v, q, &e);
        if (w != VIRTQ_USED) {
            FAIL("%s: burst of %u %s: %s after %u completions (avail.idx %u, used.idx %u, the device's "
                 "avail_event %u, used.flags 0x%x: a device that stopped for a full backend must resume by "
                 "itself)\n",
                 b->id, n, is_read ? "reads" : "writes", w == VIRTQ_TIMEOUT ? "timeout" : "DEVICE_NEEDS_RESET", done,
                 q->avail->idx, q->used->idx, *virtq_avail_event(q), q->used->flags);
            return -1;
        }
        if (e.id >= q->size || virtq_free_chain(q, e.id) != 0) {
            FAIL("%s: burst: used element with id %u, which is not in flight\n", b->id, e.id);
            return -1;
        }
        const unsigned i = burst_head_to_req[e.id];
        const uint8_t* d = area + (uint64_t)i * stride + (ind ? 0 : 512);
        const uint8_t st = (!ind && is_read) ? d[512] : burst_status[i];
        const uint32_t want_len = is_read ? 513 : 1;
        if (st != VIRTIO_BLK_S_OK || e.len != want_len) {
            FAIL("%s: burst request %u (sector %lu): status %u, used len %u (expected OK, %u)\n", b->id, i,
                 burst_sector(b, i), st, e.len, want_len);
            return -1;
        }
        if (is_read && pattern_check(b, d, burst_sector(b, i), 1, seed)) return -1;
    }
    printf("blk: %s: burst of %u one-sector %s in one kick ok\n", b->id, n, is_read ? "reads" : "writes");
    return 0;
}

// ---- single requests ----

static int expect_status(struct blk_dev* b, const char* what, int got, int want) {
    if (got == want) {
        printf("blk: %s: %s -> %s ok\n", b->id, what, blk_err_name(got));
        return 0;
    }
    FAIL("%s: %s -> %s (%d), expected %s\n", b->id, what, blk_err_name(got), got, blk_err_name(want));
    return -1;
}

static int read_sectors(struct blk_dev* b, uint64_t sector, uint32_t n, void* buf) {
    uint32_t used = 0;
    const int r = blk_request(b, VIRTIO_BLK_T_IN, sector, buf, n * VIRTIO_BLK_SECTOR_SIZE, 1, &used);
    if (r != VIRTIO_BLK_S_OK) {
        FAIL("%s: read of sectors %lu+%u: %s\n", b->id, sector, n, blk_err_name(r));
        return -1;
    }
    if (used != n * VIRTIO_BLK_SECTOR_SIZE + 1) {
        FAIL("%s: read of sectors %lu+%u: used len %u, expected %u\n", b->id, sector, n, used,
             n * VIRTIO_BLK_SECTOR_SIZE + 1);
        return -1;
    }
    return 0;
}

static int flush(struct blk_dev* b) {
    uint32_t used = 0;
    const int r = blk_request(b, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, 0, &used);
    if (b->flush) return expect_status(b, "FLUSH", r, VIRTIO_BLK_S_OK);
    // Not offered (cache=unsafe): the device answers UNSUPP.
    return expect_status(b, "FLUSH (VIRTIO_BLK_F_FLUSH not offered)", r, VIRTIO_BLK_S_UNSUPP);
}

// Zeroes [sector, sector + n) with `type` and checks zeros inside and the pattern around.
static int range_op_check(struct blk_dev* b, uint32_t type, uint32_t flags, uint64_t sector, uint32_t n,
                          const char* what) {
    char label[96];
    snprintf(label, sizeof(label), "%s of sectors %lu+%u", what, sector, n);
    if (expect_status(b, label, blk_range_op(b, type, sector, n, flags), VIRTIO_BLK_S_OK)) return -1;
    // Read back in pieces of up to 4 sectors through small_buf.
    for (uint64_t s = sector; s < sector + n; s += 4) {
        const uint32_t k = (uint32_t)(sector + n - s < 4 ? sector + n - s : 4);
        if (read_sectors(b, s, k, small_buf) || zero_check(b, small_buf, s, k, what)) return -1;
    }
    // The neighbours keep the pattern.
    const uint64_t seed = drive_seed(b);
    if (sector > 0 && (read_sectors(b, sector - 1, 1, small_buf) || pattern_check(b, small_buf, sector - 1, 1, seed)))
        return -1;
    if (sector + n < b->capacity &&
        (read_sectors(b, sector + n, 1, small_buf) || pattern_check(b, small_buf, sector + n, 1, seed)))
        return -1;
    printf("blk: %s: %s: reads back zeros, neighbours intact\n", b->id, label);
    return 0;
}

static int rewrite_pattern(struct blk_dev* b, uint64_t sector, uint32_t n) {
    for (uint64_t s = sector; s < sector + n; s += 4) {
        const uint32_t k = (uint32_t)(sector + n - s < 4 ? sector + n - s : 4);
        pattern_fill(small_buf, s, k, drive_seed(b));
        const int r = blk_request(b, VIRTIO_BLK_T_OUT, s, small_buf, k * VIRTIO_BLK_SECTOR_SIZE, 0, NULL);
        if (r != VIRTIO_BLK_S_OK) {
            FAIL("%s: write of sectors %lu+%u: %s\n", b->id, s, k, blk_err_name(r));
            return -1;
        }
    }
    return 0;
}

// Error statuses every drive must give.
static void check_errors(struct blk_dev* b) {
    const uint64_t cap = b->capacity;
    char what[96];
    snprintf(what, sizeof(what), "IN at sector %lu (= capacity)", cap);
    expect_status(b, what, blk_request(b, VIRTIO_BLK_T_IN, cap, small_buf, 512, 1, NULL), VIRTIO_BLK_S_IOERR);
    snprintf(what, sizeof(what), "IN of 2 sectors at %lu (crosses the end)", cap - 1);
    expect_status(b, what, blk_request(b, VIRTIO_BLK_T_IN, cap - 1, small_buf, 1024, 1, NULL), VIRTIO_BLK_S_IOERR);
    expect_status(b, "IN at sector 2^63", blk_request(b, VIRTIO_BLK_T_IN, 1ull << 63, small_buf, 512, 1, NULL),
                  VIRTIO_BLK_S_IOERR);
    expect_status(b, "IN at sector 2^64-1",
                  blk_request(b, VIRTIO_BLK_T_IN, ~0ull, small_buf, 512, 1, NULL), VIRTIO_BLK_S_IOERR);
    expect_status(b, "IN of 100 bytes (not a sector multiple)",
                  blk_request(b, VIRTIO_BLK_T_IN, 0, small_buf, 100, 1, NULL), VIRTIO_BLK_S_IOERR);
    if (!b->ro) {
        snprintf(what, sizeof(what), "OUT at sector %lu (= capacity)", cap);
        expect_status(b, what, blk_request(b, VIRTIO_BLK_T_OUT, cap, small_buf, 512, 0, NULL), VIRTIO_BLK_S_IOERR);
    }
    expect_status(b, "unknown request type 0xdead",
                  blk_request(b, 0xdead, 0, small_buf, 512, 1, NULL), VIRTIO_BLK_S_UNSUPP);
    expect_status(b, "unknown request type 2 (legacy SCSI)",
                  blk_request(b, 2, 0, small_buf, 512, 1, NULL), VIRTIO_BLK_S_UNSUPP);
    // The last sector is readable (and holds the pattern; checked by the caller's passes).
    if (read_sectors(b, cap - 1, 1, small_buf) == 0) printf("blk: %s: IN of the last sector %lu -> OK ok\n", b->id, cap - 1);
}

static void check_discard_and_write_zeroes(struct blk_dev* b) {
    if (!b->discard || !b->write_zeroes) {
        FAIL("%s: a writable drive must offer DISCARD and WRITE_ZEROES (features 0x%lx)\n", b->id,
             b->v.device_features);
        return;
    }
    printf("blk: %s: max_discard_sectors %u, max_discard_seg %u, max_write_zeroes_sectors %u, "
           "max_write_zeroes_seg %u, write_zeroes_may_unmap %u\n",
           b->id, b->max_discard_sectors, b->max_discard_seg, b->max_wz_sectors, b->max_wz_seg, b->wz_may_unmap);
    const uint64_t cap = b->capacity;
    if (cap < 64) {
        printf("blk: %s: only %lu sectors: DISCARD / WRITE_ZEROES checks skipped\n", b->id, cap);
        return;
    }
    // Ranges in the first, middle and last part of the disk, apart from each other (their
    // neighbours must keep the pattern); the discard one 4 KiB aligned and, on a disk of 4 MiB
    // or more, large enough that a filesystem can punch a hole.
    const uint64_t eighth = cap / 8;
    const uint32_t d_n = (uint32_t)(eighth < 64 ? eighth : 64), w_n = (uint32_t)(eighth < 21 ? eighth : 21);
    const uint32_t u_n = (uint32_t)(eighth < 24 ? eighth : 24);
    const uint64_t d_sector = (eighth < 64 ? eighth : 64) & ~7ull, w_sector = cap / 2 + 3;
    const uint64_t u_sector = cap >= 512 ? cap - 40 : cap - eighth - 2;
    int ok = range_op_check(b, VIRTIO_BLK_T_DISCARD, 0, d_sector, d_n, "DISCARD") == 0;
    ok &= range_op_check(b, VIRTIO_BLK_T_WRITE_ZEROES, 0, w_sector, w_n, "WRITE_ZEROES") == 0;
    ok &= range_op_check(b, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, u_sector, u_n,
                         "WRITE_ZEROES (unmap)") == 0;
    // The same at the very end of the disk.
    ok &= range_op_check(b, VIRTIO_BLK_T_WRITE_ZEROES, 0, cap - 1, 1, "WRITE_ZEROES (last sector)") == 0;

    char what[96];
    expect_status(b, "DISCARD with the unmap flag", blk_range_op(b, VIRTIO_BLK_T_DISCARD, 0, 1, 1),
                  VIRTIO_BLK_S_UNSUPP);
    expect_status(b, "WRITE_ZEROES with unknown flag 0x2", blk_range_op(b, VIRTIO_BLK_T_WRITE_ZEROES, 0, 1, 2),
                  VIRTIO_BLK_S_UNSUPP);
    snprintf(what, sizeof(what), "DISCARD of sectors %lu+2 (crosses the end)", cap - 1);
    expect_status(b, what, blk_range_op(b, VIRTIO_BLK_T_DISCARD, cap - 1, 2, 0), VIRTIO_BLK_S_IOERR);
    snprintf(what, sizeof(what), "WRITE_ZEROES at sector %lu (= capacity)", cap);
    expect_status(b, what, blk_range_op(b, VIRTIO_BLK_T_WRITE_ZEROES, cap, 1, 0), VIRTIO_BLK_S_IOERR);
    // Two segments where max_discard_seg is 1.
    if (b->max_discard_seg == 1) {
        static struct virtio_blk_discard_segment two[2] __attribute__((aligned(16)));
        two[0] = (struct virtio_blk_discard_segment){8, 1, 0};
        two[1] = (struct virtio_blk_discard_segment){16, 1, 0};
        expect_status(b, "DISCARD with 2 segments (max_discard_seg 1)",
                      blk_request(b, VIRTIO_BLK_T_DISCARD, 0, two, sizeof(two), 0, NULL), VIRTIO_BLK_S_UNSUPP);
    }
    // Put the pattern back, so that the disk holds it everywhere again.
    if (ok && (rewrite_pattern(b, d_sector, d_n) || rewrite_pattern(b, w_sector, w_n) ||
               rewrite_pattern(b, u_sector, u_n) || rewrite_pattern(b, cap - 1, 1)))
        return;
    if (ok) printf("blk: %s: zeroed ranges rewritten with the pattern\n", b->id);
}

// A request whose completion the driver asked not to be told about (used_event far ahead with
// EVENT_IDX, VIRTQ_AVAIL_F_NO_INTERRUPT without): InterruptStatus bit 0 stays clear. (A SHOULD
// NOT of the spec, 2.7.10; embervm implements it.)
static void check_interrupt_suppression(struct blk_dev* b) {
    struct virtq* q = &b->v.vq[0];
    virtio_isr_ack(&b->v, virtio_isr_read(&b->v));
    static struct virtio_blk_req_hdr h __attribute__((aligned(16)));
    static volatile uint8_t st;
    h = (struct virtio_blk_req_hdr){VIRTIO_BLK_T_IN, 0, 0};
    st = 0xff;
    const struct virtio_buf bufs[3] = {
        {(uint64_t)(uintptr_t)&h, sizeof(h), 0},
        {(uint64_t)(uintptr_t)small_buf, 512, 1},
        {(uint64_t)(uintptr_t)&st, 1, 1},
    };
    const int head = virtq_add(q, bufs, 3);
    virtq_publish(q);
    if (b->event_idx) *virtq_used_event(q) = (uint16_t)(q->last_used + 0x8000);
    else q->avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    mb();
    virtq_kick(&b->v, q);
    struct virtq_used_elem e;
    const enum virtq_wait_result w = virtq_wait_used(&b->v, q, &e);
    if (w != VIRTQ_USED || e.id != (uint32_t)head || virtq_free_chain(q, e.id) || st != VIRTIO_BLK_S_OK) {
        FAIL("%s: request with interrupts suppressed did not complete OK\n", b->id);
        return;
    }
    // The device decides right after publishing the used element: give it a moment.
    const uint64_t t0 = rdtsc();
    for (unsigned i = 0; i < 5000 || rdtsc() - t0 < (1ull << 26); i++) cpu_pause();
    const uint32_t isr = virtio_isr_read(&b->v);
    q->avail->flags = 0;
    if (isr & VIRTIO_MMIO_INT_VRING) {
        FAIL("%s: used-buffer interrupt although the driver suppressed it (%s)\n", b->id,
             b->event_idx ? "used_event far ahead" : "VIRTQ_AVAIL_F_NO_INTERRUPT");
        virtio_isr_ack(&b->v, isr);
        return;
    }
    printf("blk: %s: interrupt suppression (%s) honoured\n", b->id, b->event_idx ? "used_event" : "NO_INTERRUPT");
}

static int check_get_id(struct blk_dev* b) {
    static uint8_t idbuf[64];
    memset(idbuf, 0xee, sizeof(idbuf));
    uint32_t used = 0;
    // A buffer larger than the 20 bytes: the device writes 20 bytes (and says so in used len).
    const int r = blk_request(b, VIRTIO_BLK_T_GET_ID, 0, idbuf, 40, 1, &used);
    if (r != VIRTIO_BLK_S_OK) {
        FAIL("%s: GET_ID (40-byte buffer): %s\n", b->id, blk_err_name(r));
        return -1;
    }
    if (used != VIRTIO_BLK_ID_BYTES + 1) {
        FAIL("%s: GET_ID (40-byte buffer): used len %u, expected %u\n", b->id, used, VIRTIO_BLK_ID_BYTES + 1);
        return -1;
    }
    if (memcmp(idbuf, b->id, strnlen(b->id, VIRTIO_BLK_ID_BYTES)) != 0 || idbuf[40] != 0xee) {
        FAIL("%s: GET_ID with a 40-byte buffer returned different bytes\n", b->id);
        return -1;
    }
    printf("blk: %s: GET_ID with a 40-byte buffer -> 20 bytes ok\n", b->id);
    return 0;
}

static void check_read_only(struct blk_dev* b) {
    if (b->discard || b->write_zeroes || (b->v.device_features & (VIRTIO_BIT(VIRTIO_BLK_F_DISCARD) |
                                                                 VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES)))) {
        FAIL("%s: a read-only drive offers DISCARD or WRITE_ZEROES (features 0x%lx)\n", b->id, b->v.device_features);
    }
    // Sector 5 before, a refused write, sector 5 after: unchanged.
    static uint8_t before[512], attempt[512];
    if (read_sectors(b, 5, 1, before)) return;
    memset(attempt, 0x5a, sizeof(attempt));
    expect_status(b, "OUT on a read-only drive", blk_request(b, VIRTIO_BLK_T_OUT, 5, attempt, 512, 0, NULL),
                  VIRTIO_BLK_S_IOERR);
    expect_status(b, "DISCARD on a read-only drive (not negotiated)", blk_range_op(b, VIRTIO_BLK_T_DISCARD, 5, 1, 0),
                  VIRTIO_BLK_S_UNSUPP);
    expect_status(b, "WRITE_ZEROES on a read-only drive (not negotiated)",
                  blk_range_op(b, VIRTIO_BLK_T_WRITE_ZEROES, 5, 1, 0), VIRTIO_BLK_S_UNSUPP);
    if (read_sectors(b, 5, 1, small_buf)) return;
    if (memcmp(before, small_buf, 512) != 0) FAIL("%s: a refused write changed sector 5\n", b->id);
    else printf("blk: %s: refused write left sector 5 unchanged\n", b->id);
}

// ---- per drive ----

static void describe(struct blk_dev* b) {
    printf("blk: id %s\n", b->id);
    printf("blk: %s: virtio-mmio at 0x%lx gsi %u, capacity %lu sectors (%lu KiB), seg_max %u, blk_size %u, "
           "features 0x%lx (offered 0x%lx)%s%s%s%s\n",
           b->id, b->entry.base, b->entry.gsi, b->capacity, b->capacity / 2, b->seg_max, b->blk_size, b->v.features,
           b->v.device_features, b->ro ? ", read-only" : "", b->flush ? ", flush" : "", b->discard ? ", discard" : "",
           b->write_zeroes ? ", write-zeroes" : "");
    if (b->ro) printf("blk: %s: read-only\n", b->id);
    else printf("blk: %s: read-write\n", b->id);
}

static void full_drive(struct blk_dev* b) {
    if (check_get_id(b)) return;
    if (blk_has(b, VIRTIO_BLK_F_BLK_SIZE) && b->blk_size != 512)
        FAIL("%s: blk_size %u, expected 512\n", b->id, b->blk_size);
    if (b->ro) {
        check_read_only(b);
        if (pattern_pass(b, 1, 0, b->capacity, 1) == 0) printf("blk: %s: pattern verified\n", b->id);
        flush(b);
        check_errors(b);
        return;
    }
    if (pattern_pass(b, 0, 0, b->capacity, 0)) return;
    if (flush(b)) return;
    if (pattern_pass(b, 1, 0, b->capacity, 1)) return;
    printf("blk: %s: pattern verified\n", b->id);
    check_interrupt_suppression(b);
    check_errors(b);
    check_discard_and_write_zeroes(b);
}

// Bursts on a writable drive: other data (seed + 1) written and read back, then the pattern
// again; on a read-only one, reads of the pattern. Then single requests must still complete
// (a device that lost track of its notification state would leave them hanging).
static void burst_drive(struct blk_dev* b) {
    const uint64_t seed = drive_seed(b);
    if (b->ro) {
        if (burst(b, 1, seed) || burst(b, 1, seed)) return;
    } else if (burst(b, 0, seed + 1) || burst(b, 1, seed + 1) || burst(b, 0, seed) || burst(b, 1, seed)) {
        return;
    }
    for (unsigned i = 0; i < 3; i++) {
        if (read_sectors(b, burst_sector(b, i), 1, small_buf) || pattern_check(b, small_buf, burst_sector(b, i), 1, seed))
            return;
    }
    printf("blk: %s: single requests after the bursts ok\n", b->id);
}

// ---- main ----

// ---- benchmark ----

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

static void bench_drive(struct blk_dev* b) {
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

static int parse_options(const char* cmdline) {
    size_t n = 0;
    const char* v;
    opt.mode = MODE_FULL;
    opt.seed = 1;
    opt.qsize = 0;
    opt.expect_drives = -1;
    opt.wanted = VIRTIO_BLK_GUEST_FEATURES;
    if ((v = cmdline_find(cmdline, "blk.mode", &n))) {
        if (n == 4 && !strncmp(v, "full", 4)) opt.mode = MODE_FULL;
        else if (n == 5 && !strncmp(v, "write", 5)) opt.mode = MODE_WRITE;
        else if (n == 16 && !strncmp(v, "write-flush-idle", 16)) opt.mode = MODE_WRITE_FLUSH_IDLE;
        else if (n == 6 && !strncmp(v, "verify", 6)) opt.mode = MODE_VERIFY;
        else if (n == 5 && !strncmp(v, "burst", 5)) opt.mode = MODE_BURST;
        else if (n == 5 && !strncmp(v, "bench", 5)) opt.mode = MODE_BENCH;
        else if (n == 6 && !strncmp(v, "stress", 6)) opt.mode = MODE_STRESS;
        else return -1;
    }
    uint64_t x;
    opt.bench_ops = 8000;
    opt.bench_seq_mib = 1024;
    opt.bench_id = NULL;
    opt.bench_id_len = 0;
    if ((v = cmdline_find(cmdline, "blk.bench_ops", &n))) {
        if (parse_u64(v, &x) != n || n == 0 || x == 0) return -1;
        opt.bench_ops = x;
    }
    if ((v = cmdline_find(cmdline, "blk.bench_seq_mib", &n))) {
        if (parse_u64(v, &x) != n || n == 0 || x == 0) return -1;
        opt.bench_seq_mib = x;
    }
    if ((v = cmdline_find(cmdline, "blk.bench_drive", &n))) {
        if (n == 0 || n > VIRTIO_BLK_ID_BYTES) return -1;
        opt.bench_id = v;
        opt.bench_id_len = n;
    }
    opt.bench_poll = cmdline_has_word(cmdline, "blk.bench_poll");
    opt.stress_ops = 20000;
    if ((v = cmdline_find(cmdline, "blk.stress_ops", &n))) {
        if (parse_u64(v, &x) != n || n == 0 || x == 0) return -1;
        opt.stress_ops = x;
    }
    opt.stress_tick_ms = 20;
    if ((v = cmdline_find(cmdline, "blk.stress_tick_ms", &n))) {
        if (parse_u64(v, &x) != n || n == 0 || x > 60000) return -1;
        opt.stress_tick_ms = x;
    }
    if ((v = cmdline_find(cmdline, "blk.seed", &n))) {
        if (parse_u64(v, &x) != n || n == 0) return -1;
        opt.seed = x;
    }
    if ((v = cmdline_find(cmdline, "blk.qsize", &n))) {
        if (parse_u64(v, &x) != n || n == 0 || x < 4 || x > VIRTQ_MAX_SIZE || (x & (x - 1))) return -1;
        opt.qsize = (uint16_t)x;
    }
    if ((v = cmdline_find(cmdline, "blk.expect_drives", &n))) {
        if (parse_u64(v, &x) != n || n == 0) return -1;
        opt.expect_drives = (long)x;
    }
    if (cmdline_has_word(cmdline, "blk.no_event_idx")) opt.wanted &= ~VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
    if (cmdline_has_word(cmdline, "blk.no_indirect")) opt.wanted &= ~VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC);
    return 0;
}

static const char* mode_name(enum mode m) {
    switch (m) {
        case MODE_FULL: return "full";
        case MODE_WRITE: return "write";
        case MODE_WRITE_FLUSH_IDLE: return "write-flush-idle";
        case MODE_VERIFY: return "verify";
        case MODE_BURST: return "burst";
        case MODE_BENCH: return "bench";
        case MODE_STRESS: return "stress";
    }
    return "?";
}

int guest_main(void) {
    const char* cmdline = boot_cmdline();
    if (parse_options(cmdline) != 0) {
        printf("blk: FAIL: bad blk.* option in the command line: %s\n", cmdline);
        return GUEST_FAIL;
    }
    struct virtio_mmio_entry entries[VIRTIO_MAX_DEVICES];
    const int found = virtio_mmio_parse_cmdline(cmdline, entries, VIRTIO_MAX_DEVICES);
    if (found < 0) {
        printf("blk: FAIL: malformed virtio_mmio.device= entry in: %s\n", cmdline);
        return GUEST_FAIL;
    }
    printf("blk: mode %s, seed %lu, %d virtio-mmio devices%s%s\n", mode_name(opt.mode), opt.seed, found,
           (opt.wanted & VIRTIO_BIT(VIRTIO_F_EVENT_IDX)) ? "" : ", no EVENT_IDX",
           (opt.wanted & VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC)) ? "" : ", no INDIRECT_DESC");

    int ndrives = 0;
    for (int i = 0; i < found && i < VIRTIO_MAX_DEVICES; i++) {
        struct virtio_dev probe;
        if (virtio_probe(&probe, &entries[i]) == NULL && probe.device_id != VIRTIO_ID_BLOCK) {
            printf("blk: virtio-mmio device at 0x%lx has device ID %u: skipped\n", entries[i].base, probe.device_id);
            continue;
        }
        if (ndrives == MAX_DRIVES) {
            printf("blk: more than %d drives; the rest are skipped\n", MAX_DRIVES);
            break;
        }
        struct blk_dev* b = &drives[ndrives];
        const char* err = blk_open(b, &entries[i], opt.wanted, opt.qsize);
        if (err) {
            printf("blk: FAIL: device at 0x%lx: %s (status 0x%x)\n", entries[i].base, err, virtio_status(&b->v));
            return GUEST_FAIL;
        }
        const int r = blk_get_id(b);
        if (r != VIRTIO_BLK_S_OK) {
            printf("blk: FAIL: device at 0x%lx: GET_ID: %s\n", entries[i].base, blk_err_name(r));
            return GUEST_FAIL;
        }
        if (b->id[0] == '\0') snprintf(b->id, sizeof(b->id), "vd%c", 'a' + ndrives);
        // The stress counts the interrupts the VMM's watchdog raises again: acknowledge the one of
        // the polled GET_ID as a handler would, before the console lines below take 200 ms.
        if (opt.mode == MODE_STRESS) virtio_isr_ack(&b->v, virtio_isr_read(&b->v));
        describe(b);
        if (b->capacity == 0) {
            printf("blk: FAIL: %s: capacity 0\n", b->id);
            return GUEST_FAIL;
        }
        ndrives++;
    }
    if (opt.expect_drives >= 0 && ndrives != opt.expect_drives) {
        printf("blk: FAIL: found %d virtio-blk drives, expected %ld\n", ndrives, opt.expect_drives);
        return GUEST_FAIL;
    }
    if (ndrives == 0) {
        printf("blk: FAIL: no virtio-blk drive on the command line\n");
        return GUEST_FAIL;
    }

    for (int i = 0; i < ndrives; i++) {
        struct blk_dev* b = &drives[i];
        switch (opt.mode) {
            case MODE_FULL:
                full_drive(b);
                break;
            case MODE_WRITE:
            case MODE_WRITE_FLUSH_IDLE:
                if (b->ro) {
                    printf("blk: %s: read-only, not written\n", b->id);
                    break;
                }
                if (pattern_pass(b, 0, 0, b->capacity, 0) == 0 && (!b->flush || flush(b) == 0))
                    printf("blk: %s: written%s\n", b->id, b->flush ? " and flushed" : " (no FLUSH offered)");
                break;
            case MODE_VERIFY:
                if (pattern_pass(b, 1, 0, b->capacity, 1) == 0) printf("blk: %s: pattern verified\n", b->id);
                break;
            case MODE_BURST:
                burst_drive(b);
                break;
            case MODE_BENCH:
            case MODE_STRESS:
                break;
        }
        if (failures) break;
    }
    if (opt.mode == MODE_BENCH) {
        int i = 0;
        if (opt.bench_id) {
            while (i < ndrives && !(strnlen(drives[i].id, sizeof(drives[i].id)) == opt.bench_id_len &&
                                    !strncmp(drives[i].id, opt.bench_id, opt.bench_id_len)))
                i++;
        } else {
            while (i < ndrives && drives[i].ro) i++;
        }
        if (i == ndrives) FAIL("bench: no %s\n", opt.bench_id ? "drive with the blk.bench_drive= id" : "writable drive");
        else if (drives[i].ro) FAIL("bench: %s is read-only (the write phase needs a writable drive)\n", drives[i].id);
        else bench_drive(&drives[i]);
    }
    if (opt.mode == MODE_STRESS) {
        int i = 0;
        while (i < ndrives && drives[i].ro) i++;
        if (i == ndrives) {
            FAIL("stress: no writable drive\n");
        } else {
            const struct blk_stress_options so = {opt.stress_ops, opt.seed, drive_seed(&drives[i]),
                                                  (uint32_t)opt.stress_tick_ms * 1000};
            if (blk_stress(&drives[i], &so) != 0) failures++;
        }
    }
    if (failures) {
        printf("blk: FAIL: %d check(s) failed\n", failures);
        return GUEST_FAIL;
    }
    if (opt.mode == MODE_WRITE_FLUSH_IDLE) {
        printf("blk: flushed\n");
        cpu_halt_forever();
    }
    printf("blk: PASS (%d drive%s, mode %s)\n", ndrives, ndrives == 1 ? "" : "s", mode_name(opt.mode));
    return GUEST_PASS;
}
