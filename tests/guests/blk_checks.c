// blk test guest: the checks of blk.mode=full and blk.mode=burst on one drive (blk.c).
#include "blk.h"

#include "io.h"
#include "str.h"

static uint8_t small_buf[4 * VIRTIO_BLK_SECTOR_SIZE] __attribute__((aligned(512)));

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

int flush(struct blk_dev* b) {
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

void describe(struct blk_dev* b) {
    printf("blk: id %s\n", b->id);
    char where[64];
    if (virtio_is_pci(&b->v)) snprintf(where, sizeof(where), "virtio-pci 00:%02x.0 BAR 0x%lx", b->v.pci.slot, b->v.base);
    else snprintf(where, sizeof(where), "virtio-mmio at 0x%lx gsi %u", b->entry.base, b->entry.gsi);
    printf("blk: %s: %s, capacity %lu sectors (%lu KiB), seg_max %u, blk_size %u, "
           "features 0x%lx (offered 0x%lx)%s%s%s%s\n",
           b->id, where, b->capacity, b->capacity / 2, b->seg_max, b->blk_size, b->v.features,
           b->v.device_features, b->ro ? ", read-only" : "", b->flush ? ", flush" : "", b->discard ? ", discard" : "",
           b->write_zeroes ? ", write-zeroes" : "");
    if (b->ro) printf("blk: %s: read-only\n", b->id);
    else printf("blk: %s: read-write\n", b->id);
}

void full_drive(struct blk_dev* b) {
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
void burst_drive(struct blk_dev* b) {
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
