// Test guest "net_malicious": hands embervm's virtio-net device malformed transmit and receive
// chains, one per freshly reset device, and checks each ends in DEVICE_NEEDS_RESET with a
// configuration-change interrupt while the VMM keeps serving the guest; after every case the
// device is reset and must work again (an ARP exchange with the host). Reuses the protocol code
// of net.c (same command line: net.guest_ip=, net.host_ip=, net.udp_port=).
//
// Cases: TX: a device-writable descriptor, a chain shorter than the 12-byte header, a buffer
// outside guest memory, a descriptor loop, avail.idx more than the queue size ahead, a head index
// beyond the queue, an indirect table outside memory, a loop inside an indirect table; RX: a
// device-readable buffer, a buffer outside memory, a descriptor loop, avail.idx jump, with
// MRG_RXBUF a buffer shorter than the header. RX cases send a well-formed ARP request so that
// the host's reply makes the device use the bad receive chain. `malicious.only=<case>` runs one.
//
// Console: "malicious: <case> -> needs reset ok", "malicious: PASS (N cases)" or
// "malicious: FAIL: ...".
// net.c is included for its protocol helpers; not all of them are used here.
#pragma GCC diagnostic ignored "-Wunused-function"
#define NET_GUEST_NO_MAIN
#include "net.c"

#define OUTSIDE 0x4000000000ull  // 256 GiB: not guest memory

static int failures;

static int mfail(const char* name, const char* what) {
    printf("malicious: FAIL: %s: %s (status 0x%x)\n", name, what, virtio_status(&dev));
    failures++;
    return -1;
}

// Negotiates MAC, STATUS and `extra` (which the case needs: all of it must be offered).
static const char* setup(uint64_t extra) {
    const char* err = virtio_negotiate(&dev, VIRTIO_BIT(VIRTIO_NET_F_MAC) | VIRTIO_BIT(VIRTIO_NET_F_STATUS) | extra);
    if (err) return err;
    if ((dev.features & extra) != extra) return "a feature the case needs is not offered";
    mrg = (dev.features & VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF)) != 0;
    if ((err = virtio_queue_setup(&dev, RXQ, 64)) || (err = virtio_queue_setup(&dev, TXQ, 64))) return err;
    virtio_driver_ok(&dev);
    return NULL;
}

static void post_all_rx(void) {
    for (unsigned i = 0; i < 32; i++) post_rx(i);
    virtq_publish(&dev.vq[RXQ]);
    virtq_notify(&dev, &dev.vq[RXQ]);
}

// A well-formed ARP request to the host through the normal TX path (the host answers: the
// device then looks at the receive queue).
static void send_arp_raw_tx(uint16_t desc) {
    struct virtq* q = &dev.vq[TXQ];
    const size_t len = build_arp(tx_bufs[1] + HDR, 1, (const uint8_t[6]){0}, host_ip);
    memset(tx_bufs[1], 0, HDR);
    virtq_raw_desc(q, desc, (uint64_t)(uintptr_t)tx_bufs[1], (uint32_t)(HDR + len), 0, 0);
    virtq_raw_avail_push(q, desc);
    virtq_publish(q);
    virtq_notify(&dev, q);
}

static int expect_needs_reset(const char* name) {
    for (uint64_t t0 = rdtsc(); !(virtio_status(&dev) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);) {
        if (rdtsc() - t0 > VIRTIO_WAIT_MIN_TSC_CYCLES) return mfail(name, "no DEVICE_NEEDS_RESET");
        cpu_pause();
    }
    if (!(virtio_wait_isr(&dev, VIRTIO_MMIO_INT_CONFIG) & VIRTIO_MMIO_INT_CONFIG)) {
        return mfail(name, "DEVICE_NEEDS_RESET without a configuration-change interrupt");
    }
    return 0;
}

static int recover(const char* name) {
    if (virtio_reset(&dev) != 0) return mfail(name, "Status does not read 0 after writing 0");
    const char* err = setup(0);
    if (err) return mfail(name, err);
    post_all_rx();
    if (send_frame(build_arp(tx_bufs[0] + HDR, 1, (const uint8_t[6]){0}, host_ip)) != 0) {
        return mfail(name, "ARP request after the reset not sent");
    }
    if (recv_until(want_arp_reply, NULL) != 0) return mfail(name, "no ARP reply after the reset");
    return 0;
}

