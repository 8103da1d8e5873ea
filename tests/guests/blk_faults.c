// blk test guest, modes eio and enospc: what a driver sees when the host's image fails under the
// device (tests/guests/run-blk-test scenarios eio and enospc set the faults up).
//
// eio: the drive is a device-mapper device whose sectors [blk.bad=START-END) are an `error`
// target (every I/O there fails with EIO on the host) and whose other sectors map the image,
// which the host filled with the pattern (seed blk.seed). Checked, in 4 KiB requests:
//   1. reads: IOERR for exactly the requests that touch the failing range (also those that
//      straddle its ends), the pattern everywhere else;
//   2. writes of the pattern with seed + 1 over the whole drive: OK outside the range; inside it
//      the host's page cache may take a write and fail only when it is written back, so there a
//      write is either IOERR or acknowledged, and then
//   3. the FLUSH that follows must be IOERR (an acknowledged write that did not reach the disk
//      must not be reported durable);
//   4. the device goes on: writes with seed + 2 outside the range and a FLUSH are OK, and read
//      back. The host then checks the image: seed + 2 outside the range, the original pattern
//      inside (nothing was written there).
// enospc: a blank sparse image bigger than the (tmpfs) file system it is on. Checked:
//   1. writes of the pattern over the whole drive: the first ones OK, then IOERR once the file
//      system is full (both must occur);
//   2. FLUSH OK; every chunk reads OK: the acknowledged ones hold the pattern;
//   3. overwriting an acknowledged chunk is OK (no new space needed);
//   4. DISCARD of the first 16 chunks frees space: 16 chunks that failed before are now written
//      OK; FLUSH; the discarded chunks read zeros, every acknowledged one the pattern.
//   The console's last line gives the chunks that hold the pattern ("enospc: N chunks hold the
//   pattern, the first 16 are zeros"), which the host checks in the image.
#include "blk.h"

#include "str.h"

#define CHUNK_SECTORS 8u
#define MAX_CHUNKS 4096u  // 16 MiB drives

static uint8_t chunk_buf[CHUNK_SECTORS * VIRTIO_BLK_SECTOR_SIZE] __attribute__((aligned(4096)));
static uint8_t acked[MAX_CHUNKS];

static uint32_t chunk_len(const struct blk_dev* b, uint64_t sector) {
    return (uint32_t)(b->capacity - sector < CHUNK_SECTORS ? b->capacity - sector : CHUNK_SECTORS);
}

static int touches_bad(uint64_t sector, uint32_t n) { return sector < opt.bad_end && sector + n > opt.bad_start; }

static int io(struct blk_dev* b, uint32_t type, uint64_t sector, uint32_t n) {
    return blk_request(b, type, sector, chunk_buf, n * VIRTIO_BLK_SECTOR_SIZE, type == VIRTIO_BLK_T_IN, NULL);
}

static int do_flush(struct blk_dev* b) { return blk_request(b, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, 0, NULL); }

// Writes the pattern with `seed` over the chunk at `sector`.
static int write_chunk(struct blk_dev* b, uint64_t sector, uint64_t seed) {
    const uint32_t n = chunk_len(b, sector);
    pattern_fill(chunk_buf, sector, n, seed);
    return io(b, VIRTIO_BLK_T_OUT, sector, n);
}

// Reads the chunk at `sector`: 0 if OK and holding the pattern with `seed`, else -1 after FAIL.
static int verify_chunk(struct blk_dev* b, uint64_t sector, uint64_t seed, const char* what) {
    const uint32_t n = chunk_len(b, sector);
    const int r = io(b, VIRTIO_BLK_T_IN, sector, n);
    if (r != VIRTIO_BLK_S_OK) {
        FAIL("%s: %s: read of sectors %lu+%u -> %s, expected OK\n", b->id, what, sector, n, blk_err_name(r));
        return -1;
    }
    return pattern_check(b, chunk_buf, sector, n, seed);
}

