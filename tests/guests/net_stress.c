// Test guest "net", net.mode=stress: a UDP echo stream through the virtio-net device under
// back-pressure, made to catch a lost completion, kick or interrupt in the queue and
// notification code (split rings, ioeventfd kicks, irqfd interrupts).
//
// The guest sends net.stress_frames sequence-numbered UDP datagrams to the host's echo server
// and verifies every echo:
//   TX    bursts of random size (sometimes until the transmit queue is full); frames of random
//         size from 60 bytes to MTU + 14; chains of 1 to 4 descriptors, or an indirect table
//   RX    used buffers are held and posted again late, in random batches; now and then the guest
//         holds all of them until the device has used up the receive queue, and waits a little
//         more: the device must leave frames in the TAP and resume when buffers come back (RX
//         back-pressure). With MRG_RXBUF the buffers have random sizes (a jumbo frame spans many).
//   wait  mostly asleep until the device interrupts (lib/virtio_irq.h: a lost interrupt is
//         reported), sometimes polling with interrupts suppressed; random pauses.
// Every echo must come once, with the length sent, its pattern (from the seed and its sequence
// number) intact and its headers right (Ethernet addresses, IPv4 header checksum and addresses,
// UDP ports and length). The echo path keeps order (one TAP queue, one socket, one server), so
// an echo overtaken by a later one is counted as dropped, and as late if it turns up after all.
// The guest fails on corruption, a duplicate, an echo of a frame never sent, a lost interrupt,
// and a stall: no used element on either queue for net.stall_ms while frames are outstanding
// (also at the end: an echo that never comes is a stall, not a drop). Drops seen on the way are
// reported (drops=N); run-net-test sizes the host's buffers so that nothing is dropped there
// and fails if drops are not accounted for by a host counter.
//
// Knobs: net.stress_frames=N (default 6000), net.seed=N (default 1), net.qsize=N (both queues;
// default the device's maximum, at most 256), net.no_event_idx, net.no_indirect, net.no_mrg,
// net.stall_ms=N (default 8000), net.lost_irq_ms=N (default 2000), net.stress_window=N (echoes
// outstanding at most, default 192; the stream goes through phases of 1, 2, 4, 16, 64 or all of
// them), and, to show that the checks fire, net.stress_inject=mask_irq|no_kick|hang from frame
// net.stress_inject_at (default: half way):
// the device's I/O APIC pin masked (interrupts lost), transmit kicks left out (completions never
// come), or the guest halting for good with interrupts off (only the runner's timeout ends it).
//
// Console: "stress: ..." lines, then "stress: done frames=N bytes=B drops=D irqs=I" (B: frame
// bytes echoed; I: device interrupts taken).
#include "net_stress.h"

#include "guest.h"
#include "io.h"
#include "irq.h"
#include "str.h"
#include "stress.h"
#include "virtio.h"
#include "virtio_irq.h"
#include "virtio_net.h"

#define HDR VIRTIO_NET_HDR_SIZE
#define RXQ VIRTIO_NET_RXQ
#define TXQ VIRTIO_NET_TXQ
#define QMASK ((1u << RXQ) | (1u << TXQ))
#define ETH_HDR 14
#define IP_HDR 20
#define UDP_HDR 8
#define HEADERS (ETH_HDR + IP_HDR + UDP_HDR)
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define MIN_FRAME 60
#define SLOT_BYTES 9216  // vnet header + the largest frame, rounded up
#define MAX_PIECES 4     // descriptors of one chain, direct or in an indirect table
#define SEQ_RING 4096    // sequence numbers tracked: far more than can be outstanding
#define SPORT_BASE 49152
#define TICK_US 10000
#define PAYLOAD_MAGIC 0x5a5a

_Static_assert(SLOT_BYTES >= HDR + ETH_HDR + NET_STRESS_MAX_MTU, "a slot holds the largest frame");

enum inject { INJECT_NONE, INJECT_MASK_IRQ, INJECT_NO_KICK, INJECT_HANG };

static struct {
    uint64_t frames, seed, stall_ms, lost_ms, window, inject_at, qsize;
    enum inject inject;
} opt;

static const struct net_stress_link* link;
static struct virtio_dev* dev;
static struct virtio_irq_waiter waiter;
static int mrg, indirect;
static uint32_t mrg_min, mrg_max;
static uint8_t host_mac[6];
static int host_mac_known;

