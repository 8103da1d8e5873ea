// Test guest "blk_malicious": hands embervm's virtio-blk device malformed virtqueues and
// descriptor chains on purpose. For each case it resets the device, sets it up, submits the bad
// thing and checks that the device
//   - sets DEVICE_NEEDS_RESET (Status bit 0x40) and raises a configuration-change interrupt
//     (InterruptStatus bit 1), without completing the malformed request,
//   - and, after a reset (Status 0), works again: a good write and read-back of one sector.
// Prints "malicious: <case> -> needs reset ok" per case; a few well-formed but odd requests are
// checked to get an error status instead ("malicious: <case> -> IOERR ok"). The guest still
// printing and exiting proves the VMM survived. Exit: PASS (33) if every case behaved.
//
// Command line: the first "virtio_mmio.device=" entry that is a virtio-blk device is used (the
// drive should be writable and at least 64 KiB). "malicious.only=<case>" runs one case.
#include "guest.h"
#include "io.h"
#include "str.h"
#include "virtio.h"
#include "virtio_blk.h"

#define OUT_OF_RAM_LOW 0xb0000000ull  // below the 32-bit MMIO hole, above RAM with --mem < 2.75 GiB

static struct blk_dev blk;
static struct virtio_mmio_entry entry;
static uint64_t ram_end;  // end of the RAM range the guest image lives in
static int failures, cases;
static const char* only;
static size_t only_len;

static struct virtio_blk_req_hdr hdr __attribute__((aligned(16)));
static volatile uint8_t status_byte[64] __attribute__((aligned(64)));
static uint8_t data[4096] __attribute__((aligned(4096)));
static uint8_t check[512] __attribute__((aligned(512)));
static struct virtq_desc table[16] __attribute__((aligned(16)));
static struct virtq_desc table2[4] __attribute__((aligned(16)));

#define ADDR(p) ((uint64_t)(uintptr_t)(p))

// ---- the memory map ----

static uint64_t find_ram_end(void) {
    const uint64_t image = 0x200000;  // guest.ld
    const uint64_t info = boot_info_addr();
    struct {
        uint64_t addr, size;
        uint32_t type;
    } e;
    unsigned n;
    if (boot_protocol() == BOOT_PVH) {
        const struct hvm_start_info* si = phys_ptr(info);
        if (si->version < 1) return 0;
        n = si->memmap_entries;
        for (unsigned i = 0; i < n && i < 128; i++) {
            const uint8_t* p = (const uint8_t*)phys_ptr(si->memmap_paddr) + 24 * i;
            memcpy(&e.addr, p, 8);
            memcpy(&e.size, p + 8, 8);
            memcpy(&e.type, p + 16, 4);
            if (e.type == 1 && e.addr <= image && image < e.addr + e.size) return e.addr + e.size;
        }
    } else {
        const uint8_t* zp = phys_ptr(info);
        n = zp[ZP_E820_ENTRIES];
        for (unsigned i = 0; i < n && i < 128; i++) {
            const uint8_t* p = zp + ZP_E820_TABLE + 20 * i;
            memcpy(&e.addr, p, 8);
            memcpy(&e.size, p + 8, 8);
            memcpy(&e.type, p + 16, 4);
            if (e.type == 1 && e.addr <= image && image < e.addr + e.size) return e.addr + e.size;
        }
    }
    return 0;
}

// ---- helpers ----

static int fail(const char* name, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const char* name, const char* fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    printf("malicious: FAIL: %s: %s (status 0x%x, InterruptStatus 0x%x)\n", name, msg, virtio_status(&blk.v),
           virtio_read32(&blk.v, VIRTIO_MMIO_INTERRUPT_STATUS));
    failures++;
    return -1;
}

static const char* open_device(uint64_t features) {
    return blk_open(&blk, &entry, features, 0);
}

