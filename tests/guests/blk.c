// Test guest "blk": drives every virtio-blk device the VMM announced on the command line
// ("virtio_mmio.device=4K@0xADDR:GSI") through libguest's virtio-mmio driver and checks the
// device's semantics from the inside.
//
// Command line (besides the virtio_mmio.device= entries):
//   blk.mode=full               (default) per drive: GET_ID, configuration, pattern written over
//                               the whole disk and read back, FLUSH, DISCARD / WRITE_ZEROES,
//                               error statuses; read-only drives: pattern verified, writes refused
//   blk.mode=write              write the pattern over every writable drive, FLUSH, exit PASS
//   blk.mode=write-flush-idle   the same, then print "blk: flushed" and halt forever (the host
//                               SIGKILLs the VMM and checks the image file)
//   blk.mode=verify             read every drive and verify the pattern, exit PASS
//   blk.mode=burst              per drive: as many one-sector requests as the queue holds made
//                               available with one kick (more than the async engine's depth of
//                               128), writes then reads; then single requests (read-only drives:
//                               reads of the pattern only)
//   blk.mode=bench              benchmark phases on the first writable drive, or on the drive
//                               blk.bench_drive=ID names (the host times the console lines, see
//                               scripts/bench-blk): 4 KiB random reads at queue depth 1 and 32 (as
//                               many as the queue holds, up to 32), 128 KiB sequential reads and
//                               writes at depth 8; each phase prints "bench: <phase> start" and
//                               then "bench: <phase> done ops=N bytes=B qd=D" (D: most requests
//                               that were in flight at once); offsets from a fixed xorshift64
//                               sequence. The guest waits for completions like a driver: halted
//                               until the device's interrupt (I/O APIC -> IRQ_VECTOR, see
//                               lib/irq.h), then it reads and acknowledges InterruptStatus and
//                               takes what the used ring holds. The done line adds irqs=N (the
//                               interrupts taken)
//   blk.mode=stress             a long run of random requests on the first writable drive: random
//                               queue depth, sizes, descriptor shapes, kinds (reads, writes,
//                               FLUSH, DISCARD, WRITE_ZEROES, GET_ID, reads beyond the end),
//                               pauses and ways of waiting, every read checked against the data
//                               the guest knows it wrote; bounded waits that FAIL naming the
//                               requests done and in flight (blk_stress.c). The drive must be
//                               blank. "stress: done ops=..." then PASS
//   blk.mode=eio, blk.mode=enospc   a drive whose image fails under the device: device-mapper
//                               error sectors (blk.bad=START-END) or a full file system; see
//                               blk_faults.c for what is checked
//   blk.stress_ops=N            stress: requests of the random phase (default 20000)
//   blk.stress_tick_ms=N        stress: the local APIC tick that bounds every sleep (default 20;
//                               0: none, the guest then relies on the device's interrupts and
//                               the VMM's watchdog alone, and a lost wake-up hangs it)
//   blk.bench_poll              bench: spin on the used ring in guest memory instead (no VM
//                               exits while waiting, but the vCPU never sleeps)
//   blk.bench_ops=N             requests of the QD1 4 KiB phase (default 8000; QD32 phase: 2 x N)
//   blk.bench_seq_mib=N         MiB per sequential phase, wrapping over the drive (default 1024)
//   blk.bench_drive=ID          the drive to benchmark (GET_ID, or vda, vdb, ... without one)
//   blk.seed=N                  pattern seed (default 1); stress: also the random choices
//   blk.qsize=N                 queue size (power of two, 4 - 256; default: the largest, 256)
//   blk.no_event_idx, blk.no_indirect   do not negotiate VIRTIO_F_EVENT_IDX / INDIRECT_DESC
//   blk.expect_drives=N         FAIL unless exactly N virtio-blk devices were found
//
// The pattern: the 64-bit little-endian word j (0..63) of sector s of the drive whose GET_ID is
// `id` holds  S * K_SEED + s * K_SECTOR + j * K_WORD  (mod 2^64), where S = seed + fnv1a64(id)
// (fnv1a64 over the id's bytes up to the first NUL, at most 20). Different drives thus hold
// different data. tests/guests/run-blk-test computes the same pattern on the host.
//
// Requests: several in flight at once (SLOTS), each 1 - 256 sectors, in six shapes (one data
// descriptor; data split at odd offsets; one descriptor per sector up to the queue size; the
// whole request in an indirect table; header direct + data and status in an indirect table;
// header inside the data descriptor (OUT) or status inside it (IN)), rotated so that the read
// pass splits the disk differently from the write pass.
//
// Console: "blk: id <id>", "blk: <id>: ..." progress lines; "blk: PASS ..." or "blk: FAIL: ...".
#include "blk.h"

