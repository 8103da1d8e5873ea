// blk test guest: the data pattern, written over a drive or read back and checked (blk.c).
#include "blk.h"

#include "str.h"

#define TABLE_ENTRIES 64

struct slot_mem slot_mem[SLOTS] __attribute__((section(".noinit"), aligned(4096)));
static struct virtq_desc itable[SLOTS][TABLE_ENTRIES] __attribute__((aligned(16)));
static struct virtio_blk_req_hdr slot_hdr[SLOTS] __attribute__((aligned(16)));
static volatile uint8_t slot_status[SLOTS][64] __attribute__((aligned(64)));

// ---- the pattern ----

static uint64_t fnv1a64(const char* s, size_t max) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < max && s[i]; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t drive_seed(const struct blk_dev* b) { return opt.seed + fnv1a64(b->id, VIRTIO_BLK_ID_BYTES); }

void pattern_fill(void* buf, uint64_t sector, uint32_t nsect, uint64_t seed) {
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

int pattern_check(const struct blk_dev* b, const void* buf, uint64_t sector, uint32_t nsect, uint64_t seed) {
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

int zero_check(const struct blk_dev* b, const void* buf, uint64_t sector, uint32_t nsect, const char* what) {
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

int pattern_pass(struct blk_dev* b, int is_read, uint64_t first, uint64_t count, unsigned variant) {
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
