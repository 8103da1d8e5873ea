// Test guest "balloon": drives embervm's virtio-balloon device (virtio 1.2, 5.5) from the inside.
//
// Command line knobs:
//   balloon.mode=full          (default) the steps below
//   balloon.mode=report        free page reporting only: dirty, report, check (see below)
//   balloon.mode=stress        follows the host's target changes for as long as the host wants,
//                              with random batches, chain shapes, churn, free page reporting,
//                              statistics, interrupts (balloon_stress.c, which lists its knobs)
//   balloon.dirty_mib=N        MiB of free memory to dirty (full: default and minimum the target;
//                              report: default 32)
//   balloon.expect_deflate_on_oom=0|1   whether VIRTIO_BALLOON_F_DEFLATE_ON_OOM must be offered
//
// The pages it gives away: a 2 MiB-aligned region above its own image (2 MiB of slack after
// __image_end), checked to lie inside one RAM entry of the memory map (e820 table or PVH memmap)
// and below 4 GiB (the identity map).
//
// full (console lines in quotes; tests/guests/run-balloon-test reads them):
//   1. finds the balloon among the virtio_mmio.device= entries, negotiates STATS_VQ,
//      DEFLATE_ON_OOM and PAGE_REPORTING as offered; with STATS_VQ posts a statistics buffer
//      made from the memory map: "balloon: stats posted: free F MiB, available A MiB, total T MiB"
//   2. reads the target (num_pages), dirties that many pages (or dirty_mib):
//      "balloon: dirtied N MiB", then waits for a line on the serial port
//   3. inflates exactly the target, from the dirtied pages (1024 PFNs, one 4 KiB page, per chain),
//      sets `actual`: "balloon: inflated N pages", waits for a line again (the host measures RSS)
//   4. checks the inflated pages read back as zeros (the host discarded them)
//   5. with STATS_VQ: waits for the device to hand the statistics buffer back (its polling
//      interval), refills it: "balloon: statistics buffer returned and refilled"
//   6. deflates them all, `actual` = 0, and uses a few of them again: "balloon: deflated"
//   7. with PAGE_REPORTING: reports a 2 MiB range of dirtied free pages, which must read as
//      zeros afterwards: "balloon: reported 2 MiB"
//   8. "balloon: PASS"
// report: PAGE_REPORTING must be offered; dirties dirty_mib: "balloon: dirtied N MiB", waits;
//   reports all of it in 2 MiB ranges, 16 per chain (device-writable descriptors):
//   "balloon: reported N MiB", waits; checks the reported pages read as zeros and are usable;
//   with STATS_VQ waits for the statistics buffer as in full; "balloon: PASS (report)".
#include "balloon.h"
#include "guest.h"
#include "io.h"
#include "str.h"
#include "virtio.h"

#define PFNS_PER_CHAIN 1024
#define REPORT_RANGE (2 * MIB)
#define REPORT_RANGES_PER_CHAIN 16

extern char __image_start[], __image_end[];

static uint32_t pfn_array[PFNS_PER_CHAIN] __attribute__((aligned(4096)));
static uint8_t stats_buf[STATS_BUF_BYTES] __attribute__((aligned(64)));

static struct virtio_dev dev;
uint64_t ram_total;

#define FAIL(...)                              \
    do {                                       \
        printf("balloon: FAIL: " __VA_ARGS__); \
        return GUEST_FAIL;                     \
    } while (0)

static void wait_line(void) {
    printf("balloon: waiting for the host\n");
    for (;;) {
        const int c = serial_getc();
        if (c == '\n' || c == '\r') return;
    }
}

// ---- memory map ----

struct mem_range {
    uint64_t addr, size;
    uint32_t type;
};