// Up to DRIVER_OK's predecessor: reset, features negotiated, no queue set up.
static const char* negotiate_only(uint64_t features) {
    memset(&blk, 0, sizeof(blk));
    blk.entry = entry;
    const char* err = virtio_probe(&blk.v, &entry);
    if (!err) err = virtio_negotiate(&blk.v, features);
    return err;
}

static struct virtq* q0(void) { return &blk.v.vq[0]; }

static void fill_header(uint32_t type, uint64_t sector) {
    hdr.type = type;
    hdr.reserved = 0;
    hdr.sector = sector;
    status_byte[0] = 0xff;
}

// Publishes what the raw helpers put into the available ring and notifies unconditionally.
static void submit_raw(void) {
    virtq_publish(q0());
    virtq_notify(&blk.v, q0());
}

// Puts a chain of `n` raw descriptors (0..n-1, each NEXT to the following one) into the table.
static void raw_chain(const struct virtio_buf* bufs, unsigned n) {
    for (unsigned i = 0; i < n; i++) {
        virtq_raw_desc(q0(), (uint16_t)i, bufs[i].addr, bufs[i].len,
                       (uint16_t)((bufs[i].write ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)),
                       (uint16_t)(i + 1 < n ? i + 1 : 0));
    }
}

// Waits for DEVICE_NEEDS_RESET and the configuration-change interrupt. A used element is allowed
// only for the head `good_head` (a well-formed request submitted before the bad one).
static int expect_needs_reset(const char* name, int good_head) {
    if (q0()->size != 0) {
        for (;;) {
            struct virtq_used_elem e;
            const enum virtq_wait_result w = virtq_wait_used(&blk.v, q0(), &e);
            if (w == VIRTQ_NEEDS_RESET) break;
            if (w == VIRTQ_TIMEOUT) return fail(name, "no DEVICE_NEEDS_RESET (and no used element): timeout");
            if (good_head >= 0 && e.id == (uint32_t)good_head) {
                printf("malicious: %s: the good request before the bad one completed (allowed)\n", name);
                good_head = -1;
                continue;
            }
            return fail(name, "the device completed the malformed request (used id %u, len %u, status byte %u)", e.id,
                        e.len, status_byte[0]);
        }
    } else {
        // Set synchronously by the Status write (DRIVER_OK); allow the device a moment anyway.
        for (unsigned i = 0; !(virtio_status(&blk.v) & VIRTIO_STATUS_DEVICE_NEEDS_RESET); i++) {
            if (i == 100000) return fail(name, "no DEVICE_NEEDS_RESET after DRIVER_OK");
            cpu_pause();
        }
    }
    if (!(virtio_wait_isr(&blk.v, VIRTIO_MMIO_INT_CONFIG) & VIRTIO_MMIO_INT_CONFIG))
        return fail(name, "DEVICE_NEEDS_RESET without a configuration-change interrupt (InterruptStatus bit 1)");
    return 0;
}

// Resets the device and proves it works again: a sector written and read back.
static int recover(const char* name, unsigned n) {
    const uint64_t t0 = rdtsc();
    if (virtio_reset(&blk.v) != 0) return fail(name, "Status does not read 0 after writing 0");
    const uint64_t reset_cycles = rdtsc() - t0;
    const uint32_t isr = virtio_read32(&blk.v, VIRTIO_MMIO_INTERRUPT_STATUS);
    if (isr != 0) return fail(name, "InterruptStatus 0x%x after the reset", isr);
    const char* err = open_device(VIRTIO_BLK_GUEST_FEATURES);
    if (err) return fail(name, "set-up after the reset failed: %s", err);
    const uint64_t sector = 1 + n % 64;
    for (unsigned i = 0; i < 512; i++) data[i] = (uint8_t)(i * 7 + n);
    int r = blk_request(&blk, VIRTIO_BLK_T_OUT, sector, data, 512, 0, NULL);
    if (r != VIRTIO_BLK_S_OK) return fail(name, "write after the reset: %s", blk_err_name(r));
    memset(check, 0, sizeof(check));
    uint32_t used = 0;
    r = blk_request(&blk, VIRTIO_BLK_T_IN, sector, check, 512, 1, &used);
    if (r != VIRTIO_BLK_S_OK) return fail(name, "read after the reset: %s", blk_err_name(r));
    if (used != 513) return fail(name, "read after the reset: used len %u, expected 513", used);
    if (memcmp(check, data, 512) != 0) return fail(name, "read after the reset returned other data");
    if (reset_cycles > (1ull << 31)) {
        printf("malicious: %s: note: the reset took %lu TSC cycles (the VMM waited for requests in flight)\n", name,
               reset_cycles);
    }
    return 0;
}

