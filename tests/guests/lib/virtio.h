// libguest: a minimal virtio 1.x driver for the virtio-mmio transport (version 2, "modern") and
// the modern virtio-pci transport, with split virtqueues, written for test guests that drive
// embervm's virtio devices from the inside. The device logic on top (virtio_blk.c, virtio_net.c,
// the guests) is the same for both: every function below picks the transport from the device.
//
// The pieces, in the order a driver uses them (virtio 1.2, "Device Initialization" 3.1.1):
//   virtio_mmio_parse_cmdline()   the devices the VMM announced: "virtio_mmio.device=4K@0xADDR:GSI"
//   virtio_find_devices()         those, then the virtio-pci functions on PCI bus 0 (pci.h)
//   virtio_probe()                mmio: magic 0x74726976, version 2, device and vendor ID; pci:
//                                 vendor 0x1AF4, device ID 0x1040 + N, the common / notify / ISR /
//                                 device-config capabilities and MSI-X
//   virtio_negotiate()            reset, ACKNOWLEDGE | DRIVER, 64-bit features, FEATURES_OK (checked);
//                                 pci: MSI-X set up (one vector per queue + config, see below)
//   virtio_negotiate()            reset, ACKNOWLEDGE | DRIVER, 64-bit features, FEATURES_OK (checked)
//   virtio_queue_setup()          QueueSel / QueueNumMax / QueueNum / addresses / QueueReady; the rings
//                                 are static, page-aligned pages of the guest image (.noinit)
//   virtio_driver_ok()            DRIVER_OK
//   virtq_add() + virtq_publish() + virtq_kick()   a descriptor chain made available and notified
//   virtq_wait_used()             bounded polling of the used ring (never hangs: reports a timeout),
//                                 also watching Status for DEVICE_NEEDS_RESET
//   virtio_wait_isr()             InterruptStatus (bit 0: used buffer, bit 1: configuration change)
//                                 polled and acknowledged; the guest runs with interrupts off
//
// Raw helpers (virtq_raw_*) write arbitrary descriptor-table and available-ring contents, for
// tests that hand the device malformed chains on purpose.
//
// virtio-pci interrupts are MSI-X: table entry i (queue i) and entry N (configuration, N = the
// queues the library drives) aim at this CPU's local APIC on IDT vectors of their own (pci.h's
// msi_alloc), each counted in msi_count[]. virtio_isr_read() takes pending interrupts and turns
// the MSIs counted since the last look into the InterruptStatus bits virtio-mmio would show (queue
// vectors: VRING, config vector: CONFIG), ORed with the ISR byte (read-to-clear), so callers do not
// care which transport they drive.
//
// Everything is polled and single-CPU. Notification suppression follows the spec: with
// VIRTIO_F_EVENT_IDX the driver keeps used_event at the next used index it waits for and notifies
// only when avail_event asks for it; without it, it honours VIRTQ_USED_F_NO_NOTIFY.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pci.h"

// ---- virtio-mmio registers (virtio 1.2, 4.2.2 "MMIO Device Register Layout") ----
#define VIRTIO_MMIO_MAGIC_VALUE 0x000
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_VENDOR_ID 0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_MMIO_SHM_SEL 0x0ac
#define VIRTIO_MMIO_SHM_LEN_LOW 0x0b0
#define VIRTIO_MMIO_SHM_LEN_HIGH 0x0b4
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100

#define VIRTIO_MMIO_MAGIC 0x74726976u  // "virt"
#define VIRTIO_MMIO_VERSION_MODERN 2

// InterruptStatus bits.
#define VIRTIO_MMIO_INT_VRING 0x1   // used buffer notification
#define VIRTIO_MMIO_INT_CONFIG 0x2  // configuration change notification

// Device status bits (2.1).
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

// Reserved (device-independent) feature bits (6).
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_F_ACCESS_PLATFORM 33
#define VIRTIO_F_RING_PACKED 34
#define VIRTIO_F_IN_ORDER 35
#define VIRTIO_F_NOTIFICATION_DATA 38
#define VIRTIO_BIT(b) (1ull << (b))

