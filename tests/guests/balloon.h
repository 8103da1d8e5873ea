// Test guest "balloon": what balloon.c and balloon_stress.c (balloon.mode=stress) share
// (virtio 1.2, 5.5 "Traditional Memory Balloon Device").
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "virtio.h"

#define BALLOON_F_MUST_TELL_HOST 0
#define BALLOON_F_STATS_VQ 1
#define BALLOON_F_DEFLATE_ON_OOM 2
#define BALLOON_F_FREE_PAGE_HINT 3
#define BALLOON_F_PAGE_POISON 4
#define BALLOON_F_PAGE_REPORTING 5
#define CFG_NUM_PAGES 0
#define CFG_ACTUAL 4
#define PAGE 4096ull
#define MIB (1ull << 20)

// Statistics tags (5.5.6.3).
#define STAT_SWAP_IN 0
#define STAT_SWAP_OUT 1
#define STAT_MAJFLT 2
#define STAT_MINFLT 3
#define STAT_MEMFREE 4
#define STAT_MEMTOT 5
#define STAT_AVAIL 6
#define STAT_CACHES 7
#define STATS_BUF_BYTES (8 * 10)  // the 8 tags above, 10 bytes each

// Bytes of RAM in the memory map (set by pick_region).
extern uint64_t ram_total;
// `bytes` of RAM for the balloon: 2 MiB-aligned, 2 MiB above the image, inside one RAM entry of
// the memory map, below 4 GiB. Also sums the RAM into ram_total. Returns the base, or 0.
uint64_t pick_region(uint64_t bytes);
// Fills `buf` (STATS_BUF_BYTES) with the statistics entries; returns their length.
size_t fill_stats(uint8_t* buf, uint64_t free_bytes, uint64_t minor_faults);

// balloon.mode=stress (balloon_stress.c): the features it asks for, its queue size (0: a bad
// knob, already reported), and the run (queues set up, DRIVER_OK set; `used` bytes of RAM are
// the guest's own). Returns GUEST_PASS or GUEST_FAIL.
uint64_t balloon_stress_features(const char* cmdline);
uint16_t balloon_stress_queue_size(const char* cmdline);
int balloon_stress(const char* cmdline, struct virtio_dev* d, unsigned stats_q, unsigned report_q, uint64_t used);