// ---- the cases ----

// Each case leaves the device with the malformed state submitted; returns the head of a good
// request that may complete, or -1; -2 if the case itself could not be set up (failed).
typedef int (*case_fn)(const char* name);

static int setup(const char* name, uint64_t features) {
    const char* err = open_device(features);
    if (err) return fail(name, "set-up: %s", err);
    return 0;
}

static int good_request_bufs(struct virtio_buf* b) {
    fill_header(VIRTIO_BLK_T_IN, 0);
    b[0] = (struct virtio_buf){ADDR(&hdr), sizeof(hdr), 0};
    b[1] = (struct virtio_buf){ADDR(data), 512, 1};
    b[2] = (struct virtio_buf){ADDR(&status_byte[0]), 1, 1};
    return 3;
}

static int c_head_out_of_range(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    virtq_raw_avail_push(q0(), q0()->size);  // head == queue size
    submit_raw();
    return -1;
}

static int c_head_0xffff(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    virtq_raw_avail_push(q0(), 0xffff);
    submit_raw();
    return -1;
}

static int c_next_out_of_range(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    struct virtio_buf b[3];
    raw_chain(b, (unsigned)good_request_bufs(b));
    virtq_raw_desc(q0(), 1, ADDR(data), 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, q0()->size);
    virtq_raw_avail_push(q0(), 0);
    submit_raw();
    return -1;
}

static int c_chain_loop(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    fill_header(VIRTIO_BLK_T_IN, 0);
    virtq_raw_desc(q0(), 0, ADDR(&hdr), sizeof(hdr), VIRTQ_DESC_F_NEXT, 1);
    virtq_raw_desc(q0(), 1, ADDR(data), 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);  // back to 0
    virtq_raw_avail_push(q0(), 0);
    submit_raw();
    return -1;
}

static int c_self_loop(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    fill_header(VIRTIO_BLK_T_IN, 0);
    virtq_raw_desc(q0(), 5, ADDR(&status_byte[0]), 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 5);
    virtq_raw_avail_push(q0(), 5);
    submit_raw();
    return -1;
}

// Every descriptor of a queue of 8 in one chain, the last pointing back to the first: the chain
// never ends, i.e. it is longer than the queue size.
static int c_chain_longer_than_queue(const char* name) {
    const char* err = negotiate_only(VIRTIO_BLK_GUEST_FEATURES);
    if (!err) err = virtio_queue_setup(&blk.v, 0, 8);
    if (err) return fail(name, "set-up: %s", err), -2;
    virtio_driver_ok(&blk.v);
    fill_header(VIRTIO_BLK_T_IN, 0);
    virtq_raw_desc(q0(), 0, ADDR(&hdr), sizeof(hdr), VIRTQ_DESC_F_NEXT, 1);
    for (uint16_t i = 1; i < 8; i++) {
        virtq_raw_desc(q0(), i, ADDR(data) + 64 * i, 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, (uint16_t)((i + 1) % 8));
    }
    virtq_raw_avail_push(q0(), 0);
    submit_raw();
    return -1;
}