// Device IDs (5).
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_BALLOON 5
#define VIRTIO_ID_VSOCK 19

// ---- split virtqueue (2.7) ----
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct virtq_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[];  // [size], then used_event
};

struct virtq_used_elem {
    uint32_t id;
    uint32_t len;
};

struct virtq_used {
    uint16_t flags;
    uint16_t idx;
    struct virtq_used_elem ring[];  // [size], then avail_event
};

// The largest queue this driver sets up: the descriptor table, available ring and used ring then
// each fit one 4 KiB page (16 * 256, 6 + 2 * 256, 6 + 8 * 256 bytes).
#define VIRTQ_MAX_SIZE 256
#define VIRTIO_MAX_QUEUES 4
#define VIRTIO_MAX_DEVICES 16

// One buffer of a descriptor chain: guest-physical address, length, device-writable or not.
struct virtio_buf {
    uint64_t addr;
    uint32_t len;
    uint8_t write;
};

// Pages of one queue's rings (page-aligned, in .noinit: zeroed by virtio_queue_setup()).
struct virtq_pages {
    uint8_t desc[4096];
    uint8_t avail[4096];
    uint8_t used[4096];
};

struct virtq {
    unsigned index;  // queue index on the device
    uint16_t notify_off;  // virtio-pci: queue_notify_off
    uint16_t size;   // 0 while not set up
    struct virtq_pages* pages;
    volatile struct virtq_desc* desc;
    volatile struct virtq_avail* avail;
    volatile struct virtq_used* used;
    int event_idx;            // VIRTIO_F_EVENT_IDX negotiated
    // EVENT_IDX: virtq_wait_used leaves used_event where virtq_publish put it (at the element
    // the driver waits for) instead of moving it past the element it took. For checks that an
    // interrupt comes for a completion the driver has already seen by polling: once used_event
    // is past the element, a device that decides late rightly sends none (virtio 1.2, 2.7.10).
    int hold_used_event;
    uint16_t avail_idx;       // the driver's avail->idx (published by virtq_publish)
    uint16_t kicked_idx;      // avail_idx at the last notification decision
    uint16_t last_used;       // next used->idx entry to consume
    uint16_t num_free;
    uint16_t free_head;
    uint16_t free_next[VIRTQ_MAX_SIZE];  // driver-private free list (not the shared `next` fields)
    uint16_t chain_len[VIRTQ_MAX_SIZE];  // descriptors per in-flight head; 0: not in flight
    uint32_t notifications;   // QueueNotify writes
    uint32_t suppressed;      // notifications skipped because the device did not want them
};

// virtio-pci: a capability's place (virtio_pci_cap: bar, offset, length).
struct virtio_pci_region {
    uint8_t bar;
    uint32_t offset, length;
};

struct virtio_dev;
struct virtq;

// What differs between the transports (virtio.c: virtio-mmio, virtio_pci.c: virtio-pci). The
// library's functions below go through d->ops; the device logic never sees it.
struct virtio_transport_ops {
    uint32_t (*status)(const struct virtio_dev* d);
    void (*set_status)(const struct virtio_dev* d, uint32_t s);
    uint32_t (*config_generation)(const struct virtio_dev* d);
    uint64_t (*device_features)(const struct virtio_dev* d);
    void (*write_driver_features)(const struct virtio_dev* d, uint64_t features);
    // After FEATURES_OK (virtio-pci: the MSI-X vectors). NULL or what failed.
    const char* (*after_features)(struct virtio_dev* d);
    uint32_t (*queue_num_max)(const struct virtio_dev* d, unsigned qi);
    uint32_t (*queue_ready)(const struct virtio_dev* d, unsigned qi);
    // Selects queue `qi` and writes its size, ring addresses (and, virtio-pci, its MSI-X vector;
    // q->notify_off read back), then ready = 1. Returns what ready reads back.
    uint32_t (*queue_program)(struct virtio_dev* d, struct virtq* q, unsigned qi, uint16_t num, uint64_t desc,
                              uint64_t avail, uint64_t used);
    void (*notify)(const struct virtio_dev* d, const struct virtq* q);
    uint32_t (*isr_read)(struct virtio_dev* d);
    void (*isr_ack)(struct virtio_dev* d, uint32_t bits);
    uint64_t (*config_address)(const struct virtio_dev* d);  // device-specific configuration
};