#include "blk_stress.h"
#include "io.h"
#include "str.h"

struct blk_options opt;
int failures;
static struct blk_dev drives[MAX_DRIVES];

static int parse_options(const char* cmdline) {
    size_t n = 0;
    const char* v;
    opt.mode = MODE_FULL;
    opt.seed = 1;
    opt.qsize = 0;
    opt.expect_drives = -1;
    opt.wanted = VIRTIO_BLK_GUEST_FEATURES;
    if ((v = cmdline_find(cmdline, "blk.mode", &n))) {
        if (n == 4 && !strncmp(v, "full", 4)) opt.mode = MODE_FULL;
        else if (n == 5 && !strncmp(v, "write", 5)) opt.mode = MODE_WRITE;
        else if (n == 16 && !strncmp(v, "write-flush-idle", 16)) opt.mode = MODE_WRITE_FLUSH_IDLE;
        else if (n == 6 && !strncmp(v, "verify", 6)) opt.mode = MODE_VERIFY;
        else if (n == 5 && !strncmp(v, "burst", 5)) opt.mode = MODE_BURST;
        else if (n == 5 && !strncmp(v, "bench", 5)) opt.mode = MODE_BENCH;
        else if (n == 6 && !strncmp(v, "stress", 6)) opt.mode = MODE_STRESS;
        else if (n == 3 && !strncmp(v, "eio", 3)) opt.mode = MODE_EIO;
        else if (n == 6 && !strncmp(v, "enospc", 6)) opt.mode = MODE_ENOSPC;
        else return -1;
    }
    uint64_t x;
    opt.bench_ops = 8000;
    opt.bench_seq_mib = 1024;
    opt.bench_id = NULL;
    opt.bench_id_len = 0;
    if ((v = cmdline_find(cmdline, "blk.bench_ops", &n))) {
        if (parse_u64(v, &x) != n || n == 0 || x == 0) return -1;
        opt.bench_ops = x;
    }
    if ((v = cmdline_find(cmdline, "blk.bench_seq_mib", &n))) {
        if (parse_u64(v, &x) != n || n == 0 || x == 0) return -1;
        opt.bench_seq_mib = x;
    }
    if ((v = cmdline_find(cmdline, "blk.bench_drive", &n))) {
        if (n == 0 || n > VIRTIO_BLK_ID_BYTES) return -1;
        opt.bench_id = v;
        opt.bench_id_len = n;
    }
    opt.bench_poll = cmdline_has_word(cmdline, "blk.bench_poll");
    opt.stress_ops = 20000;
    if ((v = cmdline_find(cmdline, "blk.stress_ops", &n))) {
        if (parse_u64(v, &x) != n || n == 0 || x == 0) return -1;
        opt.stress_ops = x;
    }
    opt.stress_tick_ms = 20;
    if ((v = cmdline_find(cmdline, "blk.stress_tick_ms", &n))) {
        if (parse_u64(v, &x) != n || n == 0 || x > 60000) return -1;
        opt.stress_tick_ms = x;
    }
    opt.bad_start = opt.bad_end = 0;
    if ((v = cmdline_find(cmdline, "blk.bad", &n))) {
        const size_t a = parse_u64(v, &opt.bad_start);
        if (a == 0 || a + 1 >= n || v[a] != '-' || parse_u64(v + a + 1, &opt.bad_end) != n - a - 1) return -1;
    }
    if ((v = cmdline_find(cmdline, "blk.seed", &n))) {
        if (parse_u64(v, &x) != n || n == 0) return -1;
        opt.seed = x;
    }
    if ((v = cmdline_find(cmdline, "blk.qsize", &n))) {
        if (parse_u64(v, &x) != n || n == 0 || x < 4 || x > VIRTQ_MAX_SIZE || (x & (x - 1))) return -1;
        opt.qsize = (uint16_t)x;
    }
    if ((v = cmdline_find(cmdline, "blk.expect_drives", &n))) {
        if (parse_u64(v, &x) != n || n == 0) return -1;
        opt.expect_drives = (long)x;
    }
    if (cmdline_has_word(cmdline, "blk.no_event_idx")) opt.wanted &= ~VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
    if (cmdline_has_word(cmdline, "blk.no_indirect")) opt.wanted &= ~VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC);
    return 0;
}

