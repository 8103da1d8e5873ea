// The stress mode of the blk test guest (blk.mode=stress; blk_stress.c, driven by blk.c).
#pragma once

#include <stdint.h>

#include "virtio_blk.h"

struct blk_stress_options {
    uint64_t ops;           // requests of the random phase (blk.stress_ops)
    uint64_t rng_seed;      // the random choices (blk.seed)
    uint64_t pattern_seed;  // what the data words are derived from (the seed and the drive's id)
    uint32_t tick_us;       // period of the tick that bounds the sleeps (blk.stress_tick_ms); 0: none
};

// Runs the stress on the writable drive `b`, which must read as zeros at the start (the runners'
// sparse images do). The device's interrupts wake the guest (its GSI is routed for the run).
// Prints progress lines and the summary; returns 0, or -1 after printing "blk: FAIL: stress: ...".
int blk_stress(struct blk_dev* b, const struct blk_stress_options* o);
