// The blk guests' data pattern constants (blk.c, blk_stress.c; run-blk-test computes the same).
#pragma once

#include "virtio_blk.h"

#define K_SEED 0x9e3779b97f4a7c15ull
#define K_SECTOR 0xd6e8feb86659fd93ull
#define K_WORD 0x2545f4914f6cdd1dull
#define WORDS_PER_SECTOR (VIRTIO_BLK_SECTOR_SIZE / 8)