struct virtio_dev {
    const struct virtio_transport_ops* ops;
    uint64_t base;  // MMIO window; virtio-pci: the common configuration's BAR as found at probe
    uint64_t window_size;
    uint32_t gsi;
    int pci_slot;  // -1: virtio-mmio; else the virtio-pci function 00:slot.0
    // virtio-pci: the function, its capabilities and where they are now (virtio_pci_locate()).
    struct pci_fn pci;
    struct virtio_pci_region common_cap, notify_cap, isr_cap, device_cap;
    uint32_t notify_mult;
    uint64_t common, notify, isr, device_cfg;
    uint16_t num_queues;
    struct pci_msix msix;  // msix.cap 0: no MSI-X
    int msi_first;         // msi_count index of table entry 0 (-1: MSI-X not set up)
    uint16_t msi_entries;  // table entries in use: queues 0..msi_entries-2, config the last
    uint64_t msi_seen[VIRTIO_MAX_QUEUES + 1];  // msi_count values already turned into ISR bits
    uint32_t version, device_id, vendor_id;
    uint64_t device_features;  // offered (read by virtio_negotiate)
    uint64_t features;         // negotiated
    uint32_t isr_seen;         // every InterruptStatus bit seen (and acknowledged) so far
    struct virtq vq[VIRTIO_MAX_QUEUES];
};

// ---- discovery ----

// One device found: a virtio-mmio window, or (pci_slot >= 0) a virtio-pci function (base: its
// BAR 0, size and gsi 0).
struct virtio_mmio_entry {
    uint64_t base;
    uint64_t size;
    uint32_t gsi;
    int pci_slot;
};

// Parses every "virtio_mmio.device=<size>@<base>:<gsi>" word of `cmdline` (size in bytes with
// an optional K/M/G suffix, base decimal or 0x hex, as Linux's virtio_mmio.device= takes it).
// Returns how many were found (at most `max` are stored), or -1 if one is malformed.
int virtio_mmio_parse_cmdline(const char* cmdline, struct virtio_mmio_entry* out, int max);
// The virtio-mmio devices of `cmdline`, then the virtio-pci functions of PCI bus 0 (vendor
// 0x1AF4, device ID 0x1040-0x107F). Returns how many (at most `max` stored), or -1 if a
// virtio_mmio.device= word is malformed.
int virtio_find_devices(const char* cmdline, struct virtio_mmio_entry* out, int max);

// ---- device and transport ----

// virtio-mmio registers (only for virtio-mmio devices: tests of that transport itself).
static inline uint32_t virtio_read32(const struct virtio_dev* d, uint32_t reg) {
    return *(volatile uint32_t*)(d->base + reg);
}
static inline void virtio_write32(const struct virtio_dev* d, uint32_t reg, uint32_t v) {
    *(volatile uint32_t*)(d->base + reg) = v;
}

// Fills `d` from the window's identification registers. Returns NULL if it is a virtio-mmio
// version 2 device (device ID may be 0: a placeholder), else what is wrong. For a virtio-pci
// entry: the IDs, the four virtio capabilities (each inside an implemented memory BAR) and MSI-X.
const char* virtio_probe(struct virtio_dev* d, const struct virtio_mmio_entry* e);
// virtio-pci: recomputes the capabilities' and the MSI-X table's addresses from the BARs as
// they are now (after the guest moved one with pci_bar_move()).
void virtio_pci_locate(struct virtio_dev* d);
static inline int virtio_is_pci(const struct virtio_dev* d) { return d->pci_slot >= 0; }

