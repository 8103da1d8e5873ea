// libguest: minimal virtio driver with split virtqueues, the transport-independent part and
// virtio-mmio (version 2); virtio_pci.c has the virtio-pci transport (see virtio.h).
#include "virtio.h"

#include "guest.h"
#include "io.h"
#include "str.h"
#include "virtio_pci.h"

// ---- bounded waits ----

struct bounded_wait {
    uint64_t start_tsc;
    uint32_t iterations;
    uint32_t min_iterations;
    uint64_t min_cycles;
};

static void wait_begin(struct bounded_wait* w, uint32_t min_iterations, uint64_t min_cycles) {
    w->start_tsc = rdtsc();
    w->iterations = 0;
    w->min_iterations = min_iterations;
    w->min_cycles = min_cycles;
}

// Counts one iteration; returns 1 once both bounds have passed.
static int wait_expired(struct bounded_wait* w) {
    if (w->iterations < w->min_iterations) {
        w->iterations++;
        return 0;
    }
    return rdtsc() - w->start_tsc >= w->min_cycles;
}

// ---- discovery ----

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int virtio_mmio_parse_cmdline(const char* cmdline, struct virtio_mmio_entry* out, int max) {
    static const char key[] = "virtio_mmio.device=";
    const size_t key_len = sizeof(key) - 1;
    int count = 0;
    const char* p = cmdline;
    while (*p) {
        while (is_space(*p)) p++;
        const char* word = p;
        while (*p && !is_space(*p)) p++;
        if ((size_t)(p - word) < key_len || strncmp(word, key, key_len) != 0) continue;
        const char* s = word + key_len;
        struct virtio_mmio_entry e;
        size_t n = parse_u64(s, &e.size);
        if (n == 0) return -1;
        s += n;
        if (*s == 'K' || *s == 'k') {
            e.size <<= 10;
            s++;
        } else if (*s == 'M' || *s == 'm') {
            e.size <<= 20;
            s++;
        } else if (*s == 'G' || *s == 'g') {
            e.size <<= 30;
            s++;
        }
        if (*s++ != '@') return -1;
        if ((n = parse_u64(s, &e.base)) == 0) return -1;
        s += n;
        if (*s++ != ':') return -1;
        uint64_t gsi = 0;
        if ((n = parse_u64(s, &gsi)) == 0 || gsi > 0xffffffffu) return -1;
        s += n;
        // Linux accepts an optional ":<first id>" after the IRQ; nothing else may follow.
        if (*s == ':') {
            uint64_t id = 0;
            if ((n = parse_u64(s + 1, &id)) == 0) return -1;
            s += 1 + n;
        }
        if (s != p) return -1;
        e.gsi = (uint32_t)gsi;
        e.pci_slot = -1;
        if (count < max) out[count] = e;
        count++;
    }
    return count;
}

int virtio_find_devices(const char* cmdline, struct virtio_mmio_entry* out, int max) {
    int count = virtio_mmio_parse_cmdline(cmdline, out, max);
    if (count < 0) return -1;
    struct pci_fn fns[PCI_MAX_FUNCTIONS];
    const int nfn = pci_scan(fns, PCI_MAX_FUNCTIONS);
    for (int i = 0; i < nfn; i++) {
        if (fns[i].vendor_id != VIRTIO_PCI_VENDOR_ID || fns[i].device_id < VIRTIO_PCI_DEVICE_ID_BASE ||
            fns[i].device_id > VIRTIO_PCI_DEVICE_ID_LAST)
            continue;
        if (count < max) {
            out[count] = (struct virtio_mmio_entry){.base = fns[i].bar[0], .size = 0, .gsi = 0, .pci_slot = fns[i].slot};
        }
        count++;
    }
    return count;
}

// ---- virtio-mmio transport ----

