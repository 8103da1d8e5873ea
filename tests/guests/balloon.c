// Test guest "balloon": drives embervm's virtio-balloon device from the inside.
//
// Steps (console lines in quotes; the host runner tests/guests/run-balloon-test reads them):
//   1. finds the balloon among the virtio_mmio.device= entries, negotiates STATS_VQ,
//      DEFLATE_ON_OOM and PAGE_REPORTING as offered; with balloon.expect_deflate_on_oom=0|1
//      checks whether DEFLATE_ON_OOM was offered; posts a statistics buffer
//   2. reads the target (num_pages), writes a pattern into that many pages from 64 MiB up:
//      "balloon: dirtied N MiB", then waits for a line on the serial port
//   3. inflates exactly those pages (256 PFNs per chain), sets `actual`:
//      "balloon: inflated N pages", then waits for a line again (the host measures its RSS)
//   4. checks the inflated pages read back as zeros (the host discarded them)
//   5. with STATS_VQ: waits for the device to hand the statistics buffer back (its polling
//      interval), refills it: "balloon: statistics buffer returned and refilled"
//   6. deflates them all, `actual` = 0: "balloon: deflated"
//   7. with PAGE_REPORTING: reports a 2 MiB range of dirtied free pages, which must read as
//      zeros afterwards: "balloon: reported 2 MiB"
//   8. "balloon: PASS"
#include "guest.h"
#include "io.h"
#include "str.h"
#include "virtio.h"

#define BALLOON_F_STATS_VQ 1
#define BALLOON_F_DEFLATE_ON_OOM 2
#define BALLOON_F_PAGE_REPORTING 5
#define CFG_NUM_PAGES 0
#define CFG_ACTUAL 4
#define PAGE 4096ull
#define REGION_BASE (64ull << 20)  // the pages the guest gives away start here
#define PFNS_PER_CHAIN 256

static uint32_t pfn_array[PFNS_PER_CHAIN] __attribute__((aligned(64)));
static uint8_t stats_buf[10 * 8] __attribute__((aligned(64)));

static struct virtio_dev dev;

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

static size_t fill_stats(uint64_t total, uint64_t free_bytes) {
    const struct {
        uint16_t tag;
        uint64_t val;
    } entries[] = {{4, free_bytes}, {5, total}, {6, free_bytes}, {2, 1}, {3, 100}};
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(entries); i++) {
        memcpy(stats_buf + n, &entries[i].tag, 2);
        memcpy(stats_buf + n + 2, &entries[i].val, 8);
        n += 10;
    }
    return n;
}