uint32_t virtio_status(const struct virtio_dev* d);
void virtio_set_status(const struct virtio_dev* d, uint32_t s);
// ConfigGeneration (mmio: 32 bits; pci: the 8-bit config_generation).
uint32_t virtio_config_generation(const struct virtio_dev* d);
// virtio-pci: the msi_count index of the vector for queue `qi` (qi = VIRTIO_MAX_QUEUES: the
// configuration vector), or -1 without MSI-X.
int virtio_msi_index(const struct virtio_dev* d, unsigned qi);

// Writes 0 to Status and waits (bounded) until Status reads 0. Forgets the driver-side queue
// state. Returns 0, or -1 if Status never read back 0.
int virtio_reset(struct virtio_dev* d);

uint64_t virtio_device_features(const struct virtio_dev* d);
void virtio_write_driver_features(const struct virtio_dev* d, uint64_t features);

// Reset, ACKNOWLEDGE, DRIVER, features = offered & (wanted | VERSION_1), FEATURES_OK, and checks
// that FEATURES_OK stuck. Returns NULL or what failed (then the device is left as it is).
const char* virtio_negotiate(struct virtio_dev* d, uint64_t wanted);

// Sets up queue `qi` with `size` entries (0: min(QueueNumMax, VIRTQ_MAX_SIZE) rounded down to a
// power of two) on the library's ring pages, zeroed. Checks QueueReady read 0 before and 1 after.
// Returns NULL or what failed.
const char* virtio_queue_setup(struct virtio_dev* d, unsigned qi, uint16_t size);

// Raw queue set-up for malformed cases: writes QueueSel, QueueNum = num and the three addresses
// as given, then QueueReady = 1, and returns what QueueReady reads back. If the rings are the
// library's (virtio_queue_pages(d, qi)), q->size is set to `num` for the raw helpers.
uint32_t virtio_queue_setup_raw(struct virtio_dev* d, unsigned qi, uint16_t num, uint64_t desc, uint64_t avail,
                                uint64_t used);
// The ring pages the library uses for queue `qi` of `d` (allocated on first use).
struct virtq_pages* virtio_queue_pages(struct virtio_dev* d, unsigned qi);
uint32_t virtio_queue_num_max(const struct virtio_dev* d, unsigned qi);

// Sets DRIVER_OK (on top of the current status bits).
void virtio_driver_ok(const struct virtio_dev* d);

// InterruptStatus: read, acknowledge. virtio-pci: see the top of this file (the ack is a no-op).
uint32_t virtio_isr_read(struct virtio_dev* d);
void virtio_isr_ack(struct virtio_dev* d, uint32_t bits);
// Polls InterruptStatus (bounded, shortly) until any of `bits` is set; acknowledges what it saw.
// Returns the bits seen (0 if none of `bits` came).
uint32_t virtio_wait_isr(struct virtio_dev* d, uint32_t bits);

// Device-specific configuration space, read with the access widths the spec requires (8/16/32,
// 64-bit fields as two 32-bit reads) inside a ConfigGeneration retry loop.
uint8_t virtio_config_read8(const struct virtio_dev* d, uint32_t off);
uint16_t virtio_config_read16(const struct virtio_dev* d, uint32_t off);
uint32_t virtio_config_read32(const struct virtio_dev* d, uint32_t off);
uint64_t virtio_config_read64(const struct virtio_dev* d, uint32_t off);
void virtio_config_write8(const struct virtio_dev* d, uint32_t off, uint8_t v);
void virtio_config_write32(const struct virtio_dev* d, uint32_t off, uint32_t v);

// ---- virtqueue ----

// Adds a chain: `n_direct` buffers as chained descriptors, then (if n_indirect > 0) one
// descriptor with VIRTQ_DESC_F_INDIRECT pointing at `table` (16-byte aligned, caller-owned,
// filled here with the `indirect` buffers). Returns the head index, or -1 if the queue has no
// room. The chain becomes visible to the device at virtq_publish().
int virtq_add_ex(struct virtq* q, const struct virtio_buf* direct, unsigned n_direct, struct virtq_desc* table,
                 const struct virtio_buf* indirect, unsigned n_indirect);