void eio_drive(struct blk_dev* b) {
    const uint64_t seed = drive_seed(b);
    if (!b->flush || b->ro) {
        FAIL("%s: eio needs a writable drive with FLUSH (cache=writeback)\n", b->id);
        return;
    }
    // Room for a request across either end (both ends inside the drive, a chunk from its ends).
    if (opt.bad_start >= opt.bad_end || opt.bad_start < CHUNK_SECTORS || opt.bad_end + CHUNK_SECTORS > b->capacity) {
        FAIL("%s: blk.bad=%lu-%lu is not inside the drive (%lu sectors) with a chunk to spare at each end\n", b->id,
             opt.bad_start, opt.bad_end, b->capacity);
        return;
    }
    // 1. Reads.
    uint64_t ok = 0, ioerr = 0;
    for (uint64_t s = 0; s < b->capacity; s += CHUNK_SECTORS) {
        const uint32_t n = chunk_len(b, s);
        if (touches_bad(s, n)) {
            const int r = io(b, VIRTIO_BLK_T_IN, s, n);
            if (r != VIRTIO_BLK_S_IOERR) {
                FAIL("%s: eio: read of sectors %lu+%u (failing range) -> %s, expected IOERR\n", b->id, s, n,
                     blk_err_name(r));
                return;
            }
            ioerr++;
        } else {
            if (verify_chunk(b, s, seed, "eio")) return;
            ok++;
        }
    }
    // Requests across either end of the range: one bad sector fails the whole request.
    const uint64_t across[2] = {opt.bad_start - 4, opt.bad_end - 4};
    for (int i = 0; i < 2; i++) {
        const int r = io(b, VIRTIO_BLK_T_IN, across[i], CHUNK_SECTORS);
        if (r != VIRTIO_BLK_S_IOERR) {
            FAIL("%s: eio: read of sectors %lu+%u (across an end of the failing range) -> %s, expected IOERR\n", b->id,
                 across[i], CHUNK_SECTORS, blk_err_name(r));
            return;
        }
    }
    printf("blk: %s: eio: reads: %lu OK with the pattern, %lu + 2 IOERR, exactly those touching sectors %lu-%lu\n",
           b->id, ok, ioerr, opt.bad_start, opt.bad_end);

    // 2. Writes over everything.
    uint64_t bad_acked = 0, bad_ioerr = 0;
    for (uint64_t s = 0; s < b->capacity; s += CHUNK_SECTORS) {
        const int r = write_chunk(b, s, seed + 1);
        if (!touches_bad(s, chunk_len(b, s))) {
            if (r != VIRTIO_BLK_S_OK) {
                FAIL("%s: eio: write of sector %lu (outside the failing range) -> %s\n", b->id, s, blk_err_name(r));
                return;
            }
        } else if (r == VIRTIO_BLK_S_OK) {
            bad_acked++;
        } else if (r == VIRTIO_BLK_S_IOERR) {
            bad_ioerr++;
        } else {
            FAIL("%s: eio: write of sector %lu (failing range) -> %s\n", b->id, s, blk_err_name(r));
            return;
        }
    }
    printf("blk: %s: eio: writes: all OK outside; in the failing range %lu IOERR, %lu taken by the host's cache\n",
           b->id, bad_ioerr, bad_acked);
    // 3. The flush must not claim what the cache took is durable.
    const int fr = do_flush(b);
    if (bad_acked > 0 && fr != VIRTIO_BLK_S_IOERR) {
        FAIL("%s: eio: FLUSH after %lu writes into the failing range were acknowledged -> %s, expected IOERR\n",
             b->id, bad_acked, blk_err_name(fr));
        return;
    }
    if (fr != VIRTIO_BLK_S_OK && fr != VIRTIO_BLK_S_IOERR) {
        FAIL("%s: eio: FLUSH -> %s\n", b->id, blk_err_name(fr));
        return;
    }
    printf("blk: %s: eio: FLUSH after the writes -> %s ok\n", b->id, blk_err_name(fr));

    // 4. The device goes on.
    for (uint64_t s = 0; s < b->capacity; s += CHUNK_SECTORS) {
        if (touches_bad(s, chunk_len(b, s))) continue;
        const int r = write_chunk(b, s, seed + 2);
        if (r != VIRTIO_BLK_S_OK) {
            FAIL("%s: eio: second write of sector %lu -> %s\n", b->id, s, blk_err_name(r));
            return;
        }
    }
    const int fr2 = do_flush(b);
    if (fr2 != VIRTIO_BLK_S_OK) {
        FAIL("%s: eio: FLUSH after writes outside the failing range -> %s, expected OK\n", b->id, blk_err_name(fr2));
        return;
    }
    for (uint64_t s = 0; s < b->capacity; s += CHUNK_SECTORS) {
        if (!touches_bad(s, chunk_len(b, s)) && verify_chunk(b, s, seed + 2, "eio: after the failed flush")) return;
    }
    printf("blk: %s: eio: after the errors: writes, FLUSH and reads outside the failing range OK\n", b->id);
}