static uint8_t tx_pool[VIRTQ_MAX_SIZE][SLOT_BYTES] __attribute__((section(".noinit"), aligned(64)));
static uint8_t rx_pool[VIRTQ_MAX_SIZE][SLOT_BYTES] __attribute__((section(".noinit"), aligned(64)));
static struct virtq_desc tx_tables[VIRTQ_MAX_SIZE][MAX_PIECES] __attribute__((aligned(16)));
static struct virtq_desc rx_tables[VIRTQ_MAX_SIZE][MAX_PIECES] __attribute__((aligned(16)));
static uint8_t frame[SLOT_BYTES] __attribute__((aligned(64)));  // a received frame, assembled

// Transmit slots (one buffer each) and receive slots; head index -> slot while in flight.
static uint16_t tx_free[VIRTQ_MAX_SIZE], tx_nfree, tx_head_slot[VIRTQ_MAX_SIZE];
static uint16_t rx_head_slot[VIRTQ_MAX_SIZE], rx_held[VIRTQ_MAX_SIZE], rx_nheld;
static uint32_t rx_cap[VIRTQ_MAX_SIZE];
static unsigned rx_posted, tx_out;
static size_t asm_len;     // bytes of the frame being assembled
static unsigned asm_need;  // buffers it still needs (MRG_RXBUF)

// Sequence numbers: state and length of the last SEQ_RING frames sent.
enum { SEQ_DONE, SEQ_OUT, SEQ_DROPPED };
static uint8_t seq_state[SEQ_RING];
static uint16_t seq_len[SEQ_RING];
static uint64_t sent, received, dropped, late, oldest, echoed_bytes;
static int no_kick;

static struct {
    uint64_t tx_full, rx_emptied, starves, pauses, polls, other_frames, arp_replies;
    unsigned max_buffers;
} stat;

#define FAIL(...)                             \
    do {                                      \
        printf("stress: FAIL: " __VA_ARGS__); \
        print_state();                        \
        return -1;                            \
    } while (0)

// ---- small helpers ----

typedef uint64_t u64_unaligned __attribute__((aligned(1), may_alias));

// memcpy a word at a time whatever the alignment (the library's falls back to bytes).
static void copy_bytes(uint8_t* d, const uint8_t* s, size_t n) {
    for (; n >= 8; n -= 8, d += 8, s += 8) *(u64_unaligned*)d = *(const u64_unaligned*)s;
    while (n--) *d++ = *s++;
}

static void spin_us(uint64_t us) {
    const uint64_t start = rdtsc(), cycles = us * waiter.tsc_per_ms / 1000;
    while (rdtsc() - start < cycles) cpu_pause();
}

static uint64_t inflight(void) { return sent - received - dropped; }

// The window changes in phases: a window of 1 - 4 makes nearly every echo wait for an interrupt,
// a full one keeps the queues busy.
static uint64_t window, window_until;
static void next_window_phase(void) {
    static const uint16_t choices[] = {1, 2, 4, 16, 64};
    const unsigned c = rand_below(ARRAY_SIZE(choices) + 2);
    window = c < ARRAY_SIZE(choices) && choices[c] < opt.window ? choices[c] : opt.window;
    window_until = sent + (window < 16 ? 10 + rand_below(60) : 20 + rand_below(1000));
}

static void print_state(void) {
    const struct virtq* rq = &dev->vq[RXQ];
    const struct virtq* tq = &dev->vq[TXQ];
    printf("stress: state: frames sent %lu, echoed %lu, in flight %lu, dropped %lu, late %lu, other frames %lu\n",
           sent, received, inflight(), dropped, late, stat.other_frames);
    printf("stress: state: tx chains at the device %u; rx buffers posted %u, held %u\n", tx_out, rx_posted, rx_nheld);
    printf("stress: state: rxq avail %u used %u (driver at %u), txq avail %u used %u (driver at %u)\n", rq->avail_idx,
           rq->used->idx, rq->last_used, tq->avail_idx, tq->used->idx, tq->last_used);
    printf("stress: state: status 0x%x, InterruptStatus 0x%x, device interrupts %lu, timer ticks %lu\n",
           virtio_status(dev), virtio_isr_read(dev), irq_count, irq_timer_count);
}

// ---- frames ----