struct mcase {
    const char* name;
    void (*run)(void);
    uint64_t features;  // besides MAC and STATUS
};

static void tx_writable(void) {
    struct virtq* q = &dev.vq[TXQ];
    virtq_raw_desc(q, 0, (uint64_t)(uintptr_t)tx_bufs[0], HDR + 60, VIRTQ_DESC_F_NEXT, 1);
    virtq_raw_desc(q, 1, (uint64_t)(uintptr_t)tx_bufs[2], 64, VIRTQ_DESC_F_WRITE, 0);
    virtq_raw_avail_push(q, 0);
    virtq_publish(q);
    virtq_notify(&dev, q);
}
static void tx_short(void) {
    struct virtq* q = &dev.vq[TXQ];
    virtq_raw_desc(q, 0, (uint64_t)(uintptr_t)tx_bufs[0], HDR - 4, 0, 0);
    virtq_raw_avail_push(q, 0);
    virtq_publish(q);
    virtq_notify(&dev, q);
}
static void tx_outside(void) {
    struct virtq* q = &dev.vq[TXQ];
    virtq_raw_desc(q, 0, OUTSIDE, HDR + 60, 0, 0);
    virtq_raw_avail_push(q, 0);
    virtq_publish(q);
    virtq_notify(&dev, q);
}
static void tx_loop(void) {
    struct virtq* q = &dev.vq[TXQ];
    virtq_raw_desc(q, 0, (uint64_t)(uintptr_t)tx_bufs[0], HDR, VIRTQ_DESC_F_NEXT, 1);
    virtq_raw_desc(q, 1, (uint64_t)(uintptr_t)tx_bufs[0] + HDR, 60, VIRTQ_DESC_F_NEXT, 0);
    virtq_raw_avail_push(q, 0);
    virtq_publish(q);
    virtq_notify(&dev, q);
}
static void tx_avail_jump(void) {
    struct virtq* q = &dev.vq[TXQ];
    virtq_raw_set_avail_idx(q, (uint16_t)(q->size + 5));
    virtq_notify(&dev, q);
}
static void tx_index_out_of_range(void) {
    struct virtq* q = &dev.vq[TXQ];
    virtq_raw_avail_push(q, (uint16_t)(q->size + 3));
    virtq_publish(q);
    virtq_notify(&dev, q);
}
static void rx_readable(void) {
    struct virtq* q = &dev.vq[RXQ];
    virtq_raw_desc(q, 0, (uint64_t)(uintptr_t)rx_bufs[0], 1526, 0, 0);
    virtq_raw_avail_push(q, 0);
    virtq_publish(q);
    virtq_notify(&dev, q);
    send_arp_raw_tx(0);
}
static void rx_outside(void) {
    struct virtq* q = &dev.vq[RXQ];
    virtq_raw_desc(q, 0, OUTSIDE, 1526, VIRTQ_DESC_F_WRITE, 0);
    virtq_raw_avail_push(q, 0);
    virtq_publish(q);
    virtq_notify(&dev, q);
    send_arp_raw_tx(0);
}

