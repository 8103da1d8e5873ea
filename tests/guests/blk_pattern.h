// The data pattern of the blk test guest (blk.c, blk_stress.c) and of tests/guests/run-blk-test,
// which computes the same on the host: word j of a 512-byte sector is derived from a seed, the
// sector number and j by these odd constants (blk.c and blk_stress.c say how).
#pragma once

#include "virtio_blk.h"

#define K_SEED 0x9e3779b97f4a7c15ull
#define K_SECTOR 0xd6e8feb86659fd93ull
#define K_WORD 0x2545f4914f6cdd1dull
#define WORDS_PER_SECTOR (VIRTIO_BLK_SECTOR_SIZE / 8)
