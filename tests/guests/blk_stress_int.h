// blk stress guest: what its parts share (blk_stress.c, blk_stress_data.c, blk_stress_wait.c).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "blk_pattern.h"
#include "guest.h"
#include "virtio.h"
#include "virtio_blk.h"

#define MAX_SLOTS VIRTQ_MAX_SIZE
#define MAX_SECTORS (1u << 20)  // the used area: at most 512 MiB
#define POOL_PAGE 4096u
#define POOL_PAGES 4096u  // 16 MiB of data buffers
#define MAX_PIECES 64     // data descriptors of one request
#define TABLE_ENTRIES (MAX_PIECES + 2)
#define MAX_IO_SECTORS 512      // 256 KiB
#define MAX_RANGE_SECTORS 4096  // DISCARD / WRITE_ZEROES: 2 MiB
#define VERIFY_SECTORS 256
#define VERIFY_QD 8
#define STALL_CYCLES (1ull << 36)     // a request in flight this long has been lost
#define LOST_IRQ_CYCLES (1ull << 35)  // completions waited for, there, and no interrupt
#define PROGRESS_CYCLES (1ull << 33)
#define HEALTH_CYCLES (1ull << 24)  // how often a polling wait checks the deadlines and Status
#define MISSED_WAKEUP_CYCLES (1ull << 22)
#define LATE_IRQ_CYCLES (1ull << 28)

#define K_GEN 0xbf58476d1ce4e5b9ull

enum kind { K_READ, K_WRITE, K_FLUSH, K_DISCARD, K_WRITE_ZEROES, K_GET_ID, K_BAD_READ, NUM_KINDS };
extern const char* const kind_names[NUM_KINDS];
enum shape { SH_ONE, SH_SPLIT, SH_INDIRECT, SH_MIXED, SH_INLINE, NUM_SHAPES };
extern const char* const shape_names[NUM_SHAPES];

struct req {
    int busy;
    enum kind kind;
    enum shape shape;
    uint16_t head;
    uint16_t pieces;  // data descriptors
    uint64_t sector;
    uint32_t nsect;
    uint32_t gen;  // writes: the generation written
    int page;      // first pool page, or -1
    uint32_t pages;
    uint8_t* data;
    uint32_t data_len;
    volatile uint8_t* status;
    uint64_t number;     // 1-based, in submission order
    uint64_t submitted;  // TSC
};

extern struct req reqs[MAX_SLOTS];
extern uint8_t pool[POOL_PAGES * POOL_PAGE];  // data buffers (blk_stress_data.c)
extern uint32_t gen_of[MAX_SECTORS];          // per sector: 0 zeros, g > 0 the pattern of write g

struct stress_state {
    struct blk_dev* b;
    struct virtq* q;
    uint64_t area;  // sectors in use
    uint64_t pseed;
    uint64_t rng;
    uint32_t next_gen;
    uint64_t goal, issued, done;
    unsigned inflight, max_inflight;
    uint64_t count[NUM_KINDS];
    uint64_t shapes[NUM_SHAPES];
    uint64_t sleeps, polls, no_wait;
    uint64_t missed_wakeups, max_missed_wakeup, late_irqs, max_late_irq;  // see note_wakeup
    uint64_t irqs0, ticks0, tsc0;
    uint64_t next_sector;  // behind the previous request
    // the epoch
    uint64_t epoch_end;
    unsigned target_qd, max_sectors, pause_pct, poll_pct, kick_pct, take_pct;
    int compact;  // only SH_INDIRECT
    // progress lines
    uint64_t next_progress, last_line;
    int verifying;
};
extern struct stress_state st;

#define STRESS_FAIL(...)                               \
    do {                                               \
        printf("blk: FAIL: stress: " __VA_ARGS__);     \
        dump_state();                                  \
    } while (0)

// ---- random numbers (xorshift64*) ----

static inline uint64_t rnd(void) {
    st.rng ^= st.rng >> 12;
    st.rng ^= st.rng << 25;
    st.rng ^= st.rng >> 27;
    return st.rng * 0x2545f4914f6cdd1dull;
}
static inline uint32_t below(uint32_t n) { return n ? (uint32_t)(rnd() % n) : 0; }
static inline int percent(unsigned p) { return below(100) < p; }
static inline unsigned min_u(unsigned a, unsigned b) { return a < b ? a : b; }

static inline int writes_data(enum kind k) { return k == K_WRITE || k == K_DISCARD || k == K_WRITE_ZEROES; }
static inline int has_range(enum kind k) { return k == K_READ || writes_data(k); }

// ---- diagnosis and waits (blk_stress_wait.c) ----

// Prints the queue's state and the oldest requests in flight.
void dump_state(void);
// Waits until at least `want` used elements are there: spinning on the used ring (interrupts
// suppressed) if `poll`, else asleep until the device's interrupt. Returns 0 or -1 (after FAIL).
int wait_for(unsigned want, int poll);

// ---- data and buffers (blk_stress_data.c) ----

void fill(uint8_t* buf, uint64_t sector, uint32_t nsect, uint32_t gen);
// Checks the data read by `r` against gen_of. Returns 0, or -1 after FAIL.
int verify_read(const struct req* r);
// Marks every pool page free.
void pool_reset(void);
// The first of `pages` free pool pages in a row, now taken, or -1.
int pool_alloc(uint32_t pages);
void pool_free(int first, uint32_t pages);