static const char* mode_name(enum mode m) {
    switch (m) {
        case MODE_FULL: return "full";
        case MODE_WRITE: return "write";
        case MODE_WRITE_FLUSH_IDLE: return "write-flush-idle";
        case MODE_VERIFY: return "verify";
        case MODE_BURST: return "burst";
        case MODE_BENCH: return "bench";
        case MODE_STRESS: return "stress";
        case MODE_EIO: return "eio";
        case MODE_ENOSPC: return "enospc";
    }
    return "?";
}

int guest_main(void) {
    const char* cmdline = boot_cmdline();
    if (parse_options(cmdline) != 0) {
        printf("blk: FAIL: bad blk.* option in the command line: %s\n", cmdline);
        return GUEST_FAIL;
    }
    struct virtio_mmio_entry entries[VIRTIO_MAX_DEVICES];
    const int found = virtio_find_devices(cmdline, entries, VIRTIO_MAX_DEVICES);
    if (found < 0) {
        printf("blk: FAIL: malformed virtio_mmio.device= entry in: %s\n", cmdline);
        return GUEST_FAIL;
    }
    printf("blk: mode %s, seed %lu, %d virtio devices%s%s\n", mode_name(opt.mode), opt.seed, found,
           (opt.wanted & VIRTIO_BIT(VIRTIO_F_EVENT_IDX)) ? "" : ", no EVENT_IDX",
           (opt.wanted & VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC)) ? "" : ", no INDIRECT_DESC");

    int ndrives = 0;
    for (int i = 0; i < found && i < VIRTIO_MAX_DEVICES; i++) {
        struct virtio_dev probe;
        if (virtio_probe(&probe, &entries[i]) == NULL && probe.device_id != VIRTIO_ID_BLOCK) {
            printf("blk: virtio-mmio device at 0x%lx has device ID %u: skipped\n", entries[i].base, probe.device_id);
            continue;
        }
        if (ndrives == MAX_DRIVES) {
            printf("blk: more than %d drives; the rest are skipped\n", MAX_DRIVES);
            break;
        }
        struct blk_dev* b = &drives[ndrives];
        const char* err = blk_open(b, &entries[i], opt.wanted, opt.qsize);
        if (err) {
            printf("blk: FAIL: device at 0x%lx: %s (status 0x%x)\n", entries[i].base, err, virtio_status(&b->v));
            return GUEST_FAIL;
        }
        const int r = blk_get_id(b);
        if (r != VIRTIO_BLK_S_OK) {
            printf("blk: FAIL: device at 0x%lx: GET_ID: %s\n", entries[i].base, blk_err_name(r));
            return GUEST_FAIL;
        }
        if (b->id[0] == '\0') snprintf(b->id, sizeof(b->id), "vd%c", 'a' + ndrives);
        // The stress counts the interrupts the VMM's watchdog raises again: acknowledge the one of
        // the polled GET_ID as a handler would, before the console lines below take 200 ms.
        if (opt.mode == MODE_STRESS) virtio_isr_ack(&b->v, virtio_isr_read(&b->v));
        describe(b);
        if (b->capacity == 0) {
            printf("blk: FAIL: %s: capacity 0\n", b->id);
            return GUEST_FAIL;
        }
        ndrives++;
    }
    if (opt.expect_drives >= 0 && ndrives != opt.expect_drives) {
        printf("blk: FAIL: found %d virtio-blk drives, expected %ld\n", ndrives, opt.expect_drives);
        return GUEST_FAIL;
    }
    if (ndrives == 0) {
        printf("blk: FAIL: no virtio-blk drive on the command line\n");
        return GUEST_FAIL;
    }

    for (int i = 0; i < ndrives; i++) {
        struct blk_dev* b = &drives[i];
        switch (opt.mode) {
            case MODE_FULL:
                pci_drive_checks(b);
                if (!failures) full_drive(b);
                break;
            case MODE_WRITE:
            case MODE_WRITE_FLUSH_IDLE:
                if (b->ro) {
                    printf("blk: %s: read-only, not written\n", b->id);
                    break;
                }
                if (pattern_pass(b, 0, 0, b->capacity, 0) == 0 && (!b->flush || flush(b) == 0))
                    printf("blk: %s: written%s\n", b->id, b->flush ? " and flushed" : " (no FLUSH offered)");
                break;
            case MODE_VERIFY:
                if (pattern_pass(b, 1, 0, b->capacity, 1) == 0) printf("blk: %s: pattern verified\n", b->id);
                break;
            case MODE_BURST:
                burst_drive(b);
                break;
            case MODE_EIO:
                eio_drive(b);
                break;
            case MODE_ENOSPC:
                enospc_drive(b);
                break;
            case MODE_BENCH:
            case MODE_STRESS:
                break;
        }
        if (failures) break;
    }
    if (opt.mode == MODE_BENCH) {
        int i = 0;
        if (opt.bench_id) {
            while (i < ndrives && !(strnlen(drives[i].id, sizeof(drives[i].id)) == opt.bench_id_len &&
                                    !strncmp(drives[i].id, opt.bench_id, opt.bench_id_len)))
                i++;
        } else {
            while (i < ndrives && drives[i].ro) i++;
        }
        if (i == ndrives) FAIL("bench: no %s\n", opt.bench_id ? "drive with the blk.bench_drive= id" : "writable drive");
        else if (drives[i].ro) FAIL("bench: %s is read-only (the write phase needs a writable drive)\n", drives[i].id);
        else bench_drive(&drives[i]);
    }
    if (opt.mode == MODE_STRESS) {
        int i = 0;
        while (i < ndrives && drives[i].ro) i++;
        if (i == ndrives) {
            FAIL("stress: no writable drive\n");
        } else {
            const struct blk_stress_options so = {opt.stress_ops, opt.seed, drive_seed(&drives[i]),
                                                  (uint32_t)opt.stress_tick_ms * 1000};
            if (blk_stress(&drives[i], &so) != 0) failures++;
        }
    }
    if (failures) {
        printf("blk: FAIL: %d check(s) failed\n", failures);
        return GUEST_FAIL;
    }
    if (opt.mode == MODE_WRITE_FLUSH_IDLE) {
        printf("blk: flushed\n");
        cpu_halt_forever();
    }
    printf("blk: PASS (%d drive%s, mode %s)\n", ndrives, ndrives == 1 ? "" : "s", mode_name(opt.mode));
    return GUEST_PASS;
}