// The i-th entry of the memory map the VMM gave (e820 table or PVH memmap); 0 past the end.
static int memmap_entry(unsigned i, struct mem_range* out) {
    const uint64_t info = boot_info_addr();
    if (boot_protocol() == BOOT_PVH) {
        const struct hvm_start_info* si = phys_ptr(info);
        const struct {
            uint64_t addr, size;
            uint32_t type, reserved;
        }* map = phys_ptr(si->memmap_paddr);
        if (si->version < 1 || i >= si->memmap_entries || i >= 128) return 0;
        *out = (struct mem_range){map[i].addr, map[i].size, map[i].type};
        return 1;
    }
    const uint8_t* zp = phys_ptr(info);
    const struct {
        uint64_t addr, size;
        uint32_t type;
    } GUEST_PACKED* map = (const void*)(zp + ZP_E820_TABLE);
    if (i >= zp[ZP_E820_ENTRIES] || i >= 128) return 0;
    *out = (struct mem_range){map[i].addr, map[i].size, map[i].type};
    return 1;
}

// The region for the balloon (balloon.h).
uint64_t pick_region(uint64_t bytes) {
    const uint64_t lowest = (((uint64_t)(uintptr_t)__image_end + 2 * MIB - 1) & ~(2 * MIB - 1)) + 2 * MIB;
    uint64_t base = 0;
    struct mem_range r;
    ram_total = 0;
    for (unsigned i = 0; memmap_entry(i, &r); i++) {
        if (r.type != 1) continue;
        ram_total += r.size;
        uint64_t start = r.addr > lowest ? (r.addr + 2 * MIB - 1) & ~(2 * MIB - 1) : lowest;
        const uint64_t end = r.addr + r.size < (4ull << 30) ? r.addr + r.size : (4ull << 30);
        if (!base && start < end && end - start >= bytes) base = start;
    }
    // Nothing the VMM placed for the guest may be in there.
    const uint64_t info = boot_info_addr(), cmd = (uint64_t)(uintptr_t)boot_cmdline();
    if (base && ((info >= base && info < base + bytes) || (cmd >= base && cmd < base + bytes))) return 0;
    return base;
}

// ---- statistics ----

size_t fill_stats(uint8_t* buf, uint64_t free_bytes, uint64_t minor_faults) {
    const struct {
        uint16_t tag;
        uint64_t val;
    } entries[] = {{STAT_SWAP_IN, 0},           {STAT_SWAP_OUT, 0},         {STAT_MAJFLT, 1},
                   {STAT_MINFLT, minor_faults}, {STAT_MEMFREE, free_bytes}, {STAT_MEMTOT, ram_total},
                   {STAT_AVAIL, free_bytes},    {STAT_CACHES, 0}};
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(entries); i++) {
        memcpy(buf + n, &entries[i].tag, 2);  // le16 tag, le64 val, packed (10 bytes)
        memcpy(buf + n + 2, &entries[i].val, 8);
        n += 10;
    }
    return n;
}

static int post_stats(unsigned qi, uint64_t free_bytes) {
    struct virtq* q = &dev.vq[qi];
    const struct virtio_buf b = {(uint64_t)(uintptr_t)stats_buf, (uint32_t)fill_stats(stats_buf, free_bytes, 100), 0};
    if (virtq_add(q, &b, 1) < 0) return -1;
    virtq_publish(q);
    virtq_kick(&dev, q);
    return 0;
}

// ---- queues ----

static int wait_one(unsigned qi) {
    struct virtq* q = &dev.vq[qi];
    struct virtq_used_elem e;
    if (virtq_wait_used(&dev, q, &e) != VIRTQ_USED) return -1;
    return virtq_free_chain(q, e.id);
}

// Sends `count` PFNs from `first_pfn` on queue `qi` (inflate 0, deflate 1), PFNS_PER_CHAIN per
// chain, waiting for each.
static int send_pfns(unsigned qi, uint64_t first_pfn, uint64_t count) {
    struct virtq* q = &dev.vq[qi];
    for (uint64_t done = 0; done < count;) {
        const uint64_t n = count - done < PFNS_PER_CHAIN ? count - done : PFNS_PER_CHAIN;
        for (uint64_t i = 0; i < n; i++) pfn_array[i] = (uint32_t)(first_pfn + done + i);
        const struct virtio_buf b = {(uint64_t)(uintptr_t)pfn_array, (uint32_t)(n * 4), 0};
        if (virtq_add(q, &b, 1) < 0) return -1;
        virtq_publish(q);
        virtq_kick(&dev, q);
        if (wait_one(qi) != 0) return -1;
        done += n;
    }
    return 0;
}

