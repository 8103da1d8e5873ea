// libguest: the virtio-pci transport (see virtio_pci.h and virtio.h).
#include "virtio_pci.h"

#include "guest.h"
#include "io.h"
#include "irq.h"
#include "str.h"

static uint8_t common_read8(const struct virtio_dev* d, uint32_t off) { return mmio_read8(d->common + off); }
static uint16_t common_read16(const struct virtio_dev* d, uint32_t off) { return mmio_read16(d->common + off); }
static void common_write8(const struct virtio_dev* d, uint32_t off, uint8_t v) { mmio_write8(d->common + off, v); }
static void common_write16(const struct virtio_dev* d, uint32_t off, uint16_t v) { mmio_write16(d->common + off, v); }
static void common_write32(const struct virtio_dev* d, uint32_t off, uint32_t v) { mmio_write32(d->common + off, v); }
// A 64-bit field as two 32-bit writes, low half first (4.1.3.1 allows either).
static void common_write64(const struct virtio_dev* d, uint32_t off, uint64_t v) {
    common_write32(d, off, (uint32_t)v);
    common_write32(d, off + 4, (uint32_t)(v >> 32));
}

static uint32_t pci_status(const struct virtio_dev* d) { return common_read8(d, VIRTIO_PCI_DEVICE_STATUS); }
static void pci_set_status(const struct virtio_dev* d, uint32_t s) {
    common_write8(d, VIRTIO_PCI_DEVICE_STATUS, (uint8_t)s);
}
static uint32_t pci_config_generation(const struct virtio_dev* d) {
    return common_read8(d, VIRTIO_PCI_CONFIG_GENERATION);
}

static uint64_t pci_device_features(const struct virtio_dev* d) {
    return virtio_read_features_at(d->common + VIRTIO_PCI_DEVICE_FEATURE_SELECT, d->common + VIRTIO_PCI_DEVICE_FEATURE);
}

static void pci_write_driver_features(const struct virtio_dev* d, uint64_t features) {
    virtio_write_features_at(d->common + VIRTIO_PCI_DRIVER_FEATURE_SELECT, d->common + VIRTIO_PCI_DRIVER_FEATURE,
                             features);
}

// The msi_count index each slot's vectors start at (+1; 0: none yet): a device probed again
// (drivers probe, reset and reopen) keeps its vectors.
static int slot_msi[32];

// MSI-X: table entries 0..n-2 for the queues, n-1 for configuration changes, each aimed at this
// CPU on its own IDT vector; MSI-X enabled; config_msix_vector written and checked.
static const char* pci_after_features(struct virtio_dev* d) {
    if (!d->msix.cap) return NULL;  // no MSI-X: the ISR is polled
    const char* err = irq_lapic_setup();
    if (err) return err;
    uint16_t queues = d->num_queues < VIRTIO_MAX_QUEUES ? d->num_queues : VIRTIO_MAX_QUEUES;
    if (queues + 1u > d->msix.num_vectors) queues = (uint16_t)(d->msix.num_vectors - 1);
    const uint16_t n = (uint16_t)(queues + 1);
    if (!slot_msi[d->pci_slot]) {
        const int first = msi_alloc(n);
        if (first < 0) return "out of MSI vectors (MSI_VECTORS)";
        slot_msi[d->pci_slot] = first + 1;
    }
    d->msi_first = slot_msi[d->pci_slot] - 1;
    d->msi_entries = n;
    for (uint16_t i = 0; i < n; i++) {
        pci_msix_set_entry(&d->msix, i, (uint8_t)(MSI_VECTOR_BASE + d->msi_first + i), 0);
        d->msi_seen[i] = msi_count[d->msi_first + i];
    }
    pci_msix_enable(&d->pci, &d->msix, 1);
    common_write16(d, VIRTIO_PCI_CONFIG_MSIX_VECTOR, (uint16_t)(n - 1));
    if (virtio_pci_config_vector(d) != n - 1) return "config_msix_vector did not read back the vector written";
    return NULL;
}

int virtio_msi_index(const struct virtio_dev* d, unsigned qi) {
    if (d->msi_first < 0) return -1;
    const unsigned entry = qi >= (unsigned)(d->msi_entries - 1) ? (unsigned)(d->msi_entries - 1) : qi;
    return d->msi_first + (int)entry;
}