static uint32_t mmio_status(const struct virtio_dev* d) { return virtio_read32(d, VIRTIO_MMIO_STATUS); }
static void mmio_set_status(const struct virtio_dev* d, uint32_t s) { virtio_write32(d, VIRTIO_MMIO_STATUS, s); }
static uint32_t mmio_config_generation(const struct virtio_dev* d) {
    return virtio_read32(d, VIRTIO_MMIO_CONFIG_GENERATION);
}

uint64_t virtio_read_features_at(uint64_t select, uint64_t value) {
    mmio_write32(select, 0);
    const uint64_t lo = mmio_read32(value);
    mmio_write32(select, 1);
    return lo | (uint64_t)mmio_read32(value) << 32;
}

void virtio_write_features_at(uint64_t select, uint64_t value, uint64_t features) {
    mmio_write32(select, 0);
    mmio_write32(value, (uint32_t)features);
    mmio_write32(select, 1);
    mmio_write32(value, (uint32_t)(features >> 32));
}

static uint64_t mmio_device_features(const struct virtio_dev* d) {
    return virtio_read_features_at(d->base + VIRTIO_MMIO_DEVICE_FEATURES_SEL, d->base + VIRTIO_MMIO_DEVICE_FEATURES);
}

static void mmio_write_driver_features(const struct virtio_dev* d, uint64_t features) {
    virtio_write_features_at(d->base + VIRTIO_MMIO_DRIVER_FEATURES_SEL, d->base + VIRTIO_MMIO_DRIVER_FEATURES, features);
}

static uint32_t mmio_queue_num_max(const struct virtio_dev* d, unsigned qi) {
    virtio_write32(d, VIRTIO_MMIO_QUEUE_SEL, qi);
    return virtio_read32(d, VIRTIO_MMIO_QUEUE_NUM_MAX);
}

static uint32_t mmio_queue_ready(const struct virtio_dev* d, unsigned qi) {
    virtio_write32(d, VIRTIO_MMIO_QUEUE_SEL, qi);
    return virtio_read32(d, VIRTIO_MMIO_QUEUE_READY);
}