// Reports [base, base + bytes) on the reporting queue in REPORT_RANGE pieces.
static int report_range(unsigned qi, uint64_t base, uint64_t bytes) {
    struct virtq* q = &dev.vq[qi];
    for (uint64_t off = 0; off < bytes;) {
        struct virtio_buf b[REPORT_RANGES_PER_CHAIN];
        unsigned n = 0;
        for (; n < REPORT_RANGES_PER_CHAIN && off < bytes; n++) {
            const uint64_t len = bytes - off < REPORT_RANGE ? bytes - off : REPORT_RANGE;
            b[n] = (struct virtio_buf){base + off, (uint32_t)len, 1};
            off += len;
        }
        if (virtq_add(q, b, n) < 0) return -1;
        virtq_publish(q);
        virtq_kick(&dev, q);
        if (wait_one(qi) != 0) return -1;
    }
    return 0;
}

// One write per 512 bytes of every page (so every page is resident on the host).
static void dirty(uint64_t base, uint64_t pages, uint64_t tag) {
    for (uint64_t p = 0; p < pages; p++) {
        volatile uint64_t* w = phys_ptr(base + p * PAGE);
        for (unsigned i = 0; i < PAGE / 8; i += 64) w[i] = tag | p;
    }
}

// Returns the first page of [base, base + pages) that does not read as zeros, or -1.
static int64_t first_nonzero(uint64_t base, uint64_t pages) {
    for (uint64_t p = 0; p < pages; p++) {
        const volatile uint64_t* w = phys_ptr(base + p * PAGE);
        if (w[0] != 0 || w[64] != 0 || w[PAGE / 8 - 1] != 0) return (int64_t)p;
    }
    return -1;
}

static int run_report(unsigned report_q, uint64_t dirty_mib) {
    const uint64_t bytes = dirty_mib * MIB;
    const uint64_t base = pick_region(bytes);
    if (!base) FAIL("no %lu MiB of RAM above the image for the pages to report\n", dirty_mib);
    dirty(base, bytes / PAGE, 0x3c3c000000000000ull);
    printf("balloon: dirtied %lu MiB at 0x%lx\n", dirty_mib, base);
    wait_line();
    if (report_range(report_q, base, bytes) != 0) FAIL("reporting: no used element (status 0x%x)\n", virtio_status(&dev));
    printf("balloon: reported %lu MiB\n", dirty_mib);
    wait_line();
    const int64_t p = first_nonzero(base, bytes / PAGE);
    if (p >= 0) FAIL("reported page %ld (0x%lx) was not discarded\n", p, (uint64_t)(base + (uint64_t)p * PAGE));
    // Reported pages are the guest's again at once: they must be usable.
    dirty(base, 4, 0x1111000000000000ull);
    if (*(volatile uint64_t*)phys_ptr(base + PAGE) != (0x1111000000000000ull | 1)) FAIL("a reported page is not usable\n");
    printf("balloon: reported pages read as zeros and are usable again\n");
    return 0;
}