static void rx_loop(void) {
    struct virtq* q = &dev.vq[RXQ];
    virtq_raw_desc(q, 0, (uint64_t)(uintptr_t)rx_bufs[0], 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    virtq_raw_desc(q, 1, (uint64_t)(uintptr_t)rx_bufs[1], 64, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
    virtq_raw_avail_push(q, 0);
    virtq_publish(q);
    virtq_notify(&dev, q);
    send_arp_raw_tx(0);
}
static void rx_avail_jump(void) {
    struct virtq* q = &dev.vq[RXQ];
    virtq_raw_set_avail_idx(q, (uint16_t)(q->size + 1));
    virtq_notify(&dev, q);
    send_arp_raw_tx(0);
}
// With MRG_RXBUF the header must fit the first buffer of a frame (5.1.6.3.1: each buffer at
// least the size of the header).
static void rx_mrg_shorter_than_header(void) {
    struct virtq* q = &dev.vq[RXQ];
    virtq_raw_desc(q, 0, (uint64_t)(uintptr_t)rx_bufs[0], HDR - 2, VIRTQ_DESC_F_WRITE, 0);
    virtq_raw_avail_push(q, 0);
    virtq_publish(q);
    virtq_notify(&dev, q);
    send_arp_raw_tx(0);
}
static struct virtq_desc bad_table[4] __attribute__((aligned(16)));
static void tx_indirect_table_outside_memory(void) {
    struct virtq* q = &dev.vq[TXQ];
    virtq_raw_desc(q, 0, OUTSIDE, 2 * sizeof(struct virtq_desc), VIRTQ_DESC_F_INDIRECT, 0);
    virtq_raw_avail_push(q, 0);
    virtq_publish(q);
    virtq_notify(&dev, q);
}
static void tx_indirect_loop(void) {
    struct virtq* q = &dev.vq[TXQ];
    bad_table[0] = (struct virtq_desc){(uint64_t)(uintptr_t)tx_bufs[0], HDR, VIRTQ_DESC_F_NEXT, 1};
    bad_table[1] = (struct virtq_desc){(uint64_t)(uintptr_t)tx_bufs[0] + HDR, 60, VIRTQ_DESC_F_NEXT, 0};
    virtq_raw_desc(q, 0, (uint64_t)(uintptr_t)bad_table, 2 * sizeof(struct virtq_desc), VIRTQ_DESC_F_INDIRECT, 0);
    virtq_raw_avail_push(q, 0);
    virtq_publish(q);
    virtq_notify(&dev, q);
}

static const struct mcase cases[] = {
    {"tx-device-writable-descriptor", tx_writable, 0},
    {"tx-shorter-than-header", tx_short, 0},
    {"tx-buffer-outside-memory", tx_outside, 0},
    {"tx-descriptor-loop", tx_loop, 0},
    {"tx-avail-idx-jump", tx_avail_jump, 0},
    {"tx-head-index-out-of-range", tx_index_out_of_range, 0},
    {"rx-device-readable-buffer", rx_readable, 0},
    {"rx-buffer-outside-memory", rx_outside, 0},
    {"rx-descriptor-loop", rx_loop, 0},
    {"rx-avail-idx-jump", rx_avail_jump, 0},
    {"rx-mrg-buffer-shorter-than-header", rx_mrg_shorter_than_header, VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF)},
    {"tx-indirect-table-outside-memory", tx_indirect_table_outside_memory, VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC)},
    {"tx-indirect-descriptor-loop", tx_indirect_loop, VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC)},
};

int guest_main(void) {
    const char* cmdline = boot_cmdline();
    size_t n;
    const char* v;
    if (!(v = cmdline_find(cmdline, "net.guest_ip", &n)) || parse_ip(v, n, &my_ip)) FAIL("net.guest_ip missing or bad\n");
    if (!(v = cmdline_find(cmdline, "net.host_ip", &n)) || parse_ip(v, n, &host_ip)) FAIL("net.host_ip missing or bad\n");
    if (virtio_net_find(&dev, cmdline) != 0) FAIL("no virtio-net device on the command line\n");
    rx_buf_len = HDR + 1514;
    for (int i = 0; i < 6; i++) my_mac[i] = 0;
    const char* only = cmdline_find(cmdline, "malicious.only", &n);
    unsigned ran = 0;
    for (unsigned c = 0; c < ARRAY_SIZE(cases); c++) {
        if (only && (strlen(cases[c].name) != n || strncmp(only, cases[c].name, n) != 0)) continue;
        ran++;
        const char* err = virtio_reset(&dev) != 0 ? "reset failed" : setup(cases[c].features);
        if (err) FAIL("%s: set-up failed: %s\n", cases[c].name, err);
        for (int i = 0; i < 6; i++) my_mac[i] = virtio_config_read8(&dev, (uint32_t)i);
        cases[c].run();
        if (expect_needs_reset(cases[c].name) != 0) continue;
        // The VMM still serves the guest: the serial port works (this line) and the device recovers.
        if (recover(cases[c].name) != 0) continue;
        printf("malicious: %s -> needs reset ok, recovered after reset\n", cases[c].name);
    }
    if (failures) {
        printf("malicious: FAIL: %d case(s)\n", failures);
        return GUEST_FAIL;
    }
    if (ran == 0) FAIL("no case named by malicious.only=\n");
    printf("malicious: PASS (%u cases)\n", ran);
    return GUEST_PASS;
}