static uint64_t pattern_word(uint64_t seq, uint64_t k) {
    uint64_t x = (seq + 1) * 0x9e3779b97f4a7c15ull ^ (k + 1) * 0xc2b2ae3d27d4eb4full ^ opt.seed;
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    return x ^ (x >> 29);
}

// Payload: be32 sequence number, be16 length, be16 PAYLOAD_MAGIC, then pattern words.
static void fill_payload(uint8_t* p, size_t n, uint64_t seq) {
    put32(p, (uint32_t)seq);
    put16(p + 4, (uint16_t)n);
    put16(p + 6, PAYLOAD_MAGIC);
    size_t off = 8;
    uint64_t k = 0;
    for (; off + 8 <= n; off += 8, k++) *(u64_unaligned*)(p + off) = pattern_word(seq, k);
    for (uint64_t w = pattern_word(seq, k); off < n; off++, w >>= 8) p[off] = (uint8_t)w;
}

// The offset of the first payload byte after the first 8 that differs from the pattern, or -1.
static long check_payload(const uint8_t* p, size_t n, uint64_t seq) {
    uint64_t k = 0;
    for (size_t off = 8; off < n; off += 8, k++) {
        uint64_t w = pattern_word(seq, k);
        const size_t m = n - off < 8 ? n - off : 8;
        if (m == 8 && *(const u64_unaligned*)(p + off) == w) continue;
        for (size_t i = 0; i < m; i++, w >>= 8) {
            if (p[off + i] != (uint8_t)w) return (long)(off + i);
        }
    }
    return -1;
}

static uint8_t* eth(uint8_t* b, const uint8_t* dst, uint16_t type) {
    memset(b, 0, HDR);  // vnet header: no offloads
    uint8_t* f = b + HDR;
    memcpy(f, dst, 6);
    memcpy(f + 6, link->mac, 6);
    put16(f + 12, type);
    return f + ETH_HDR;
}

// A datagram of `size` frame bytes for sequence number `seq` into slot buffer `b`.
static void build_echo_request(uint8_t* b, uint64_t seq, uint16_t size) {
    uint8_t* ip = eth(b, host_mac, ETH_P_IP);
    const uint16_t payload = (uint16_t)(size - HEADERS);
    ip[0] = 0x45;
    ip[1] = 0;
    put16(ip + 2, (uint16_t)(IP_HDR + UDP_HDR + payload));
    put16(ip + 4, (uint16_t)seq);
    put16(ip + 6, 0x4000);  // DF
    ip[8] = 64;
    ip[9] = 17;
    put16(ip + 10, 0);
    put32(ip + 12, link->my_ip);
    put32(ip + 16, link->host_ip);
    put16(ip + 10, inet_csum_fold(inet_csum_add(0, ip, IP_HDR)));
    uint8_t* udp = ip + IP_HDR;
    put16(udp, (uint16_t)(SPORT_BASE + (seq & 0x3fff)));
    put16(udp + 2, link->udp_port);
    put16(udp + 4, (uint16_t)(UDP_HDR + payload));
    put16(udp + 6, 0);  // no checksum (IPv4): the pattern check covers the payload
    fill_payload(udp + UDP_HDR, payload, seq);
}

static size_t build_arp(uint8_t* b, uint16_t op, const uint8_t* tha, uint32_t tpa) {
    memset(b, 0, HDR);
    return net_build_arp(b + HDR, link->mac, link->my_ip, op, tha, tpa);
}

static uint16_t pick_size(void) {
    const uint16_t max = link->max_frame;
    const unsigned r = rand_below(100);
    if (r < 15) return (uint16_t)(MIN_FRAME + rand_below(69));
    if (r < 30) return max;
    if (r < 40 && max >= 1514) return 1514;
    return (uint16_t)(MIN_FRAME + rand_below(max - MIN_FRAME + 1u));
}

// Adds slot buffer [0, len) as a chain of a random shape. Returns the head, or -1 (no room).
static int add_chain(struct virtq* q, uint8_t* buf, uint32_t len, struct virtq_desc* table, uint8_t write,
                     unsigned max_direct) {
    struct virtio_buf b[MAX_PIECES];
    const uint64_t addr = (uint64_t)(uintptr_t)buf;
    const unsigned shape = rand_below(indirect ? 4 : 3);
    unsigned n = 1;
    if (shape == 1 && len > HDR) {
        b[0] = (struct virtio_buf){addr, HDR, write};  // header apart, as Linux sends it
        b[1] = (struct virtio_buf){addr + HDR, len - HDR, write};
        return virtq_add(q, b, 2);
    }
    if (shape == 2) n = 2 + rand_below(max_direct - 1);
    if (shape == 3) n = 1 + rand_below(MAX_PIECES);
    if (n > len) n = len;
    stress_split(b, n, addr, len, write);
    if (shape == 3) return virtq_add_ex(q, NULL, 0, table, b, n);
    return virtq_add(q, b, n);
}