static int bad_data_buffer(const char* name, uint64_t addr, uint32_t len) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    struct virtio_buf b[3];
    good_request_bufs(b);
    b[1].addr = addr;
    b[1].len = len;
    raw_chain(b, 3);
    virtq_raw_avail_push(q0(), 0);
    submit_raw();
    return -1;
}

static int c_buffer_outside_ram(const char* name) { return bad_data_buffer(name, ram_end, 512); }
static int c_buffer_high(const char* name) { return bad_data_buffer(name, OUT_OF_RAM_LOW, 512); }
static int c_buffer_straddles_ram_end(const char* name) { return bad_data_buffer(name, ram_end - 256, 512); }
static int c_buffer_in_mmio(const char* name) { return bad_data_buffer(name, entry.base, 512); }
static int c_addr_len_wraps(const char* name) { return bad_data_buffer(name, 0xfffffffffffffe00ull, 0x400); }

static int c_status_outside_ram(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    struct virtio_buf b[3];
    good_request_bufs(b);
    b[2].addr = ram_end;
    raw_chain(b, 3);
    virtq_raw_avail_push(q0(), 0);
    submit_raw();
    return -1;
}

static int c_header_outside_ram(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    struct virtio_buf b[3];
    good_request_bufs(b);
    b[0].addr = ram_end - 8;  // straddles the end
    raw_chain(b, 3);
    virtq_raw_avail_push(q0(), 0);
    submit_raw();
    return -1;
}

// 129 descriptors of 32 MiB each (the same RAM, overlapping): more than 4 GiB in one chain.
static int c_chain_over_4gib(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    if (ram_end < 48ull << 20) return fail(name, "needs at least 48 MiB of RAM (have 0x%lx)", ram_end), -2;
    fill_header(VIRTIO_BLK_T_IN, 0);
    virtq_raw_desc(q0(), 0, ADDR(&hdr), sizeof(hdr), VIRTQ_DESC_F_NEXT, 1);
    for (uint16_t i = 1; i <= 129; i++) {
        virtq_raw_desc(q0(), i, 16ull << 20, 32u << 20, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, (uint16_t)(i + 1));
    }
    virtq_raw_desc(q0(), 130, ADDR(&status_byte[0]), 1, VIRTQ_DESC_F_WRITE, 0);
    virtq_raw_avail_push(q0(), 0);
    submit_raw();
    return -1;
}

// An indirect descriptor (chain: the header direct, then INDIRECT) with the given table.
static int indirect_case(const char* name, uint64_t features, uint64_t table_addr, uint32_t table_len,
                         uint16_t extra_flags) {
    if (setup(name, features)) return -2;
    fill_header(VIRTIO_BLK_T_IN, 0);
    virtq_raw_desc(q0(), 0, ADDR(&hdr), sizeof(hdr), VIRTQ_DESC_F_NEXT, 1);
    virtq_raw_desc(q0(), 1, table_addr, table_len, (uint16_t)(VIRTQ_DESC_F_INDIRECT | extra_flags),
                   extra_flags & VIRTQ_DESC_F_NEXT ? 2 : 0);
    virtq_raw_desc(q0(), 2, ADDR(&status_byte[0]), 1, VIRTQ_DESC_F_WRITE, 0);
    virtq_raw_avail_push(q0(), 0);
    submit_raw();
    return -1;
}

static void good_table(void) {
    table[0] = (struct virtq_desc){ADDR(data), 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1};
    table[1] = (struct virtq_desc){ADDR(&status_byte[0]), 1, VIRTQ_DESC_F_WRITE, 0};
}