static uint32_t mmio_queue_program(struct virtio_dev* d, struct virtq* q, unsigned qi, uint16_t num, uint64_t desc,
                                   uint64_t avail, uint64_t used) {
    (void)q;
    virtio_write32(d, VIRTIO_MMIO_QUEUE_SEL, qi);
    virtio_write32(d, VIRTIO_MMIO_QUEUE_NUM, num);
    virtio_write32(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
    virtio_write32(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
    virtio_write32(d, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)avail);
    virtio_write32(d, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
    virtio_write32(d, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)used);
    virtio_write32(d, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
    virtio_write32(d, VIRTIO_MMIO_QUEUE_READY, 1);
    return virtio_read32(d, VIRTIO_MMIO_QUEUE_READY);
}

static void mmio_notify(const struct virtio_dev* d, const struct virtq* q) {
    virtio_write32(d, VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
}

static uint32_t mmio_isr_read(struct virtio_dev* d) { return virtio_read32(d, VIRTIO_MMIO_INTERRUPT_STATUS); }
static void mmio_isr_ack(struct virtio_dev* d, uint32_t bits) { virtio_write32(d, VIRTIO_MMIO_INTERRUPT_ACK, bits); }
static uint64_t mmio_config_address(const struct virtio_dev* d) { return d->base + VIRTIO_MMIO_CONFIG; }

static const struct virtio_transport_ops mmio_ops = {
    .status = mmio_status,
    .set_status = mmio_set_status,
    .config_generation = mmio_config_generation,
    .device_features = mmio_device_features,
    .write_driver_features = mmio_write_driver_features,
    .after_features = NULL,
    .queue_num_max = mmio_queue_num_max,
    .queue_ready = mmio_queue_ready,
    .queue_program = mmio_queue_program,
    .notify = mmio_notify,
    .isr_read = mmio_isr_read,
    .isr_ack = mmio_isr_ack,
    .config_address = mmio_config_address,
};

// ---- device ----

uint32_t virtio_status(const struct virtio_dev* d) { return d->ops->status(d); }
void virtio_set_status(const struct virtio_dev* d, uint32_t s) { d->ops->set_status(d, s); }
uint32_t virtio_config_generation(const struct virtio_dev* d) { return d->ops->config_generation(d); }

const char* virtio_probe(struct virtio_dev* d, const struct virtio_mmio_entry* e) {
    if (e->pci_slot >= 0) return virtio_pci_probe(d, e);
    memset(d, 0, sizeof(*d));
    d->ops = &mmio_ops;
    d->pci_slot = -1;
    d->msi_first = -1;
    d->base = e->base;
    d->window_size = e->size;
    d->gsi = e->gsi;
    if (e->size < 0x200) return "window smaller than the 0x200 bytes of registers and config space";
    if (e->base >= 0x100000000ull || e->base + e->size > 0x100000000ull) return "window not below 4 GiB";
    const uint32_t magic = virtio_read32(d, VIRTIO_MMIO_MAGIC_VALUE);
    if (magic != VIRTIO_MMIO_MAGIC) return "bad MagicValue (expected 0x74726976)";
    d->version = virtio_read32(d, VIRTIO_MMIO_VERSION);
    d->device_id = virtio_read32(d, VIRTIO_MMIO_DEVICE_ID);
    d->vendor_id = virtio_read32(d, VIRTIO_MMIO_VENDOR_ID);
    if (d->version != VIRTIO_MMIO_VERSION_MODERN) return "Version is not 2 (modern virtio-mmio)";
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) d->vq[i].index = i;
    return NULL;
}

int virtio_reset(struct virtio_dev* d) {
    virtio_set_status(d, 0);
    struct bounded_wait w;
    wait_begin(&w, 20000, 1ull << 31);
    while (virtio_status(d) != 0) {
        if (wait_expired(&w)) return -1;
        cpu_pause();
    }
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) {
        d->vq[i].size = 0;
        d->vq[i].index = i;
    }
    d->features = 0;
    return 0;
}

uint64_t virtio_device_features(const struct virtio_dev* d) { return d->ops->device_features(d); }

void virtio_write_driver_features(const struct virtio_dev* d, uint64_t features) {
    d->ops->write_driver_features(d, features);
}

const char* virtio_negotiate(struct virtio_dev* d, uint64_t wanted) {
    if (virtio_reset(d) != 0) return "Status did not read back 0 after the reset";
    virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
    virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    d->device_features = virtio_device_features(d);
    if (!(d->device_features & VIRTIO_BIT(VIRTIO_F_VERSION_1))) return "the device does not offer VIRTIO_F_VERSION_1";
    const uint64_t features = d->device_features & (wanted | VIRTIO_BIT(VIRTIO_F_VERSION_1));
    virtio_write_driver_features(d, features);
    d->features = features;
    virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    if (!(virtio_status(d) & VIRTIO_STATUS_FEATURES_OK)) return "FEATURES_OK did not stick (features refused)";
    return d->ops->after_features ? d->ops->after_features(d) : NULL;
}

void virtio_driver_ok(const struct virtio_dev* d) {
    virtio_set_status(d, virtio_status(d) | VIRTIO_STATUS_DRIVER_OK);
}

// ---- queues ----

static struct virtq_pages ring_pool[VIRTIO_MAX_DEVICES * VIRTIO_MAX_QUEUES]
    __attribute__((section(".noinit"), aligned(4096)));
static struct {
    uint64_t base;
    unsigned qi;
} ring_owner[VIRTIO_MAX_DEVICES * VIRTIO_MAX_QUEUES];
static unsigned ring_pool_used;

struct virtq_pages* virtio_queue_pages(struct virtio_dev* d, unsigned qi) {
    for (unsigned i = 0; i < ring_pool_used; i++) {
        if (ring_owner[i].base == d->base && ring_owner[i].qi == qi) return &ring_pool[i];
    }
    if (ring_pool_used == ARRAY_SIZE(ring_pool)) guest_panic("virtio: out of ring pages");
    ring_owner[ring_pool_used].base = d->base;
    ring_owner[ring_pool_used].qi = qi;
    return &ring_pool[ring_pool_used++];
}

uint32_t virtio_queue_num_max(const struct virtio_dev* d, unsigned qi) { return d->ops->queue_num_max(d, qi); }

static void queue_init_state(struct virtio_dev* d, struct virtq* q, struct virtq_pages* pages, uint16_t size) {
    memset(pages, 0, sizeof(*pages));
    q->pages = pages;
    q->desc = (volatile struct virtq_desc*)pages->desc;
    q->avail = (volatile struct virtq_avail*)pages->avail;
    q->used = (volatile struct virtq_used*)pages->used;
    q->size = size;
    q->event_idx = (d->features & VIRTIO_BIT(VIRTIO_F_EVENT_IDX)) != 0;
    q->avail_idx = 0;
    q->kicked_idx = 0;
    q->last_used = 0;
    q->num_free = size;
    q->free_head = 0;
    for (uint16_t i = 0; i < size; i++) {
        q->free_next[i] = (uint16_t)(i + 1);
        q->chain_len[i] = 0;
    }
    q->notifications = 0;
    q->suppressed = 0;
}

const char* virtio_queue_setup(struct virtio_dev* d, unsigned qi, uint16_t size) {
    if (qi >= VIRTIO_MAX_QUEUES) return "queue index beyond VIRTIO_MAX_QUEUES";
    struct virtq* q = &d->vq[qi];
    q->index = qi;
    if (d->ops->queue_ready(d, qi) != 0) return "QueueReady is not 0 before the queue is set up";
    const uint32_t max = d->ops->queue_num_max(d, qi);
    if (max == 0) return "QueueNumMax is 0 (queue not available)";
    if (size == 0) {
        uint32_t s = max < VIRTQ_MAX_SIZE ? max : VIRTQ_MAX_SIZE;
        size = 1;
        while ((uint32_t)size * 2 <= s) size = (uint16_t)(size * 2);
    }
    if (size > max) return "requested queue size is larger than QueueNumMax";
    if (size > VIRTQ_MAX_SIZE || (size & (size - 1)) != 0) return "requested queue size is not a power of two <= 256";
    queue_init_state(d, q, virtio_queue_pages(d, qi), size);
    const uint32_t ready = d->ops->queue_program(d, q, qi, size, (uint64_t)(uintptr_t)q->pages->desc,
                                                 (uint64_t)(uintptr_t)q->pages->avail, (uint64_t)(uintptr_t)q->pages->used);
    if (ready != 1) return "QueueReady did not read back 1";
    if (virtio_is_pci(d) && d->msi_first >= 0 && virtio_pci_queue_vector(d, qi) != qi)
        return "queue_msix_vector did not read back the vector written";
    return NULL;
}

uint32_t virtio_queue_setup_raw(struct virtio_dev* d, unsigned qi, uint16_t num, uint64_t desc, uint64_t avail,
                                uint64_t used) {
    struct virtq* q = &d->vq[qi % VIRTIO_MAX_QUEUES];
    struct virtq_pages* pages = virtio_queue_pages(d, qi % VIRTIO_MAX_QUEUES);
    q->index = qi;
    // Keep the driver-side view usable whenever the descriptor table and available ring are
    // the library's pages, so that the raw helpers can put requests there.
    if (desc == (uint64_t)(uintptr_t)pages->desc && avail == (uint64_t)(uintptr_t)pages->avail && num > 0 &&
        num <= VIRTQ_MAX_SIZE) {
        queue_init_state(d, q, pages, num);
    } else {
        memset(pages, 0, sizeof(*pages));
        q->size = 0;
    }
    return d->ops->queue_program(d, q, qi, num, desc, avail, used);
}

// ---- interrupts ----

uint32_t virtio_isr_read(struct virtio_dev* d) {
    const uint32_t v = d->ops->isr_read(d);
    d->isr_seen |= v;
    return v;
}

void virtio_isr_ack(struct virtio_dev* d, uint32_t bits) {
    if (bits) d->ops->isr_ack(d, bits);
}

uint32_t virtio_wait_isr(struct virtio_dev* d, uint32_t bits) {
    struct bounded_wait w;
    wait_begin(&w, 20000, 1ull << 31);
    for (;;) {
        const uint32_t v = virtio_isr_read(d);
        if (v & bits) {
            virtio_isr_ack(d, v);
            return v & bits;
        }
        if (wait_expired(&w)) return 0;
        cpu_pause();
    }
}

// ---- configuration space ----

#define CONFIG_RETRIES 100

uint8_t virtio_config_read8(const struct virtio_dev* d, uint32_t off) {
    return mmio_read8(d->ops->config_address(d) + off);
}

uint16_t virtio_config_read16(const struct virtio_dev* d, uint32_t off) {
    return mmio_read16(d->ops->config_address(d) + off);
}

uint32_t virtio_config_read32(const struct virtio_dev* d, uint32_t off) {
    return mmio_read32(d->ops->config_address(d) + off);
}

uint64_t virtio_config_read64(const struct virtio_dev* d, uint32_t off) {
    uint64_t v = 0;
    const uint64_t base = d->ops->config_address(d);
    for (int i = 0; i < CONFIG_RETRIES; i++) {
        const uint32_t before = virtio_config_generation(d);
        const uint64_t lo = mmio_read32(base + off);
        const uint64_t hi = mmio_read32(base + off + 4);
        v = lo | hi << 32;
        if (virtio_config_generation(d) == before) break;
    }
    return v;
}

void virtio_config_write8(const struct virtio_dev* d, uint32_t off, uint8_t v) {
    mmio_write8(d->ops->config_address(d) + off, v);
}

void virtio_config_write32(const struct virtio_dev* d, uint32_t off, uint32_t v) {
    mmio_write32(d->ops->config_address(d) + off, v);
}

// ---- virtqueue ----

int virtq_add_ex(struct virtq* q, const struct virtio_buf* direct, unsigned n_direct, struct virtq_desc* table,
                 const struct virtio_buf* indirect, unsigned n_indirect) {
    const unsigned total = n_direct + (n_indirect ? 1u : 0u);
    if (q->size == 0 || total == 0 || total > q->num_free) return -1;
    if (n_indirect) {
        for (unsigned i = 0; i < n_indirect; i++) {
            table[i].addr = indirect[i].addr;
            table[i].len = indirect[i].len;
            table[i].flags = (uint16_t)((indirect[i].write ? VIRTQ_DESC_F_WRITE : 0) |
                                        (i + 1 < n_indirect ? VIRTQ_DESC_F_NEXT : 0));
            table[i].next = (uint16_t)(i + 1 < n_indirect ? i + 1 : 0);
        }
    }
    const uint16_t head = q->free_head;
    uint16_t cur = head;
    for (unsigned i = 0; i < total; i++) {
        const uint16_t next = q->free_next[cur];
        volatile struct virtq_desc* d = &q->desc[cur];
        uint16_t flags;
        if (i < n_direct) {
            d->addr = direct[i].addr;
            d->len = direct[i].len;
            flags = direct[i].write ? VIRTQ_DESC_F_WRITE : 0;
        } else {
            d->addr = (uint64_t)(uintptr_t)table;
            d->len = (uint32_t)(n_indirect * sizeof(struct virtq_desc));
            flags = VIRTQ_DESC_F_INDIRECT;
        }
        if (i + 1 < total) {
            flags |= VIRTQ_DESC_F_NEXT;
            d->next = next;
        } else {
            d->next = 0;
        }
        d->flags = flags;
        if (i + 1 < total) cur = next;
        else q->free_head = next;
    }
    q->num_free = (uint16_t)(q->num_free - total);
    q->chain_len[head] = (uint16_t)total;
    q->avail->ring[q->avail_idx % q->size] = head;
    q->avail_idx++;
    return head;
}

void virtq_publish(struct virtq* q) {
    if (q->event_idx) *virtq_used_event(q) = q->last_used;
    barrier();  // descriptors and ring entries before the index (x86 keeps stores in order)
    q->avail->idx = q->avail_idx;
}

void virtq_notify(struct virtio_dev* d, struct virtq* q) {
    d->ops->notify(d, q);
    q->notifications++;
    q->kicked_idx = q->avail_idx;
}

int virtq_kick(struct virtio_dev* d, struct virtq* q) {
    mb();  // the avail->idx store before reading the device's suppression fields
    const uint16_t new_idx = q->avail_idx;
    const uint16_t old_idx = q->kicked_idx;
    int needed;
    if (q->event_idx) {
        const uint16_t event = *virtq_avail_event(q);
        needed = (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old_idx);
    } else {
        needed = !(q->used->flags & VIRTQ_USED_F_NO_NOTIFY);
    }
    q->kicked_idx = new_idx;
    if (!needed) {
        q->suppressed++;
        return 0;
    }
    virtq_notify(d, q);
    return 1;
}

enum virtq_wait_result virtq_wait_used(struct virtio_dev* d, struct virtq* q, struct virtq_used_elem* out) {
    struct bounded_wait w;
    wait_begin(&w, VIRTIO_WAIT_MIN_ITERATIONS, VIRTIO_WAIT_MIN_TSC_CYCLES);
    for (uint32_t i = 1;; i++) {
        if (virtq_pop_used(q, out)) {
            if (q->event_idx && !q->hold_used_event) *virtq_used_event(q) = q->last_used;
            return VIRTQ_USED;
        }
        if ((i & 255) == 0) {
            if (virtio_status(d) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
                // One more look: a used element published just before the status change wins.
                if (q->used->idx != q->last_used) continue;
                return VIRTQ_NEEDS_RESET;
            }
        }
        if (wait_expired(&w)) return VIRTQ_TIMEOUT;
        cpu_pause();
    }
}

int virtq_pop_used(struct virtq* q, struct virtq_used_elem* out) {
    if (q->used->idx == q->last_used) return 0;
    barrier();  // the element after the index (x86 keeps loads in order)
    const volatile struct virtq_used_elem* e = &q->used->ring[q->last_used % q->size];
    out->id = e->id;
    out->len = e->len;
    q->last_used++;
    return 1;
}

void virtq_interrupts(struct virtq* q, int on) {
    if (q->event_idx) {
        *virtq_used_event(q) = on ? q->last_used : (uint16_t)(q->last_used + 0x8000);
    } else {
        q->avail->flags = on ? 0 : VIRTQ_AVAIL_F_NO_INTERRUPT;
    }
}

int virtq_free_chain(struct virtq* q, uint32_t id) {
    if (id >= q->size || q->chain_len[id] == 0) return -1;
    const uint16_t head = (uint16_t)id;
    const uint16_t n = q->chain_len[head];
    uint16_t last = head;
    for (uint16_t i = 1; i < n; i++) last = q->free_next[last];
    q->free_next[last] = q->free_head;
    q->free_head = head;
    q->num_free = (uint16_t)(q->num_free + n);
    q->chain_len[head] = 0;
    return 0;
}

void virtq_raw_desc(struct virtq* q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
    if (i >= VIRTQ_MAX_SIZE) guest_panic("virtq_raw_desc: index %u beyond the ring page", i);
    volatile struct virtq_desc* d = &q->desc[i];
    d->addr = addr;
    d->len = len;
    d->flags = flags;
    d->next = next;
}

void virtq_raw_avail_push(struct virtq* q, uint16_t head) {
    if (q->size == 0) guest_panic("virtq_raw_avail_push: queue not set up");
    q->avail->ring[q->avail_idx % q->size] = head;
    q->avail_idx++;
}

void virtq_raw_set_avail_idx(struct virtq* q, uint16_t idx) {
    barrier();
    q->avail->idx = idx;
    q->avail_idx = idx;
}
