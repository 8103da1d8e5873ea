// blk stress guest: the data, the checks of what reads return, the buffer pool (blk_stress.c).
#include "blk_stress_int.h"

#include "str.h"

uint8_t pool[POOL_PAGES * POOL_PAGE] __attribute__((section(".noinit"), aligned(4096)));
static uint64_t pool_used[POOL_PAGES / 64];

// ---- data ----

static uint64_t word0(uint64_t sector, uint32_t gen) { return st.pseed * K_SEED + sector * K_SECTOR + gen * K_GEN; }

void fill(uint8_t* buf, uint64_t sector, uint32_t nsect, uint32_t gen) {
    uint64_t* p = (uint64_t*)buf;
    for (uint32_t s = 0; s < nsect; s++, p += WORDS_PER_SECTOR) {
        uint64_t v = word0(sector + s, gen);
        for (unsigned j = 0; j < WORDS_PER_SECTOR; j++, v += K_WORD) p[j] = v;
    }
}

// Returns 0 if the sector at `p` holds what generation `gen` of `sector` should, else the first
// differing word + 1.
static unsigned sector_differs(const uint64_t* p, uint64_t sector, uint32_t gen) {
    uint64_t acc = 0;
    if (gen == 0) {
        for (unsigned j = 0; j < WORDS_PER_SECTOR; j++) acc |= p[j];
    } else {
        uint64_t v = word0(sector, gen);
        for (unsigned j = 0; j < WORDS_PER_SECTOR; j++, v += K_WORD) acc |= p[j] ^ v;
    }
    if (acc == 0) return 0;
    const uint64_t base = gen ? word0(sector, gen) : 0;
    for (unsigned j = 0; j < WORDS_PER_SECTOR; j++) {
        if (p[j] != (gen ? base + j * K_WORD : 0)) return j + 1;
    }
    return 0;
}

// What a wrong sector holds instead: zeros, another generation of the same sector, or neither.
static void describe_content(const uint64_t* p, uint64_t sector, char* out, size_t size) {
    if (sector_differs(p, sector, 0) == 0) {
        snprintf(out, size, "zeros");
        return;
    }
    uint64_t inv = K_GEN;  // K_GEN^-1 mod 2^64 by Newton's iteration (K_GEN is odd)
    for (int i = 0; i < 6; i++) inv *= 2 - K_GEN * inv;
    const uint64_t g = (p[0] - word0(sector, 0)) * inv;
    if (g > 0 && g < st.next_gen && sector_differs(p, sector, (uint32_t)g) == 0) {
        snprintf(out, size, "generation %lu of this sector (a %s write)", g,
                 g < gen_of[sector] ? "stale" : "newer");
        return;
    }
    snprintf(out, size, "other data (first word 0x%lx)", p[0]);
}

int verify_read(const struct req* r) {
    for (uint32_t s = 0; s < r->nsect; s++) {
        const uint64_t sector = r->sector + s;
        const uint64_t* p = (const uint64_t*)(r->data + (size_t)s * VIRTIO_BLK_SECTOR_SIZE);
        const uint32_t gen = gen_of[sector];
        const unsigned j = sector_differs(p, sector, gen);
        if (j == 0) continue;
        char what[96];
        describe_content(p, sector, what, sizeof(what));
        const uint64_t want = gen ? word0(sector, gen) + (j - 1) * K_WORD : 0;
        printf("blk: FAIL: stress: read #%lu of sectors %lu+%u (shape %s, %u data descriptors): sector %lu byte %u "
               "reads 0x%lx, expected 0x%lx; %lu requests done, %u in flight\n",
               r->number, r->sector, r->nsect, shape_names[r->shape], r->pieces, sector, (j - 1) * 8, p[j - 1], want,
               st.done, st.inflight);
        printf("stress: sector %lu should hold %s %u, and holds %s\n", sector, gen ? "generation" : "zeros, generation",
               gen, what);
        dump_state();
        return -1;
    }
    return 0;
}

// ---- buffers ----

void pool_reset(void) { memset(pool_used, 0, sizeof(pool_used)); }

int pool_alloc(uint32_t pages) {
    uint32_t run = 0;
    for (uint32_t i = 0; i < POOL_PAGES; i++) {
        if ((i & 63) == 0 && pool_used[i / 64] == ~0ull) {
            run = 0;
            i += 63;
            continue;
        }
        if (pool_used[i / 64] & (1ull << (i & 63))) {
            run = 0;
            continue;
        }
        if (++run == pages) {
            const uint32_t first = i + 1 - pages;
            for (uint32_t k = first; k <= i; k++) pool_used[k / 64] |= 1ull << (k & 63);
            return (int)first;
        }
    }
    return -1;
}

void pool_free(int first, uint32_t pages) {
    for (uint32_t k = (uint32_t)first; k < (uint32_t)first + pages; k++) pool_used[k / 64] &= ~(1ull << (k & 63));
}