// ---- transmit ----

static int kick_tx(void) {
    if (no_kick) return 0;
    return virtq_kick(dev, &dev->vq[TXQ]);
}

// Queues the frame built in slot `slot`; returns 0, or -1 if the queue has no room (slot kept).
static int tx_queue(uint16_t slot, size_t frame_len) {
    const int head = add_chain(&dev->vq[TXQ], tx_pool[slot], (uint32_t)(HDR + frame_len), tx_tables[slot], 0,
                               MAX_PIECES);
    if (head < 0) return -1;
    tx_head_slot[head] = slot;
    tx_nfree--;
    tx_out++;
    return 0;
}

static int reap_tx(void) {
    struct virtq* q = &dev->vq[TXQ];
    struct virtq_used_elem e;
    int n = 0;
    while (virtq_pop_used(q, &e)) {
        if (e.id >= q->size || virtq_free_chain(q, e.id) != 0) FAIL("transmit: used id %u is not in flight\n", e.id);
        tx_free[tx_nfree++] = tx_head_slot[e.id];
        tx_out--;
        n++;
    }
    return n;
}

// One burst: returns how many frames went out.
static unsigned send_burst(void) {
    if (sent >= window_until) next_window_phase();
    uint64_t room = window > inflight() ? window - inflight() : 0;
    if (room > opt.frames - sent) room = opt.frames - sent;
    if (!room) return 0;
    const unsigned r = rand_below(100);
    uint64_t burst = r < 10 ? room : r < 55 ? 1 + rand_below(4) : 1 + rand_below(32);  // 10 %: until full
    if (burst > room) burst = room;
    const int publish_each = rand_chance(30);
    unsigned added = 0;
    for (; added < burst; added++) {
        if (!tx_nfree) {
            stat.tx_full++;
            break;
        }
        const uint16_t slot = tx_free[tx_nfree - 1];
        const uint16_t size = pick_size();
        build_echo_request(tx_pool[slot], sent, size);
        if (tx_queue(slot, size) != 0) {
            stat.tx_full++;
            break;
        }
        seq_state[sent % SEQ_RING] = SEQ_OUT;
        seq_len[sent % SEQ_RING] = size;
        sent++;
        if (publish_each) {
            virtq_publish(&dev->vq[TXQ]);
            if (rand_chance(50)) kick_tx();
        }
    }
    if (added) {
        virtq_publish(&dev->vq[TXQ]);
        kick_tx();
    }
    return added;
}

// ---- receive ----

static int rx_post(uint16_t slot) {
    struct virtq* q = &dev->vq[RXQ];
    uint32_t cap = HDR + link->max_frame;
    if (mrg) cap = rand_chance(90) ? mrg_min + rand_below(mrg_max - mrg_min + 1) : SLOT_BYTES;
    const int head = add_chain(q, rx_pool[slot], cap, rx_tables[slot], 1, 2);
    if (head < 0) return -1;
    rx_head_slot[head] = slot;
    rx_cap[slot] = cap;
    rx_posted++;
    return 0;
}

// Posts up to `n` held buffers (the most recently held first) and kicks.
static void rx_repost(unsigned n) {
    unsigned done = 0;
    while (done < n && rx_nheld && rx_post(rx_held[rx_nheld - 1]) == 0) {
        rx_nheld--;
        done++;
    }
    if (done) {
        virtq_publish(&dev->vq[RXQ]);
        virtq_kick(dev, &dev->vq[RXQ]);
    }
}

static void answer_arp(const uint8_t* a) {
    if (be16(a + 6) == 2 && be32(a + 14) == link->host_ip) {
        memcpy(host_mac, a + 8, 6);
        host_mac_known = 1;
        return;
    }
    if (be16(a + 6) != 1 || be32(a + 24) != link->my_ip || !tx_nfree) return;
    const uint16_t slot = tx_free[tx_nfree - 1];
    const size_t len = build_arp(tx_pool[slot], 2, a + 8, be32(a + 14));
    if (tx_queue(slot, len) == 0) {
        virtq_publish(&dev->vq[TXQ]);
        kick_tx();
        stat.arp_replies++;
    }
}

