// libguest: what the stress modes of the test guests share (net_stress.c, balloon_stress.c):
// one seeded random number generator (xorshift64*: the same seed gives the same run), random
// splits of a buffer into descriptors, and range-checked numeric knobs of the command line.
#pragma once

#include <stdint.h>

#include "virtio.h"

void rand_seed(uint64_t seed);
uint64_t rand_u64(void);
// 0 ... n - 1 (0 when n is 0).
uint32_t rand_below(uint32_t n);
// 1 with `percent` % probability.
int rand_chance(unsigned percent);

// Splits [addr, addr + len) into `n` buffers (n <= len) cut at random bytes, each at least one.
void stress_split(struct virtio_buf* out, unsigned n, uint64_t addr, uint32_t len, uint8_t write);

// Reads "key=N" from `cmdline` into *v if present. Returns 0, or -1 after printing
// "<prefix>FAIL: bad <key> (min ... max)" if it is not a number in range.
int stress_knob(const char* cmdline, const char* prefix, const char* key, uint64_t* v, uint64_t min, uint64_t max);