static int c_indirect_bad_len(const char* name) {
    good_table();
    return indirect_case(name, VIRTIO_BLK_GUEST_FEATURES, ADDR(table), 24, 0);
}
static int c_indirect_zero_len(const char* name) {
    good_table();
    return indirect_case(name, VIRTIO_BLK_GUEST_FEATURES, ADDR(table), 0, 0);
}
static int c_indirect_nested(const char* name) {
    table2[0] = (struct virtq_desc){ADDR(&status_byte[0]), 1, VIRTQ_DESC_F_WRITE, 0};
    table[0] = (struct virtq_desc){ADDR(data), 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1};
    table[1] = (struct virtq_desc){ADDR(table2), 16, VIRTQ_DESC_F_INDIRECT, 0};
    return indirect_case(name, VIRTIO_BLK_GUEST_FEATURES, ADDR(table), 32, 0);
}
static int c_indirect_outside_ram(const char* name) {
    return indirect_case(name, VIRTIO_BLK_GUEST_FEATURES, ram_end - 16, 32, 0);
}
static int c_indirect_with_next(const char* name) {
    good_table();
    return indirect_case(name, VIRTIO_BLK_GUEST_FEATURES, ADDR(table), 32, VIRTQ_DESC_F_NEXT);
}
static int c_indirect_next_out_of_range(const char* name) {
    good_table();
    table[0].next = 2;  // a table of 2 entries
    return indirect_case(name, VIRTIO_BLK_GUEST_FEATURES, ADDR(table), 32, 0);
}
static int c_indirect_loop(const char* name) {
    good_table();
    table[1] = (struct virtq_desc){ADDR(&status_byte[0]), 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0};
    return indirect_case(name, VIRTIO_BLK_GUEST_FEATURES, ADDR(table), 32, 0);
}
static int c_indirect_buffer_outside_ram(const char* name) {
    good_table();
    table[0].addr = ram_end;
    return indirect_case(name, VIRTIO_BLK_GUEST_FEATURES, ADDR(table), 32, 0);
}
static int c_indirect_not_negotiated(const char* name) {
    good_table();
    return indirect_case(name, VIRTIO_BLK_GUEST_FEATURES & ~VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC), ADDR(table), 32, 0);
}

static int c_avail_idx_jump(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    virtq_raw_set_avail_idx(q0(), (uint16_t)(q0()->size + 1));
    virtq_notify(&blk.v, q0());
    return -1;
}

static int c_avail_idx_jump_far(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    virtq_raw_set_avail_idx(q0(), 0x8000);
    virtq_notify(&blk.v, q0());
    return -1;
}

static int c_writable_before_readable(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    fill_header(VIRTIO_BLK_T_IN, 0);
    const struct virtio_buf b[3] = {
        {ADDR(data), 512, 1},  // writable first
        {ADDR(&hdr), sizeof(hdr), 0},
        {ADDR(&status_byte[0]), 1, 1},
    };
    raw_chain(b, 3);
    virtq_raw_avail_push(q0(), 0);
    submit_raw();
    return -1;
}

static int c_no_status_byte(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    fill_header(VIRTIO_BLK_T_OUT, 0);
    const struct virtio_buf b[2] = {{ADDR(&hdr), sizeof(hdr), 0}, {ADDR(data), 512, 0}};
    raw_chain(b, 2);
    virtq_raw_avail_push(q0(), 0);
    submit_raw();
    return -1;
}

static int c_zero_len_status(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    fill_header(VIRTIO_BLK_T_FLUSH, 0);
    const struct virtio_buf b[2] = {{ADDR(&hdr), sizeof(hdr), 0}, {ADDR(&status_byte[0]), 0, 1}};
    raw_chain(b, 2);
    virtq_raw_avail_push(q0(), 0);
    submit_raw();
    return -1;
}

// A good request and a malformed one made available together.
static int c_good_then_bad(const char* name) {
    if (setup(name, VIRTIO_BLK_GUEST_FEATURES)) return -2;
    struct virtio_buf b[3];
    good_request_bufs(b);
    raw_chain(b, 3);
    virtq_raw_avail_push(q0(), 0);
    virtq_raw_avail_push(q0(), q0()->size);  // bad head
    submit_raw();
    return 0;
}

// ---- queue set-up cases: the error shows at DRIVER_OK ----