// Marks the echo of `seq` as received: earlier ones still out were overtaken (dropped).
static int account_echo(uint64_t seq, size_t n) {
    if (seq >= sent || seq + SEQ_RING <= sent) FAIL("echo with sequence number %lu, but %lu frames were sent\n", seq, sent);
    uint8_t* st = &seq_state[seq % SEQ_RING];
    if (*st == SEQ_DONE) FAIL("echo of frame %lu came twice\n", seq);
    if (seq_len[seq % SEQ_RING] != n) FAIL("echo of frame %lu has %lu bytes, %u were sent\n", seq, n, seq_len[seq % SEQ_RING]);
    if (*st == SEQ_DROPPED) {
        dropped--;
        late++;
    }
    *st = SEQ_DONE;
    received++;
    echoed_bytes += n;
    for (; oldest < seq; oldest++) {
        if (seq_state[oldest % SEQ_RING] == SEQ_OUT) {
            seq_state[oldest % SEQ_RING] = SEQ_DROPPED;
            dropped++;
        }
    }
    while (oldest < sent && seq_state[oldest % SEQ_RING] != SEQ_OUT) oldest++;
    return 0;
}

// A whole frame (without the vnet header) in `frame`: an echo (verified), ARP, or other.
static int rx_frame(size_t n) {
    const uint8_t* f = frame;
    if (n >= ETH_HDR + 28 && be16(f + 12) == ETH_P_ARP) {
        answer_arp(f + ETH_HDR);
        return 0;
    }
    const uint8_t* ip = f + ETH_HDR;
    const uint8_t* udp = ip + IP_HDR;
    if (n < HEADERS + 8 || be16(f + 12) != ETH_P_IP || ip[9] != 17 || be32(ip + 12) != link->host_ip ||
        be32(ip + 16) != link->my_ip || be16(udp) != link->udp_port) {
        stat.other_frames++;
        return 0;
    }
    const uint8_t* p = udp + UDP_HDR;
    const uint64_t seq = be32(p);
    if (memcmp(f, link->mac, 6) != 0 || memcmp(f + 6, host_mac, 6) != 0) FAIL("echo %lu: Ethernet addresses wrong\n", seq);
    if (ip[0] != 0x45 || inet_csum_fold(inet_csum_add(0, ip, IP_HDR)) != 0) FAIL("echo %lu: bad IPv4 header\n", seq);
    if (be16(ip + 2) != n - ETH_HDR || be16(udp + 4) != n - ETH_HDR - IP_HDR) {
        FAIL("echo %lu: IPv4 length %u, UDP length %u in a %lu-byte frame\n", seq, be16(ip + 2), be16(udp + 4), n);
    }
    if (be16(p + 4) != n - HEADERS || be16(p + 6) != PAYLOAD_MAGIC) {
        FAIL("echo %lu: payload header says %u bytes / magic 0x%x (frame of %lu bytes)\n", seq, be16(p + 4),
             be16(p + 6), n);
    }
    if (be16(udp + 2) != (uint16_t)(SPORT_BASE + (seq & 0x3fff))) FAIL("echo %lu: to port %u\n", seq, be16(udp + 2));
    if (account_echo(seq, n) != 0) return -1;
    const long bad = check_payload(p, n - HEADERS, seq);
    if (bad >= 0) {
        FAIL("echo %lu (%lu bytes): payload byte %ld (frame byte %lu) is 0x%02x: corrupted\n", seq, n, bad,
             (uint64_t)bad + HEADERS, p[bad]);
    }
    return 0;
}