int guest_main(void) {
    const char* cmdline = boot_cmdline();
    struct virtio_mmio_entry entries[VIRTIO_MAX_DEVICES];
    const int found = virtio_mmio_parse_cmdline(cmdline, entries, VIRTIO_MAX_DEVICES);
    int at = -1;
    for (int i = 0; i < found && i < VIRTIO_MAX_DEVICES && at < 0; i++) {
        if (virtio_probe(&dev, &entries[i]) == NULL && dev.device_id == VIRTIO_ID_BALLOON) at = i;
    }
    if (at < 0) FAIL("no virtio-balloon device on the command line\n");

    size_t len;
    const char* v;
    int report_mode = 0, stress_mode = 0;
    if ((v = cmdline_find(cmdline, "balloon.mode", &len))) {
        if (len == 6 && !strncmp(v, "report", 6)) report_mode = 1;
        else if (len == 6 && !strncmp(v, "stress", 6)) stress_mode = 1;
        else if (!(len == 4 && !strncmp(v, "full", 4))) FAIL("bad balloon.mode (full, report or stress)\n");
    }
    uint64_t dirty_mib = 0;
    if ((v = cmdline_find(cmdline, "balloon.dirty_mib", &len)) && (parse_u64(v, &dirty_mib) != len || !dirty_mib)) {
        FAIL("bad balloon.dirty_mib\n");
    }

    uint64_t wanted =
        VIRTIO_BIT(BALLOON_F_STATS_VQ) | VIRTIO_BIT(BALLOON_F_DEFLATE_ON_OOM) | VIRTIO_BIT(BALLOON_F_PAGE_REPORTING);
    if (stress_mode) wanted |= balloon_stress_features(cmdline);
    const char* err = virtio_negotiate(&dev, wanted);
    if (err) FAIL("negotiation: %s\n", err);
    const int stats = (dev.features & VIRTIO_BIT(BALLOON_F_STATS_VQ)) != 0;
    const int report = (dev.features & VIRTIO_BIT(BALLOON_F_PAGE_REPORTING)) != 0;
    const int oom = (dev.features & VIRTIO_BIT(BALLOON_F_DEFLATE_ON_OOM)) != 0;
    printf("balloon: features 0x%lx (offered 0x%lx): stats %d, deflate-on-oom %d, reporting %d; booted through %s\n",
           dev.features, dev.device_features, stats, oom, report, boot_protocol_name());
    v = cmdline_find(cmdline, "balloon.expect_deflate_on_oom", &len);
    if (v && len == 1 && (*v - '0') != oom) FAIL("DEFLATE_ON_OOM offered %d, expected %c\n", oom, *v);
    if (report_mode && !report) FAIL("balloon.mode=report, but VIRTIO_BALLOON_F_PAGE_REPORTING is not offered\n");

    // Queues: inflate 0, deflate 1, then statistics and reporting as negotiated, without gaps
    // (5.5.2: reporting is queue 3 with STATS_VQ, else 2, since FREE_PAGE_HINT is not offered).
    const unsigned stats_q = 2, report_q = stats ? 3 : 2;
    const unsigned nq = 2 + (unsigned)stats + (unsigned)report;
    const uint16_t qsize = stress_mode ? balloon_stress_queue_size(cmdline) : 16;
    if (!qsize) return GUEST_FAIL;
    for (unsigned i = 0; i < nq; i++) {
        if ((err = virtio_queue_setup(&dev, i, qsize))) FAIL("queue %u: %s\n", i, err);
    }
    virtio_driver_ok(&dev);

    // The memory map's RAM (pick_region sums it); "used": the image and the first MiB.
    pick_region(0);
    const uint64_t used = (uint64_t)(uintptr_t)__image_end + MIB;
    if (stress_mode) {
        if (balloon_stress(cmdline, &dev, stats_q, report_q, used) != GUEST_PASS) return GUEST_FAIL;
        printf("balloon: PASS (stress)\n");
        return GUEST_PASS;
    }
    if (stats) {
        if (post_stats(stats_q, ram_total - used) != 0) FAIL("stats buffer does not fit\n");
        printf("balloon: stats posted: free %lu MiB, available %lu MiB, total %lu MiB\n", (ram_total - used) >> 20,
               (ram_total - used) >> 20, ram_total >> 20);
    }

    if (report_mode) {
        if (run_report(report_q, dirty_mib ? dirty_mib : 32) != 0) return GUEST_FAIL;
        if (stats) {
            if (wait_one(stats_q) != 0) FAIL("the device did not hand the statistics buffer back\n");
            if (post_stats(stats_q, ram_total - used) != 0) FAIL("stats buffer does not fit\n");
            printf("balloon: statistics buffer returned and refilled\n");
        }
        if (virtio_status(&dev) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) FAIL("DEVICE_NEEDS_RESET\n");
        printf("balloon: PASS (report)\n");
        return GUEST_PASS;
    }

    const uint32_t target = virtio_config_read32(&dev, CFG_NUM_PAGES);
    printf("balloon: target %u pages (%u MiB)\n", target, target / 256);
    if (target == 0) FAIL("target is 0 pages\n");
    const uint64_t dirty_pages = dirty_mib ? dirty_mib * 256 : target;
    if (dirty_pages < target) FAIL("balloon.dirty_mib=%lu is less than the target\n", dirty_mib);
    // Room for the dirtied pages and the 2 MiB reported after them.
    const uint64_t region = pick_region(((dirty_pages * PAGE + REPORT_RANGE - 1) & ~(REPORT_RANGE - 1)) + REPORT_RANGE);
    if (!region) FAIL("no %lu MiB of RAM above the image for the balloon\n", dirty_pages / 256 + 2);
    const uint64_t first_pfn = region / PAGE;
    dirty(region, dirty_pages, 0x5a5a000000000000ull);
    printf("balloon: dirtied %lu MiB at 0x%lx\n", dirty_pages / 256, region);
    wait_line();

    if (send_pfns(0, first_pfn, target) != 0) FAIL("inflate: no used element (status 0x%x)\n", virtio_status(&dev));
    virtio_config_write32(&dev, CFG_ACTUAL, target);
    if (virtio_config_read32(&dev, CFG_ACTUAL) != target) FAIL("actual does not read back\n");
    printf("balloon: inflated %u pages\n", target);
    wait_line();

    const int64_t nz = first_nonzero(region, target);
    if (nz >= 0) FAIL("inflated page %ld still holds 0x%lx\n", nz, *(volatile uint64_t*)phys_ptr(region + (uint64_t)nz * PAGE));
    if (dirty_pages > target && first_nonzero(region + (uint64_t)target * PAGE, 1) != 0) {
        FAIL("the first dirtied page past the balloon lost its contents\n");
    }
    printf("balloon: inflated pages read as zeros\n");

    if (stats) {
        if (wait_one(stats_q) != 0) FAIL("the device did not hand the statistics buffer back\n");
        if (post_stats(stats_q, ram_total - used - (uint64_t)target * PAGE) != 0) FAIL("stats buffer does not fit\n");
        printf("balloon: statistics buffer returned and refilled\n");
    }

    if (send_pfns(1, first_pfn, target) != 0) FAIL("deflate: no used element (status 0x%x)\n", virtio_status(&dev));
    virtio_config_write32(&dev, CFG_ACTUAL, 0);
    // Deflated pages are the guest's again.
    dirty(region, 8, 0x2222000000000000ull);
    if (*(volatile uint64_t*)phys_ptr(region + 7 * PAGE) != (0x2222000000000000ull | 7)) FAIL("a deflated page is not usable\n");
    printf("balloon: deflated\n");

    if (report) {
        // Dirty 2 MiB past the ballooned range and report it as free.
        const uint64_t base = region + (((uint64_t)target * PAGE + REPORT_RANGE - 1) & ~(REPORT_RANGE - 1));
        dirty(base, REPORT_RANGE / PAGE, 0x7777000000000000ull);
        if (report_range(report_q, base, REPORT_RANGE) != 0) {
            FAIL("reporting: no used element (status 0x%x)\n", virtio_status(&dev));
        }
        if (first_nonzero(base, REPORT_RANGE / PAGE) >= 0) FAIL("a reported page was not discarded\n");
        printf("balloon: reported 2 MiB\n");
    }
    if (virtio_status(&dev) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) FAIL("DEVICE_NEEDS_RESET\n");
    printf("balloon: PASS\n");
    return GUEST_PASS;
}
