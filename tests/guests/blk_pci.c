// blk test guest: what only virtio-pci has, checked on a drive before the full pattern test runs
// over it (blk.mode=full with --enable-pci):
//   MSI-X     a completion arrives as one MSI on the queue's vector and none on the config
//             vector; with the queue's entry masked the MSI is held (its PBA bit set, nothing
//             delivered) and delivered once on unmasking
//   BAR move  BAR 0 moved to a free address in the PCI window: the device follows (common
//             config, device config, notifications and the MSI-X table answer there; requests
//             complete), and nothing answers at the old address (all ones)
#include "blk.h"
#include "io.h"
#include "irq.h"
#include "pci.h"
#include "str.h"
#include "virtio_pci.h"

// msi_count[index] once it passed `seen`: an MSI that must come is given seconds, a count that
// must not move ~50 ms (pci.h).
static uint64_t msis(int index, uint64_t seen) { return msi_wait(index, seen, MSI_EXPECT_CYCLES); }
static uint64_t no_msis(int index, uint64_t seen) { return msi_wait(index, seen, MSI_QUIET_CYCLES); }

// With used_event held (the caller): one completion -> one MSI on the queue vector, none on the
// config vector; with the entry masked -> the pending bit, and the MSI at the unmask.
static int check_msix_held(struct blk_dev* b, int qv, int cv) {
    struct virtio_dev* d = &b->v;
    irq_take_pending();
    const uint64_t q0 = msi_count[qv], c0 = msi_count[cv];
    int r = blk_get_id(b);
    const uint64_t q1 = msis(qv, q0), c1 = no_msis(cv, c0);
    if (r != VIRTIO_BLK_S_OK || q1 == q0 || c1 != c0) {
        FAIL("%s: MSI-X: GET_ID %s, queue vector MSIs %lu -> %lu, config vector %lu -> %lu\n", b->id,
             blk_err_name(r), q0, q1, c0, c1);
        msi_print_lapic(b->id, qv);
        return -1;
    }
    printf("blk: %s: MSI-X: a completion -> %lu MSI on the queue vector, none on the config vector ok\n", b->id,
           q1 - q0);
    // Masked: held in the PBA, delivered at the unmask.
    const uint16_t entry = (uint16_t)(qv - d->msi_first);
    pci_msix_mask_entry(&d->msix, entry, 1);
    r = blk_get_id(b);
    // The used element is visible before the VMM signals the vector: wait for the pending bit.
    const int pending = pci_msix_pending_wait(&d->msix, entry);
    const uint64_t q2 = no_msis(qv, q1);
    pci_msix_mask_entry(&d->msix, entry, 0);
    const uint64_t q3 = msis(qv, q2);
    const int pending_after = pci_msix_pending(&d->msix, entry);
    if (r != VIRTIO_BLK_S_OK || q2 != q1 || !pending || q3 != q2 + 1 || pending_after) {
        FAIL("%s: MSI-X masked entry: GET_ID %s, MSIs while masked %lu, PBA bit %d, after unmask %lu MSIs, PBA "
             "bit %d\n",
             b->id, blk_err_name(r), q2 - q1, pending, q3 - q2, pending_after);
        msi_print_lapic(b->id, qv);
        return -1;
    }
    printf("blk: %s: MSI-X: masked entry held the MSI (PBA bit set), delivered on unmask ok\n", b->id);
    return 0;
}

static int check_msix(struct blk_dev* b) {
    struct virtio_dev* d = &b->v;
    const int qv = virtio_msi_index(d, 0), cv = virtio_msi_index(d, VIRTIO_MAX_QUEUES);
    if (qv < 0 || cv < 0 || qv == cv) {
        FAIL("%s: MSI-X not set up (queue vector %d, config vector %d)\n", b->id, qv, cv);
        return -1;
    }
    // The requests below are polled to completion and must still bring their MSI (see
    // hold_used_event): used_event stays at the element each one waits for.
    d->vq[0].hold_used_event = 1;
    const int failed = check_msix_held(b, qv, cv);
    d->vq[0].hold_used_event = 0;
    if (failed) return -1;
    virtio_isr_read(d);  // what was counted now is seen
    return 0;
}

// The first address above every BAR on bus 0, aligned to `size`, with a gap.
static uint64_t free_address(uint64_t size) {
    struct pci_fn fns[PCI_MAX_FUNCTIONS];
    const int n = pci_scan(fns, PCI_MAX_FUNCTIONS);
    uint64_t top = 0;
    for (int i = 0; i < n; i++) {
        for (unsigned bar = 0; bar < PCI_NUM_BARS; bar++) {
            if (fns[i].bar_size[bar] && fns[i].bar[bar] + fns[i].bar_size[bar] > top)
                top = fns[i].bar[bar] + fns[i].bar_size[bar];
        }
    }
    return ((top + size - 1) & ~(size - 1)) + 4 * size;
}

static int check_bar_move(struct blk_dev* b) {
    struct virtio_dev* d = &b->v;
    const unsigned bar = d->common_cap.bar;
    const uint64_t old = d->pci.bar[bar], size = d->pci.bar_size[bar];
    const uint64_t old_common = d->common, old_cfg = d->device_cfg;
    const uint64_t target = free_address(size);
    pci_bar_move(&d->pci, bar, target);
    virtio_pci_locate(d);
    if (d->pci.bar[bar] != target) {
        FAIL("%s: BAR %u written 0x%lx, reads back 0x%lx\n", b->id, bar, target, d->pci.bar[bar]);
        return -1;
    }
    const uint16_t old_queues = mmio_read16(old_common + VIRTIO_PCI_NUM_QUEUES);
    const uint32_t old_capacity = mmio_read32(old_cfg + VIRTIO_BLK_CFG_CAPACITY);
    const uint64_t capacity = virtio_config_read64(d, VIRTIO_BLK_CFG_CAPACITY);
    const uint16_t queues = mmio_read16(d->common + VIRTIO_PCI_NUM_QUEUES);
    if (old_queues != 0xffff || old_capacity != 0xffffffffu) {
        FAIL("%s: BAR %u moved 0x%lx -> 0x%lx, yet the old address answers (num_queues 0x%x, capacity 0x%x)\n",
             b->id, bar, old, target, old_queues, old_capacity);
        return -1;
    }
    if (capacity != b->capacity || queues != d->num_queues) {
        FAIL("%s: BAR %u moved to 0x%lx: capacity %lu (was %lu), num_queues %u (was %u)\n", b->id, bar, target,
             capacity, b->capacity, queues, d->num_queues);
        return -1;
    }
    const int r = blk_get_id(b);  // notification and MSI at the new place
    if (r != VIRTIO_BLK_S_OK) {
        FAIL("%s: BAR %u moved to 0x%lx: GET_ID %s\n", b->id, bar, target, blk_err_name(r));
        return -1;
    }
    printf("blk: %s: BAR %u moved 0x%lx -> 0x%lx: device follows, old address silent ok\n", b->id, bar, old, target);
    return 0;
}

void pci_drive_checks(struct blk_dev* b) {
    if (!virtio_is_pci(&b->v)) return;
    // The MSI-X check again after the move: the table moved with the BAR.
    if (check_msix(b) == 0 && check_bar_move(b) == 0) check_msix(b);
}