// Takes every used receive buffer; a frame is checked once all its buffers are there.
static int reap_rx(void) {
    struct virtq* q = &dev->vq[RXQ];
    struct virtq_used_elem e;
    int n = 0;
    while (virtq_pop_used(q, &e)) {
        n++;
        if (e.id >= q->size || virtq_free_chain(q, e.id) != 0) FAIL("receive: used id %u is not in flight\n", e.id);
        const uint16_t slot = rx_head_slot[e.id];
        rx_posted--;
        rx_held[rx_nheld++] = slot;
        if (e.len > rx_cap[slot]) FAIL("receive: used length %u for a buffer of %u bytes\n", e.len, rx_cap[slot]);
        const uint8_t* b = rx_pool[slot];
        if (asm_need == 0) {
            struct virtio_net_hdr_v1 h;
            memcpy(&h, b, HDR);
            if (e.len < HDR + ETH_HDR) FAIL("receive: used length %u\n", e.len);
            // No offloads were negotiated: no NEEDS_CSUM, no GSO (DATA_VALID may come from the TAP).
            if ((h.flags & ~VIRTIO_NET_HDR_F_DATA_VALID) || h.gso_type != VIRTIO_NET_HDR_GSO_NONE) {
                FAIL("receive: header flags 0x%x, gso_type %u\n", h.flags, h.gso_type);
            }
            if (h.num_buffers == 0 || (!mrg && h.num_buffers != 1) || h.num_buffers > q->size) {
                FAIL("receive: num_buffers %u\n", h.num_buffers);
            }
            if (h.num_buffers > stat.max_buffers) stat.max_buffers = h.num_buffers;
            asm_len = e.len - HDR;
            copy_bytes(frame, b + HDR, asm_len);
            asm_need = h.num_buffers - 1u;
        } else {
            if (asm_len + e.len > sizeof(frame)) FAIL("receive: merged frame longer than %lu bytes\n", sizeof(frame));
            copy_bytes(frame + asm_len, b, e.len);
            asm_len += e.len;
            asm_need--;
        }
        if (asm_need == 0 && rx_frame(asm_len) != 0) return -1;
    }
    if (n && rx_posted == 0 && inflight()) stat.rx_emptied++;
    return n;
}

// ---- waiting ----

static int sleep_or_poll(int poll) {
    if (poll) {
        stat.polls++;
        virtq_interrupts(&dev->vq[RXQ], 0);
        virtq_interrupts(&dev->vq[TXQ], 0);
        const uint64_t start = rdtsc(), limit = 20 * waiter.tsc_per_ms;
        while (!virtq_used_pending(&dev->vq[RXQ]) && !virtq_used_pending(&dev->vq[TXQ]) && rdtsc() - start < limit) {
            cpu_pause();
        }
        return 0;
    }
    if (virtio_irq_sleep(&waiter, QMASK, 100) == VIRTIO_IRQ_LOST) FAIL("lost interrupt: %s\n", waiter.lost);
    if (waiter.isr & VIRTIO_MMIO_INT_CONFIG) {
        if (virtio_status(dev) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) FAIL("DEVICE_NEEDS_RESET\n");
    }
    return 0;
}

static void inject_fault(void) {
    switch (opt.inject) {
        case INJECT_MASK_IRQ:
            printf("stress: inject: masking the device's interrupt at the I/O APIC after %lu frames\n", sent);
            irq_unroute_gsi(dev->gsi);
            break;
        case INJECT_NO_KICK:
            printf("stress: inject: no more transmit kicks after %lu frames\n", sent);
            no_kick = 1;
            break;
        case INJECT_HANG:
            printf("stress: inject: halting with interrupts off after %lu frames\n", sent);
            irq_timer_stop();
            cpu_halt_forever();
        case INJECT_NONE:
            break;
    }
}

// Sends the ARP request for the host and waits for the reply.
static int arp_host(void) {
    const uint64_t start = rdtsc();
    const uint16_t slot = tx_free[tx_nfree - 1];
    if (tx_queue(slot, build_arp(tx_pool[slot], 1, (const uint8_t[6]){0}, link->host_ip)) != 0) FAIL("ARP request not queued\n");
    virtq_publish(&dev->vq[TXQ]);
    virtq_kick(dev, &dev->vq[TXQ]);
    while (!host_mac_known) {
        if (reap_tx() < 0 || reap_rx() < 0) return -1;
        rx_repost(rx_nheld);
        if (host_mac_known) break;
        if (virtio_irq_ms_since(&waiter, start) >= opt.stall_ms) FAIL("no ARP reply from the host\n");
        if (sleep_or_poll(0) != 0) return -1;
    }
    return 0;
}