static int queue_case(const char* name, uint16_t num, uint64_t desc, uint64_t avail, uint64_t used) {
    const char* err = negotiate_only(VIRTIO_BLK_GUEST_FEATURES);
    if (err) return fail(name, "set-up: %s", err), -2;
    const uint32_t ready = virtio_queue_setup_raw(&blk.v, 0, num, desc, avail, used);
    if (ready != 1) return fail(name, "QueueReady reads %u after writing 1", ready), -2;
    virtio_driver_ok(&blk.v);
    q0()->size = 0;  // nothing to poll: expect_needs_reset watches Status
    return -1;
}

static struct virtq_pages* pages(void) { return virtio_queue_pages(&blk.v, 0); }

static int c_qsize_not_pow2(const char* name) {
    return queue_case(name, 3, ADDR(pages()->desc), ADDR(pages()->avail), ADDR(pages()->used));
}
static int c_qsize_zero(const char* name) {
    return queue_case(name, 0, ADDR(pages()->desc), ADDR(pages()->avail), ADDR(pages()->used));
}
static int c_qsize_above_max(const char* name) {
    return queue_case(name, 512, ADDR(pages()->desc), ADDR(pages()->avail), ADDR(pages()->used));
}
static int c_desc_ring_outside_ram(const char* name) {
    return queue_case(name, 256, ram_end, ADDR(pages()->avail), ADDR(pages()->used));
}
static int c_avail_ring_outside_ram(const char* name) {
    return queue_case(name, 256, ADDR(pages()->desc), OUT_OF_RAM_LOW, ADDR(pages()->used));
}
static int c_used_ring_straddles_ram_end(const char* name) {
    return queue_case(name, 256, ADDR(pages()->desc), ADDR(pages()->avail), ram_end - 64);
}
static int c_desc_ring_misaligned(const char* name) {
    return queue_case(name, 256, ADDR(pages()->desc) + 8, ADDR(pages()->avail), ADDR(pages()->used));
}
static int c_driver_ok_without_queue(const char* name) {
    const char* err = negotiate_only(VIRTIO_BLK_GUEST_FEATURES);
    if (err) return fail(name, "set-up: %s", err), -2;
    virtio_driver_ok(&blk.v);
    q0()->size = 0;
    return -1;
}

struct bad_case {
    const char* name;
    case_fn fn;
};

static const struct bad_case bad_cases[] = {
    {"head-out-of-range", c_head_out_of_range},
    {"head-0xffff", c_head_0xffff},
    {"next-out-of-range", c_next_out_of_range},
    {"chain-loop", c_chain_loop},
    {"self-loop", c_self_loop},
    {"chain-longer-than-queue", c_chain_longer_than_queue},
    {"buffer-outside-ram", c_buffer_outside_ram},
    {"buffer-below-mmio-hole", c_buffer_high},
    {"buffer-straddles-ram-end", c_buffer_straddles_ram_end},
    {"buffer-in-mmio-window", c_buffer_in_mmio},
    {"addr-len-wraps", c_addr_len_wraps},
    {"status-outside-ram", c_status_outside_ram},
    {"header-straddles-ram-end", c_header_outside_ram},
    {"chain-over-4gib", c_chain_over_4gib},
    {"indirect-bad-len", c_indirect_bad_len},
    {"indirect-zero-len", c_indirect_zero_len},
    {"indirect-nested", c_indirect_nested},
    {"indirect-outside-ram", c_indirect_outside_ram},
    {"indirect-with-next", c_indirect_with_next},
    {"indirect-next-out-of-range", c_indirect_next_out_of_range},
    {"indirect-loop", c_indirect_loop},
    {"indirect-buffer-outside-ram", c_indirect_buffer_outside_ram},
    {"indirect-not-negotiated", c_indirect_not_negotiated},
    {"avail-idx-jump", c_avail_idx_jump},
    {"avail-idx-jump-far", c_avail_idx_jump_far},
    {"writable-before-readable", c_writable_before_readable},
    {"no-status-byte", c_no_status_byte},
    {"zero-len-status", c_zero_len_status},
    {"good-then-bad-in-one-batch", c_good_then_bad},
    {"queue-size-not-power-of-two", c_qsize_not_pow2},
    {"queue-size-zero", c_qsize_zero},
    {"queue-size-above-max", c_qsize_above_max},
    {"desc-table-outside-ram", c_desc_ring_outside_ram},
    {"avail-ring-outside-ram", c_avail_ring_outside_ram},
    {"used-ring-straddles-ram-end", c_used_ring_straddles_ram_end},
    {"desc-table-misaligned", c_desc_ring_misaligned},
    {"driver-ok-without-queue", c_driver_ok_without_queue},
};