void enospc_drive(struct blk_dev* b) {
    const uint64_t seed = drive_seed(b);
    const uint64_t chunks = (b->capacity + CHUNK_SECTORS - 1) / CHUNK_SECTORS;
    if (b->ro || !b->flush || !b->discard || chunks > MAX_CHUNKS) {
        FAIL("%s: enospc needs a writable drive of at most %u chunks with FLUSH and DISCARD\n", b->id, MAX_CHUNKS);
        return;
    }
    // 1. Writes until (and past) the point where the file system is full.
    uint64_t nacked = 0, nfailed = 0, first_failed = 0;
    for (uint64_t c = 0; c < chunks; c++) {
        const int r = write_chunk(b, c * CHUNK_SECTORS, seed);
        if (r == VIRTIO_BLK_S_OK) {
            acked[c] = 1;
            nacked++;
        } else if (r == VIRTIO_BLK_S_IOERR) {
            if (nfailed++ == 0) first_failed = c;
        } else {
            FAIL("%s: enospc: write of chunk %lu -> %s\n", b->id, c, blk_err_name(r));
            return;
        }
    }
    if (nacked < 32 || nfailed < 16) {
        FAIL("%s: enospc: %lu writes acknowledged, %lu IOERR: the file system did not fill up part-way\n", b->id,
             nacked, nfailed);
        return;
    }
    printf("blk: %s: enospc: writes: %lu acknowledged, %lu IOERR (the first at sector %lu)\n", b->id, nacked, nfailed,
           first_failed * CHUNK_SECTORS);
    // 2. Flush and read everything.
    int r = do_flush(b);
    if (r != VIRTIO_BLK_S_OK) {
        FAIL("%s: enospc: FLUSH on the full file system -> %s, expected OK\n", b->id, blk_err_name(r));
        return;
    }
    for (uint64_t c = 0; c < chunks; c++) {
        const uint64_t s = c * CHUNK_SECTORS;
        if (acked[c]) {
            if (verify_chunk(b, s, seed, "enospc")) return;
        } else if ((r = io(b, VIRTIO_BLK_T_IN, s, chunk_len(b, s))) != VIRTIO_BLK_S_OK) {
            FAIL("%s: enospc: read of the unwritten chunk at sector %lu -> %s, expected OK\n", b->id, s,
                 blk_err_name(r));
            return;
        }
    }
    printf("blk: %s: enospc: FLUSH OK, every chunk read OK, the acknowledged ones hold the pattern\n", b->id);
    // 3. Overwriting allocated space needs no new space.
    uint64_t last_acked = first_failed - 1;
    if ((r = write_chunk(b, last_acked * CHUNK_SECTORS, seed)) != VIRTIO_BLK_S_OK) {
        FAIL("%s: enospc: overwrite of the acknowledged chunk %lu -> %s, expected OK\n", b->id, last_acked,
             blk_err_name(r));
        return;
    }
    // 4. DISCARD gives space back; failed chunks can then be written.
    for (uint64_t c = 0; c < 16; c++) {
        if (!acked[c]) {
            FAIL("%s: enospc: chunk %lu was not acknowledged; the test needs the first 16\n", b->id, c);
            return;
        }
    }
    if ((r = blk_range_op(b, VIRTIO_BLK_T_DISCARD, 0, 16 * CHUNK_SECTORS, 0)) != VIRTIO_BLK_S_OK) {
        FAIL("%s: enospc: DISCARD of the first 16 chunks -> %s, expected OK\n", b->id, blk_err_name(r));
        return;
    }
    for (uint64_t c = 0; c < 16; c++) acked[c] = 0;
    uint64_t rewritten = 0;
    for (uint64_t c = first_failed; c < chunks && rewritten < 16; c++) {
        if (acked[c]) continue;
        if ((r = write_chunk(b, c * CHUNK_SECTORS, seed)) != VIRTIO_BLK_S_OK) {
            FAIL("%s: enospc: write of the failed chunk %lu after DISCARD freed space -> %s, expected OK\n", b->id, c,
                 blk_err_name(r));
            return;
        }
        acked[c] = 1;
        rewritten++;
    }
    if ((r = do_flush(b)) != VIRTIO_BLK_S_OK) {
        FAIL("%s: enospc: FLUSH after DISCARD -> %s, expected OK\n", b->id, blk_err_name(r));
        return;
    }
    uint64_t holding = 0;
    for (uint64_t c = 0; c < chunks; c++) {
        const uint64_t s = c * CHUNK_SECTORS;
        if (acked[c]) {
            if (verify_chunk(b, s, seed, "enospc: after DISCARD")) return;
            holding++;
        } else if (c < 16) {
            if ((r = io(b, VIRTIO_BLK_T_IN, s, chunk_len(b, s))) != VIRTIO_BLK_S_OK) {
                FAIL("%s: enospc: read of the discarded chunk %lu -> %s\n", b->id, c, blk_err_name(r));
                return;
            }
            if (zero_check(b, chunk_buf, s, chunk_len(b, s), "DISCARD")) return;
        }
    }
    printf("blk: %s: enospc: after DISCARD 16 failed chunks written OK, FLUSH OK\n", b->id);
    printf("blk: %s: enospc: %lu chunks hold the pattern, the first 16 are zeros\n", b->id, holding);
}