static inline int virtq_add(struct virtq* q, const struct virtio_buf* bufs, unsigned n) {
    return virtq_add_ex(q, bufs, n, NULL, NULL, 0);
}
// Makes everything added so far visible (barrier, avail->idx).
void virtq_publish(struct virtq* q);
// Notifies the device (QueueNotify) unless it suppressed notifications. Returns 1 if notified.
int virtq_kick(struct virtio_dev* d, struct virtq* q);
// Notifies unconditionally.
void virtq_notify(struct virtio_dev* d, struct virtq* q);

enum virtq_wait_result {
    VIRTQ_USED = 0,     // *out holds the next used element (consumed)
    VIRTQ_TIMEOUT,      // nothing came within the bound
    VIRTQ_NEEDS_RESET,  // Status has DEVICE_NEEDS_RESET (and no used element came)
};
// Waits (bounded: long enough for a slow host, never forever) for the next used element.
// Polls Status every few hundred iterations for DEVICE_NEEDS_RESET.
enum virtq_wait_result virtq_wait_used(struct virtio_dev* d, struct virtq* q, struct virtq_used_elem* out);
// Takes the next used element without waiting: 1 (stored in *out, consumed), or 0 if there is
// none. Unlike virtq_wait_used it leaves used_event alone (see virtq_interrupts).
int virtq_pop_used(struct virtq* q, struct virtq_used_elem* out);
// Asks the device for used-buffer interrupts on `q` from the next used element on (on = 1), or
// asks it not to interrupt (on = 0): with EVENT_IDX through used_event (last_used, or half the
// index space ahead), else through VIRTQ_AVAIL_F_NO_INTERRUPT. The caller orders this store
// before its next look at the used index (mb()) when it is about to sleep.
void virtq_interrupts(struct virtq* q, int on);
// The number of used elements the device has published and the driver not consumed yet.
static inline uint16_t virtq_used_pending(const struct virtq* q) { return (uint16_t)(q->used->idx - q->last_used); }
// Takes the next used element if the device has published one: returns 1 and fills *out, or 0.
// Never waits, and leaves used_event alone (virtq_wait_used moves it on).
int virtq_pop_used(struct virtq* q, struct virtq_used_elem* out);
// The EVENT_IDX fields behind the rings: used_event (the driver's, after avail->ring) and
// avail_event (the device's, after used->ring).
static inline volatile uint16_t* virtq_used_event(const struct virtq* q) { return &q->avail->ring[q->size]; }
static inline volatile uint16_t* virtq_avail_event(const struct virtq* q) {
    return (volatile uint16_t*)&q->used->ring[q->size];
}
// Returns a completed chain's descriptors to the free list. Returns 0, or -1 if `id` is not a
// head that is in flight (the device returned a bogus id).
int virtq_free_chain(struct virtq* q, uint32_t id);

// Raw helpers for malformed requests. They bypass the free list: use them on a fresh queue and
// reset the device afterwards.
void virtq_raw_desc(struct virtq* q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next);
// avail->ring[avail_idx % size] = head; avail_idx++ (not yet published).
void virtq_raw_avail_push(struct virtq* q, uint16_t head);
// Writes avail->idx = idx directly (the driver's shadow follows).
void virtq_raw_set_avail_idx(struct virtq* q, uint16_t idx);

// Bounded-wait limits: a wait gives up only after BOTH bounds passed, so it is long on a host
// where every guest instruction is emulated (~0.25 M instructions/s) and on a fast one. 2^35
// cycles is 10 - 15 s at today's TSC rates: a FLUSH (fdatasync) on a busy CI disk fits.
#define VIRTIO_WAIT_MIN_ITERATIONS 200000u
#define VIRTIO_WAIT_MIN_TSC_CYCLES (1ull << 35)
