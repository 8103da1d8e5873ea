// blk test guest: what its parts share (blk.c, blk_pattern.c, blk_checks.c, blk_bench.c, blk_pci.c).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "blk_pattern.h"
#include "guest.h"
#include "virtio.h"
#include "virtio_blk.h"

#define MAX_DRIVES 8
#define SLOTS 4
#define SLOT_SECTORS 256
#define SLOT_BYTES (SLOT_SECTORS * VIRTIO_BLK_SECTOR_SIZE)
#define SLOT_PREFIX 64  // room for a header right before the data (shape "inline")

enum mode { MODE_FULL, MODE_WRITE, MODE_WRITE_FLUSH_IDLE, MODE_VERIFY, MODE_BURST, MODE_BENCH, MODE_STRESS, MODE_EIO,
           MODE_ENOSPC };

// The blk.* options of the command line (blk.c).
struct blk_options {
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
    uint64_t bad_start, bad_end;  // blk.bad=START-END (sectors): mode eio's failing range
};
extern struct blk_options opt;

// Checks that failed so far (blk.c); FAIL prints "blk: FAIL: ..." and counts one.
extern int failures;

#define FAIL(...)                      \
    do {                               \
        printf("blk: FAIL: " __VA_ARGS__); \
        failures++;                    \
    } while (0)

// ---- buffers (identity-mapped guest RAM; blk_pattern.c) ----

struct slot_mem {
    uint8_t prefix[SLOT_PREFIX];
    uint8_t data[SLOT_BYTES];
    uint8_t status_after;  // status byte right behind the data (shape "inline", IN)
    uint8_t pad[4096 - SLOT_PREFIX - 1];
};
extern struct slot_mem slot_mem[SLOTS];

// ---- the pattern (blk_pattern.c) ----

// The pattern seed of drive `b`: opt.seed + fnv1a64 of its id.
uint64_t drive_seed(const struct blk_dev* b);
void pattern_fill(void* buf, uint64_t sector, uint32_t nsect, uint64_t seed);
// Returns 0, or -1 after printing the first mismatch.
int pattern_check(const struct blk_dev* b, const void* buf, uint64_t sector, uint32_t nsect, uint64_t seed);
// Returns 0, or -1 after printing the first non-zero word (`what` zeroed it).
int zero_check(const struct blk_dev* b, const void* buf, uint64_t sector, uint32_t nsect, const char* what);
// Reads (verifying the pattern) or writes [first, first + count) with several requests in
// flight. `variant` rotates request sizes and shapes. Returns 0 or -1 (after printing why).
int pattern_pass(struct blk_dev* b, int is_read, uint64_t first, uint64_t count, unsigned variant);

// ---- per drive (blk_checks.c, blk_bench.c) ----

// FLUSH: OK if offered, UNSUPP if not. Returns 0, or -1 after FAIL.
int flush(struct blk_dev* b);
// Prints the drive's id, configuration and features.
void describe(struct blk_dev* b);
// blk.mode=full on one drive.
void full_drive(struct blk_dev* b);
// blk.mode=burst on one drive.
void burst_drive(struct blk_dev* b);
// blk.mode=bench on one (writable) drive.
void bench_drive(struct blk_dev* b);
// blk.mode=eio / enospc on one drive (blk_faults.c).
void eio_drive(struct blk_dev* b);
void enospc_drive(struct blk_dev* b);
// virtio-pci only (blk_pci.c): MSI-X delivery and masking, BAR relocation. A no-op on virtio-mmio.
void pci_drive_checks(struct blk_dev* b);