uint16_t virtio_pci_queue_vector(const struct virtio_dev* d, unsigned qi) {
    common_write16(d, VIRTIO_PCI_QUEUE_SELECT, (uint16_t)qi);
    return common_read16(d, VIRTIO_PCI_QUEUE_MSIX_VECTOR);
}

uint16_t virtio_pci_config_vector(const struct virtio_dev* d) { return common_read16(d, VIRTIO_PCI_CONFIG_MSIX_VECTOR); }

static uint32_t pci_queue_num_max(const struct virtio_dev* d, unsigned qi) {
    common_write16(d, VIRTIO_PCI_QUEUE_SELECT, (uint16_t)qi);
    return common_read16(d, VIRTIO_PCI_QUEUE_SIZE);
}

static uint32_t pci_queue_ready(const struct virtio_dev* d, unsigned qi) {
    common_write16(d, VIRTIO_PCI_QUEUE_SELECT, (uint16_t)qi);
    return common_read16(d, VIRTIO_PCI_QUEUE_ENABLE);
}

static uint32_t pci_queue_program(struct virtio_dev* d, struct virtq* q, unsigned qi, uint16_t num, uint64_t desc,
                                  uint64_t avail, uint64_t used) {
    common_write16(d, VIRTIO_PCI_QUEUE_SELECT, (uint16_t)qi);
    common_write16(d, VIRTIO_PCI_QUEUE_SIZE, num);
    common_write64(d, VIRTIO_PCI_QUEUE_DESC, desc);
    common_write64(d, VIRTIO_PCI_QUEUE_DRIVER, avail);
    common_write64(d, VIRTIO_PCI_QUEUE_DEVICE, used);
    if (d->msi_first >= 0 && qi < (unsigned)(d->msi_entries - 1)) common_write16(d, VIRTIO_PCI_QUEUE_MSIX_VECTOR, (uint16_t)qi);
    q->notify_off = common_read16(d, VIRTIO_PCI_QUEUE_NOTIFY_OFF);
    common_write16(d, VIRTIO_PCI_QUEUE_ENABLE, 1);
    return common_read16(d, VIRTIO_PCI_QUEUE_ENABLE);
}

static void pci_notify(const struct virtio_dev* d, const struct virtq* q) {
    mmio_write16(d->notify + (uint64_t)q->notify_off * d->notify_mult, (uint16_t)q->index);
}

static uint32_t pci_isr_read(struct virtio_dev* d) {
    uint32_t bits = mmio_read8(d->isr);  // read-to-clear
    if (d->msi_first < 0) return bits;
    irq_take_pending();  // the MSIs that came while interrupts were off
    for (uint16_t i = 0; i < d->msi_entries; i++) {
        const uint64_t n = msi_count[d->msi_first + i];
        if (n == d->msi_seen[i]) continue;
        d->msi_seen[i] = n;
        bits |= i + 1u == d->msi_entries ? VIRTIO_MMIO_INT_CONFIG : VIRTIO_MMIO_INT_VRING;
    }
    return bits;
}

static void pci_isr_ack(struct virtio_dev* d, uint32_t bits) {
    (void)d;
    (void)bits;  // the ISR read cleared it
}

static uint64_t pci_config_address(const struct virtio_dev* d) { return d->device_cfg; }

static const struct virtio_transport_ops pci_ops = {
    .status = pci_status,
    .set_status = pci_set_status,
    .config_generation = pci_config_generation,
    .device_features = pci_device_features,
    .write_driver_features = pci_write_driver_features,
    .after_features = pci_after_features,
    .queue_num_max = pci_queue_num_max,
    .queue_ready = pci_queue_ready,
    .queue_program = pci_queue_program,
    .notify = pci_notify,
    .isr_read = pci_isr_read,
    .isr_ack = pci_isr_ack,
    .config_address = pci_config_address,
};

// A virtio capability's body; NULL or what is wrong with it.
static const char* read_region(const struct virtio_dev* d, uint8_t cap, uint32_t min_length,
                               struct virtio_pci_region* r) {
    const uint8_t slot = (uint8_t)d->pci_slot;
    if (pci_cfg_read8(slot, 0, (uint16_t)(cap + 2)) < 16) return "a virtio capability shorter than 16 bytes";
    r->bar = pci_cfg_read8(slot, 0, (uint16_t)(cap + 4));
    r->offset = pci_cfg_read32(slot, 0, (uint16_t)(cap + 8));
    r->length = pci_cfg_read32(slot, 0, (uint16_t)(cap + 12));
    if (r->bar >= PCI_NUM_BARS || d->pci.bar_size[r->bar] == 0) return "a virtio capability names no memory BAR";
    if (r->length < min_length || (uint64_t)r->offset + r->length > d->pci.bar_size[r->bar])
        return "a virtio capability's region does not fit its BAR";
    return NULL;
}