// Sends `count` PFNs from `first_pfn` on queue `qi`, 256 per chain, waiting for each.
static int send_pfns(unsigned qi, uint64_t first_pfn, uint64_t count) {
    struct virtq* q = &dev.vq[qi];
    for (uint64_t done = 0; done < count;) {
        const uint64_t n = count - done < PFNS_PER_CHAIN ? count - done : PFNS_PER_CHAIN;
        for (uint64_t i = 0; i < n; i++) pfn_array[i] = (uint32_t)(first_pfn + done + i);
        const struct virtio_buf b = {(uint64_t)(uintptr_t)pfn_array, (uint32_t)(n * 4), 0};
        if (virtq_add(q, &b, 1) < 0) return -1;
        virtq_publish(q);
        virtq_kick(&dev, q);
        struct virtq_used_elem e;
        if (virtq_wait_used(&dev, q, &e) != VIRTQ_USED || virtq_free_chain(q, e.id) != 0) return -1;
        done += n;
    }
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
    const uint64_t wanted =
        VIRTIO_BIT(BALLOON_F_STATS_VQ) | VIRTIO_BIT(BALLOON_F_DEFLATE_ON_OOM) | VIRTIO_BIT(BALLOON_F_PAGE_REPORTING);
    const char* err = virtio_negotiate(&dev, wanted);
    if (err) FAIL("negotiation: %s\n", err);
    const int stats = (dev.features & VIRTIO_BIT(BALLOON_F_STATS_VQ)) != 0;
    const int report = (dev.features & VIRTIO_BIT(BALLOON_F_PAGE_REPORTING)) != 0;
    const int oom = (dev.features & VIRTIO_BIT(BALLOON_F_DEFLATE_ON_OOM)) != 0;
    printf("balloon: features 0x%lx: stats %d, deflate-on-oom %d, reporting %d\n", dev.features, stats, oom, report);
    size_t len;
    const char* v = cmdline_find(cmdline, "balloon.expect_deflate_on_oom", &len);
    if (v && len == 1 && (*v - '0') != oom) FAIL("DEFLATE_ON_OOM offered %d, expected %c\n", oom, *v);

    // Queues: inflate 0, deflate 1, then statistics and reporting as negotiated, without gaps.
    const unsigned stats_q = 2, report_q = stats ? 3 : 2;
    const unsigned nq = 2 + (unsigned)stats + (unsigned)report;
    for (unsigned i = 0; i < nq; i++) {
        if ((err = virtio_queue_setup(&dev, i, 16))) FAIL("queue %u: %s\n", i, err);
    }
    virtio_driver_ok(&dev);
    if (stats) {
        const struct virtio_buf b = {(uint64_t)(uintptr_t)stats_buf, (uint32_t)fill_stats(256ull << 20, 200ull << 20), 0};
        if (virtq_add(&dev.vq[stats_q], &b, 1) < 0) FAIL("stats buffer does not fit\n");
        virtq_publish(&dev.vq[stats_q]);
        virtq_kick(&dev, &dev.vq[stats_q]);
    }

    const uint32_t target = virtio_config_read32(&dev, CFG_NUM_PAGES);
    printf("balloon: target %u pages (%u MiB)\n", target, target / 256);
    if (target == 0) FAIL("target is 0 pages\n");
    const uint64_t first_pfn = REGION_BASE / PAGE;
    for (uint64_t p = 0; p < target; p++) {
        volatile uint64_t* w = phys_ptr(REGION_BASE + p * PAGE);
        for (unsigned i = 0; i < PAGE / 8; i += 64) w[i] = 0x5a5a000000000000ull | p;  // one write per cache line
    }
    printf("balloon: dirtied %u MiB\n", target / 256);
    wait_line();

    if (send_pfns(0, first_pfn, target) != 0) FAIL("inflate: no used element (status 0x%x)\n", virtio_status(&dev));
    virtio_config_write32(&dev, CFG_ACTUAL, target);
    if (virtio_config_read32(&dev, CFG_ACTUAL) != target) FAIL("actual does not read back\n");
    printf("balloon: inflated %u pages\n", target);
    wait_line();

    for (uint64_t p = 0; p < target; p++) {
        const volatile uint64_t* w = phys_ptr(REGION_BASE + p * PAGE);
        if (w[0] != 0 || w[PAGE / 8 - 1] != 0) FAIL("inflated page %lu still holds 0x%lx\n", p, w[0]);
    }
    printf("balloon: inflated pages read as zeros\n");

    if (stats) {
        struct virtq* q = &dev.vq[stats_q];
        struct virtq_used_elem e;
        if (virtq_wait_used(&dev, q, &e) != VIRTQ_USED || virtq_free_chain(q, e.id) != 0) {
            FAIL("the device did not hand the statistics buffer back\n");
        }
        const struct virtio_buf b = {(uint64_t)(uintptr_t)stats_buf, (uint32_t)fill_stats(256ull << 20, 100ull << 20), 0};
        virtq_add(q, &b, 1);
        virtq_publish(q);
        virtq_kick(&dev, q);
        printf("balloon: statistics buffer returned and refilled\n");
    }

    if (send_pfns(1, first_pfn, target) != 0) FAIL("deflate: no used element (status 0x%x)\n", virtio_status(&dev));
    virtio_config_write32(&dev, CFG_ACTUAL, 0);
    printf("balloon: deflated\n");

    if (report) {
        // Dirty 2 MiB past the ballooned range and report it as free.
        const uint64_t base = REGION_BASE + (uint64_t)target * PAGE;
        for (uint64_t a = 0; a < (2u << 20); a += PAGE) *(volatile uint64_t*)phys_ptr(base + a) = 0x77;
        struct virtq* q = &dev.vq[report_q];
        const struct virtio_buf b = {base, 2u << 20, 1};
        if (virtq_add(q, &b, 1) < 0) FAIL("report does not fit\n");
        virtq_publish(q);
        virtq_kick(&dev, q);
        struct virtq_used_elem e;
        if (virtq_wait_used(&dev, q, &e) != VIRTQ_USED || virtq_free_chain(q, e.id) != 0) {
            FAIL("reporting: no used element (status 0x%x)\n", virtio_status(&dev));
        }
        if (*(volatile uint64_t*)phys_ptr(base) != 0) FAIL("a reported page was not discarded\n");
        printf("balloon: reported 2 MiB\n");
    }
    if (virtio_status(&dev) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) FAIL("DEVICE_NEEDS_RESET\n");
    printf("balloon: PASS\n");
    return GUEST_PASS;
}