static int stream(void) {
    const uint64_t start = rdtsc();
    const uint64_t report_step = opt.frames >= 4 ? opt.frames / 4 : opt.frames;
    uint64_t last_progress = start, last_rx = start, next_report = report_step;
    int starving = 0;
    uint64_t starve_until = 0;
    while (sent < opt.frames || inflight() || tx_out || asm_need) {
        const int t = reap_tx();
        const int r = reap_rx();
        if (t < 0 || r < 0) return -1;
        if (opt.inject && sent >= opt.inject_at) {
            inject_fault();
            opt.inject = INJECT_NONE;
        }
        if (received >= next_report) {
            printf("stress: %lu of %lu frames echoed, %lu in flight, drops %lu, device interrupts %lu\n", received,
                   opt.frames, inflight(), dropped, irq_count);
            next_report += report_step;
        }
        const unsigned s = send_burst();
        // Receive buffers: sometimes hold all of them until the device has used up the queue,
        // then a little longer (the TAP keeps the echoes); otherwise post in random batches.
        if (!starving && inflight() && rand_chance(2)) {
            starving = 1;
            starve_until = 0;
            stat.starves++;
        }
        if (r) last_rx = rdtsc();
        if (starving) {
            // Until the device stops taking buffers: none left, or the last ones held for a
            // merged frame that needs more (or nothing more to receive); then 0 - 3 ms longer.
            if (!starve_until && (rx_posted == 0 || !inflight() || virtio_irq_ms_since(&waiter, last_rx) >= 5)) {
                starve_until = rdtsc() + rand_below(3000) * waiter.tsc_per_ms / 1000;
            }
            if (starve_until && rdtsc() >= starve_until) starving = 0;
        } else if (rx_nheld && rand_chance(60)) {
            rx_repost(rand_chance(50) ? rx_nheld : 1 + rand_below(rx_nheld));
        }
        if (rand_chance(3)) {
            stat.pauses++;
            spin_us(rand_below(2000));
        }
        if (t || r) {
            virtio_irq_ack(&waiter);
            last_progress = rdtsc();
            continue;
        }
        if (virtio_irq_ms_since(&waiter, last_progress) >= opt.stall_ms) {
            FAIL("stall: no used element on either queue for %lu ms\n", opt.stall_ms);
        }
        if (s) continue;
        // Nothing to do: wait for the device. Never asleep with buffers held back.
        if (!starving && rx_nheld) rx_repost(rx_nheld);
        if (sleep_or_poll(starving || rand_chance(20)) != 0) return -1;
    }
    const uint64_t ms = virtio_irq_ms_since(&waiter, start);
    printf("stress: %lu frames echoed in %lu ms, late %lu, other frames %lu, ARP replies %lu\n", received, ms, late,
           stat.other_frames, stat.arp_replies);
    printf("stress: receive queue used up %lu times (held back %lu times), up to %u buffers per frame; transmit "
           "queue full %lu times\n", stat.rx_emptied, stat.starves, stat.max_buffers, stat.tx_full);
    printf("stress: sleeps %lu (late interrupts %lu, at most %lu ms), polls %lu, pauses %lu; kicks: tx %u "
           "(suppressed %u), rx %u (suppressed %u)\n", waiter.sleeps, waiter.late, waiter.late_max_ms, stat.polls,
           stat.pauses, dev->vq[TXQ].notifications, dev->vq[TXQ].suppressed, dev->vq[RXQ].notifications,
           dev->vq[RXQ].suppressed);
    return 0;
}

// ---- set-up ----

uint64_t net_stress_features(const char* cmdline) {
    uint64_t f = VIRTIO_BIT(VIRTIO_NET_F_MAC) | VIRTIO_BIT(VIRTIO_NET_F_STATUS) | VIRTIO_BIT(VIRTIO_NET_F_MTU);
    if (!cmdline_has_word(cmdline, "net.no_event_idx")) f |= VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
    if (!cmdline_has_word(cmdline, "net.no_indirect")) f |= VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC);
    if (!cmdline_has_word(cmdline, "net.no_mrg")) f |= VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF);
    return f;
}

static int parse_knob(const char* cmdline, const char* key, uint64_t* v, uint64_t min, uint64_t max) {
    return stress_knob(cmdline, "stress: ", key, v, min, max);
}