void virtio_pci_locate(struct virtio_dev* d) {
    for (unsigned b = 0; b < PCI_NUM_BARS; b++) {
        if (d->pci.bar_size[b]) d->pci.bar[b] = pci_bar_address((uint8_t)d->pci_slot, 0, b);
    }
    d->common = d->pci.bar[d->common_cap.bar] + d->common_cap.offset;
    d->notify = d->pci.bar[d->notify_cap.bar] + d->notify_cap.offset;
    d->isr = d->pci.bar[d->isr_cap.bar] + d->isr_cap.offset;
    d->device_cfg = d->pci.bar[d->device_cap.bar] + d->device_cap.offset;
    if (d->msix.cap) pci_msix_update(&d->pci, &d->msix);
}

const char* virtio_pci_probe(struct virtio_dev* d, const struct virtio_mmio_entry* e) {
    memset(d, 0, sizeof(*d));
    d->ops = &pci_ops;
    d->pci_slot = e->pci_slot;
    d->msi_first = -1;
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) d->vq[i].index = i;
    if (e->pci_slot < 0 || e->pci_slot >= 32) return "no such PCI slot";
    if (pci_read_fn((uint8_t)e->pci_slot, 0, &d->pci) != 0) return "no PCI function there";
    d->vendor_id = d->pci.vendor_id;
    if (d->pci.vendor_id != VIRTIO_PCI_VENDOR_ID || d->pci.device_id < VIRTIO_PCI_DEVICE_ID_BASE ||
        d->pci.device_id > VIRTIO_PCI_DEVICE_ID_LAST)
        return "not a modern virtio-pci function (vendor 0x1af4, device 0x1040-0x107f)";
    d->device_id = d->pci.device_id - VIRTIO_PCI_DEVICE_ID_BASE;
    d->version = pci_cfg_read8((uint8_t)e->pci_slot, 0, PCI_REVISION);
    int found = 0;
    for (uint8_t cap = pci_find_cap((uint8_t)d->pci_slot, 0, PCI_CAP_ID_VENDOR, 0); cap;
         cap = pci_find_cap((uint8_t)d->pci_slot, 0, PCI_CAP_ID_VENDOR, cap)) {
        const uint8_t type = pci_cfg_read8((uint8_t)d->pci_slot, 0, (uint16_t)(cap + 3));
        const char* err = NULL;
        // The first capability of each type is the one to use (4.1.4.1).
        if (type == VIRTIO_PCI_CAP_COMMON_CFG && !(found & 1)) {
            err = read_region(d, cap, 0x38, &d->common_cap);
            found |= 1;
        } else if (type == VIRTIO_PCI_CAP_NOTIFY_CFG && !(found & 2)) {
            if (pci_cfg_read8((uint8_t)d->pci_slot, 0, (uint16_t)(cap + 2)) < 20) return "notify capability shorter than 20 bytes";
            err = read_region(d, cap, 2, &d->notify_cap);
            d->notify_mult = pci_cfg_read32((uint8_t)d->pci_slot, 0, (uint16_t)(cap + 16));
            found |= 2;
        } else if (type == VIRTIO_PCI_CAP_ISR_CFG && !(found & 4)) {
            err = read_region(d, cap, 1, &d->isr_cap);
            found |= 4;
        } else if (type == VIRTIO_PCI_CAP_DEVICE_CFG && !(found & 8)) {
            err = read_region(d, cap, 1, &d->device_cap);
            found |= 8;
        }
        if (err) return err;
    }
    if (!(found & 1)) return "no common configuration capability";
    if (!(found & 2)) return "no notification capability";
    if (!(found & 4)) return "no ISR capability";
    if (!(found & 8)) return "no device configuration capability";
    d->base = d->pci.bar[d->common_cap.bar];
    d->window_size = d->pci.bar_size[d->common_cap.bar];
    const char* err = pci_msix_probe(&d->pci, &d->msix);
    if (err) d->msix.cap = 0;  // polled through the ISR
    pci_enable_memory(&d->pci, 1);
    virtio_pci_locate(d);
    d->num_queues = common_read16(d, VIRTIO_PCI_NUM_QUEUES);
    return NULL;
}