static int selected(const char* name) {
    return !only || (strlen(name) == only_len && strncmp(name, only, only_len) == 0);
}

static void run_bad_case(const struct bad_case* c, unsigned n) {
    if (!selected(c->name)) return;
    cases++;
    const int failures_before = failures;
    const int good_head = c->fn(c->name);
    if (good_head != -2 && expect_needs_reset(c->name, good_head) == 0) {
        // While DEVICE_NEEDS_RESET is set the device must ignore the queue (no used element for
        // a notification); checked on one case, the wait costs time.
        if (n == 0 && q0()->size != 0) {
            const uint16_t used_before = q0()->used->idx;
            virtq_notify(&blk.v, q0());
            const uint64_t t0 = rdtsc();
            for (unsigned i = 0; i < 20000 || rdtsc() - t0 < (1ull << 29); i++) cpu_pause();
            if (q0()->used->idx != used_before) fail(c->name, "used ring changed while the device needs a reset");
            else printf("malicious: %s: a notification while DEVICE_NEEDS_RESET is ignored ok\n", c->name);
        }
    }
    if (recover(c->name, n) == 0 && failures == failures_before) {
        printf("malicious: %s -> needs reset ok\n", c->name);
    } else if (failures == failures_before) {
        failures++;
    }
}

// Well-formed chains with odd contents: an error status, no reset.
static void status_case(const char* name, int got, int want) {
    if (!selected(name)) return;
    cases++;
    if (got == want) {
        if (virtio_status(&blk.v) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
            fail(name, "%s as expected, but DEVICE_NEEDS_RESET is set", blk_err_name(got));
            return;
        }
        printf("malicious: %s -> %s ok\n", name, blk_err_name(got));
    } else {
        fail(name, "got %s (%d), expected %s", blk_err_name(got), got, blk_err_name(want));
    }
}