static int parse_options(const char* cmdline) {
    opt.frames = 6000;
    opt.seed = 1;
    opt.stall_ms = 8000;
    opt.lost_ms = 2000;
    opt.window = 192;
    opt.qsize = 0;
    if (parse_knob(cmdline, "net.stress_frames", &opt.frames, 1, 1u << 30) ||
        parse_knob(cmdline, "net.seed", &opt.seed, 0, ~0ull) ||
        parse_knob(cmdline, "net.stall_ms", &opt.stall_ms, 100, 600000) ||
        parse_knob(cmdline, "net.lost_irq_ms", &opt.lost_ms, 10, 600000) ||
        parse_knob(cmdline, "net.stress_window", &opt.window, 1, SEQ_RING / 4) ||
        parse_knob(cmdline, "net.qsize", &opt.qsize, 2, VIRTQ_MAX_SIZE)) {
        return -1;
    }
    if (opt.qsize & (opt.qsize - 1)) {
        printf("stress: FAIL: net.qsize must be a power of two\n");
        return -1;
    }
    opt.inject_at = opt.frames / 2;
    if (parse_knob(cmdline, "net.stress_inject_at", &opt.inject_at, 0, opt.frames)) return -1;
    size_t n;
    const char* v = cmdline_find(cmdline, "net.stress_inject", &n);
    opt.inject = INJECT_NONE;
    if (v) {
        if (n == 8 && !strncmp(v, "mask_irq", 8)) opt.inject = INJECT_MASK_IRQ;
        else if (n == 7 && !strncmp(v, "no_kick", 7)) opt.inject = INJECT_NO_KICK;
        else if (n == 4 && !strncmp(v, "hang", 4)) opt.inject = INJECT_HANG;
        else {
            printf("stress: FAIL: bad net.stress_inject (mask_irq, no_kick or hang)\n");
            return -1;
        }
    }
    rand_seed(opt.seed);
    return 0;
}

int net_stress(const char* cmdline, const struct net_stress_link* l) {
    link = l;
    dev = l->dev;
    if (parse_options(cmdline) != 0) return GUEST_FAIL;
    mrg = (dev->features & VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF)) != 0;
    indirect = (dev->features & VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC)) != 0;
    const char* err;
    if ((err = virtio_queue_setup(dev, RXQ, (uint16_t)opt.qsize)) || (err = virtio_queue_setup(dev, TXQ, (uint16_t)opt.qsize))) {
        printf("stress: FAIL: queues: %s\n", err);
        return GUEST_FAIL;
    }
    const uint16_t rx_slots = dev->vq[RXQ].size, tx_slots = dev->vq[TXQ].size;
    // Mergeable buffers: any half of the queue's chains (each at most two descriptors) must hold
    // a frame, or a large frame could wait for buffers forever.
    mrg_min = 2u * (HDR + l->max_frame) / rx_slots + 1;
    if (mrg_min < 64) mrg_min = 64;
    mrg_max = mrg_min > 4096 ? SLOT_BYTES : 4096;
    if (mrg_min > SLOT_BYTES) {
        printf("stress: FAIL: a receive queue of %u entries is too small for %u-byte frames\n", rx_slots, l->max_frame);
        return GUEST_FAIL;
    }
    for (uint16_t i = 0; i < tx_slots; i++) tx_free[i] = (uint16_t)(tx_slots - 1 - i);
    tx_nfree = tx_slots;
    for (uint16_t i = 0; i < rx_slots; i++) rx_held[i] = i;
    rx_nheld = rx_slots;
    rx_repost(rx_nheld);
    virtio_driver_ok(dev);
    virtq_notify(dev, &dev->vq[RXQ]);
    if ((err = virtio_irq_setup(&waiter, dev, TICK_US, (uint32_t)opt.lost_ms))) {
        printf("stress: FAIL: interrupts: %s\n", err);
        return GUEST_FAIL;
    }
    printf("stress: %lu frames of 60 - %u bytes, seed %lu, queues rx %u tx %u, %s, %s, %s, window %lu, TSC %lu "
           "kHz (local APIC timer)\n",
           opt.frames, l->max_frame, opt.seed, rx_slots, tx_slots, dev->vq[RXQ].event_idx ? "EVENT_IDX" : "no EVENT_IDX",
           indirect ? "indirect" : "no indirect", mrg ? "MRG_RXBUF" : "no MRG_RXBUF", opt.window, waiter.tsc_per_ms);
    if (arp_host() != 0 || stream() != 0) return GUEST_FAIL;
    if (virtio_status(dev) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
        printf("stress: FAIL: DEVICE_NEEDS_RESET\n");
        return GUEST_FAIL;
    }
    printf("stress: done frames=%lu bytes=%lu drops=%lu irqs=%lu\n", received, echoed_bytes, dropped, irq_count);
    return GUEST_PASS;
}