static void run_status_cases(void) {
    const char* err = open_device(VIRTIO_BLK_GUEST_FEATURES);
    if (err) {
        fail("status-cases", "set-up: %s", err);
        return;
    }
    // A header shorter than 16 bytes.
    {
        fill_header(VIRTIO_BLK_T_IN, 0);
        const struct virtio_buf b[2] = {{ADDR(&hdr), 8, 0}, {ADDR(&status_byte[0]), 1, 1}};
        struct virtq* q = q0();
        const int head = virtq_add(q, b, 2);
        virtq_publish(q);
        virtq_kick(&blk.v, q);
        struct virtq_used_elem e;
        int r = BLK_ERR_TIMEOUT;
        const enum virtq_wait_result w = virtq_wait_used(&blk.v, q, &e);
        if (w == VIRTQ_USED && e.id == (uint32_t)head && virtq_free_chain(q, e.id) == 0) r = status_byte[0];
        else if (w == VIRTQ_NEEDS_RESET) r = BLK_ERR_NEEDS_RESET;
        status_case("short-header", r, VIRTIO_BLK_S_IOERR);
    }
    // IN whose data buffer is device-readable (the device sees no data to fill: 0 bytes).
    fill_header(VIRTIO_BLK_T_IN, 0);
    {
        const struct virtio_buf b[3] = {{ADDR(&hdr), sizeof(hdr), 0}, {ADDR(data), 512, 0}, {ADDR(&status_byte[0]), 1, 1}};
        struct virtq* q = q0();
        const int head = virtq_add(q, b, 3);
        virtq_publish(q);
        virtq_kick(&blk.v, q);
        struct virtq_used_elem e;
        int r = BLK_ERR_TIMEOUT;
        const enum virtq_wait_result w = virtq_wait_used(&blk.v, q, &e);
        if (w == VIRTQ_USED && e.id == (uint32_t)head && virtq_free_chain(q, e.id) == 0) r = status_byte[0];
        else if (w == VIRTQ_NEEDS_RESET) r = BLK_ERR_NEEDS_RESET;
        // 0 data bytes requested: an empty read, OK.
        status_case("in-with-readable-data", r, VIRTIO_BLK_S_OK);
    }
    status_case("get-id-without-buffer", blk_request(&blk, VIRTIO_BLK_T_GET_ID, 0, NULL, 0, 1, NULL),
                VIRTIO_BLK_S_OK);
    status_case("discard-short-segment", blk_request(&blk, VIRTIO_BLK_T_DISCARD, 0, data, 8, 0, NULL),
                VIRTIO_BLK_S_IOERR);
    status_case("out-not-sector-multiple", blk_request(&blk, VIRTIO_BLK_T_OUT, 0, data, 100, 0, NULL),
                VIRTIO_BLK_S_IOERR);
}

int guest_main(void) {
    const char* cmdline = boot_cmdline();
    only = cmdline_find(cmdline, "malicious.only", &only_len);
    struct virtio_mmio_entry entries[VIRTIO_MAX_DEVICES];
    const int found = virtio_mmio_parse_cmdline(cmdline, entries, VIRTIO_MAX_DEVICES);
    int have = 0;
    for (int i = 0; i < found && i < VIRTIO_MAX_DEVICES && !have; i++) {
        struct virtio_dev d;
        if (virtio_probe(&d, &entries[i]) == NULL && d.device_id == VIRTIO_ID_BLOCK) {
            entry = entries[i];
            have = 1;
        }
    }
    if (!have) {
        printf("malicious: FAIL: no virtio-blk device on the command line: %s\n", cmdline);
        return GUEST_FAIL;
    }
    ram_end = find_ram_end();
    if (ram_end == 0 || ram_end > OUT_OF_RAM_LOW) {
        printf("malicious: FAIL: RAM around 2 MiB ends at 0x%lx; run with --mem 64 (up to 2 GiB)\n", ram_end);
        return GUEST_FAIL;
    }
    const char* err = open_device(VIRTIO_BLK_GUEST_FEATURES);
    if (err) {
        printf("malicious: FAIL: set-up: %s\n", err);
        return GUEST_FAIL;
    }
    blk_get_id(&blk);
    printf("malicious: device at 0x%lx gsi %u, id %s, capacity %lu sectors, RAM ends at 0x%lx\n", entry.base,
           entry.gsi, blk.id, blk.capacity, ram_end);
    if (blk.ro || blk.capacity < 128) {
        printf("malicious: FAIL: needs a writable drive of at least 64 KiB\n");
        return GUEST_FAIL;
    }

    for (unsigned i = 0; i < ARRAY_SIZE(bad_cases); i++) run_bad_case(&bad_cases[i], i);
    run_status_cases();

    if (cases == 0) {
        printf("malicious: FAIL: no case selected\n");
        return GUEST_FAIL;
    }
    if (failures) {
        printf("malicious: FAIL: %d of %d cases failed\n", failures, cases);
        return GUEST_FAIL;
    }
    printf("malicious: PASS (%d cases; the VMM is alive)\n", cases);
    return GUEST_PASS;
}
