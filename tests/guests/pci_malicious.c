// pci-malicious test guest: a driver that misuses PCI and virtio-pci on purpose (run with
// --enable-pci and two drives). Each case must break at most the device it targets: the access
// is ignored (or the device reports DEVICE_NEEDS_RESET), the VMM runs on, the other drive keeps
// working, and the victim works again once the driver sets it up properly.
//
//   bar-over-ram            BAR 0 moved onto guest RAM: RAM stays RAM, the device answers nowhere,
//                           and works again when moved back
//   bar-over-bar            BAR 0 moved onto the other drive's BAR 0: neither is decoded while
//                           they overlap, both work once apart
//   msix-table-odd          MSI-X table and PBA accesses beyond the table, unaligned and of
//                           1 and 2 bytes: ignored (reads 0), entry 0 unchanged, MSIs still right
//   msix-bad-address        an entry aimed outside the local APIC window (RAM, the I/O APIC, all
//                           ones): the request completes, the right address brings MSIs back
//   msix-vector-range       config / queue vectors beyond the table read back NO_VECTOR; the
//                           queue then completes without an MSI
//   msix-masked             function mask and MSI-X disabled: no MSI while masked (PBA bit set),
//                           delivered at the unmask; with MSI-X off, the ISR byte says used buffer
//   notify-range            notify writes beyond the queues, unaligned, of the wrong width, with a
//                           queue index that does not exist: ignored
//   queue-select-range      queue_select beyond the queues: fields read as "no queue", writes
//                           ignored
//   config-read-only        writes to IDs, class, capability pointer, capability bodies, absent
//                           BARs and absent functions: ignored
//   ecam                    the ECAM window reads what the ports read (every dword of the host
//                           bridge and both drives, 1/2/4-byte), a write through it is seen
//                           through the ports; unaligned and 8-byte accesses read all ones and
//                           write nothing, the extended space reads zeros, absent functions and
//                           the end of the window all ones
// `pcimal.only=<case>` runs one.
#include "guest.h"
#include "io.h"
#include "irq.h"
#include "pci.h"
#include "str.h"
#include "virtio.h"
#include "virtio_blk.h"
#include "virtio_pci.h"

static struct blk_dev victim, bystander;
static struct virtio_mmio_entry victim_entry, bystander_entry;
static int failures;
static const char* only;
static size_t only_len;

#define FAIL(...)                               \
    do {                                        \
        printf("pci-malicious: FAIL: " __VA_ARGS__); \
        failures++;                             \
    } while (0)

// A page-aligned stretch of guest RAM as large as a virtio-pci BAR (0x8000), for bar-over-ram.
static uint8_t ram_target[0x8000] __attribute__((aligned(0x8000)));

static const char* open_drive(struct blk_dev* b, const struct virtio_mmio_entry* e) {
    return blk_open(b, e, VIRTIO_BLK_GUEST_FEATURES, 16);
}

// The drive answers a GET_ID with the right id and no DEVICE_NEEDS_RESET: 0, or -1 (FAIL).
static int works(struct blk_dev* b, const char* name, const char* when) {
    char id[sizeof(b->id)];
    memcpy(id, b->id, sizeof(id));
    const int r = blk_get_id(b);
    if (r != VIRTIO_BLK_S_OK || strcmp(id, b->id) != 0 || (virtio_status(&b->v) & VIRTIO_STATUS_DEVICE_NEEDS_RESET)) {
        FAIL("%s: %s: GET_ID %s, id '%s' (was '%s'), status 0x%x\n", name, when, blk_err_name(r), b->id, id,
             virtio_status(&b->v));
        return -1;
    }
    return 0;
}

// Sets the victim up again from scratch (a driver recovering it) and checks both drives.
static int recover(const char* name) {
    char id[sizeof(victim.id)];
    memcpy(id, victim.id, sizeof(id));
    const char* err = open_drive(&victim, &victim_entry);
    if (err) {
        FAIL("%s: reopening the victim: %s\n", name, err);
        return -1;
    }
    memcpy(victim.id, id, sizeof(id));  // what GET_ID must still return
    if (works(&victim, name, "victim after recovery") != 0) return -1;
    return works(&bystander, name, "bystander");
}

// msi_count[index] once it passed `seen`: an MSI that must come is given seconds, a count that
// must not move ~50 ms (pci.h).
static uint64_t msis(int index, uint64_t seen) { return msi_wait(index, seen, MSI_EXPECT_CYCLES); }
static uint64_t no_msis(int index, uint64_t seen) { return msi_wait(index, seen, MSI_QUIET_CYCLES); }

// A GET_ID on the victim; how many MSIs its queue vector took (`expect`: whether one must come,
// which decides how long to wait for it).
static uint64_t request_msis(const char* name, int expect) {
    const int qv = virtio_msi_index(&victim.v, 0);
    irq_take_pending();
    const uint64_t before = msi_count[qv];
    // Polled to completion, yet its MSI must come: used_event stays at the element (virtio.h).
    victim.v.vq[0].hold_used_event = 1;
    const int r = works(&victim, name, "request");
    victim.v.vq[0].hold_used_event = 0;
    if (r != 0) return ~0ull;
    return (expect ? msis(qv, before) : no_msis(qv, before)) - before;
}

// ---- cases ----

static int c_bar_over_ram(const char* name) {
    struct virtio_dev* d = &victim.v;
    const uint64_t old = d->pci.bar[0], ram = (uint64_t)(uintptr_t)ram_target;
    memset(ram_target, 0x5a, sizeof(ram_target));
    pci_bar_move(&d->pci, 0, ram);
    virtio_pci_locate(d);
    const uint16_t q = mmio_read16(ram + VIRTIO_PCI_NUM_QUEUES);
    mmio_write16(ram + 0x3000, 0);  // "notify queue 0": only RAM
    const uint16_t old_q = mmio_read16(old + VIRTIO_PCI_NUM_QUEUES);
    if (q != 0x5a5a || ram_target[0x3000] != 0 || old_q != 0xffff) {
        FAIL("%s: BAR over RAM at 0x%lx: reads 0x%x there (RAM holds 0x5a5a), 0x%x at the old address\n", name, ram,
             q, old_q);
        return -1;
    }
    if (works(&bystander, name, "bystander while the victim's BAR is over RAM") != 0) return -1;
    pci_bar_move(&d->pci, 0, old);
    virtio_pci_locate(d);
    if (works(&victim, name, "victim moved back") != 0) return -1;
    printf("pci-malicious: %s -> RAM stays RAM, device silent, works when moved back ok\n", name);
    return 0;
}

static int c_bar_over_bar(const char* name) {
    struct virtio_dev* d = &victim.v;
    const uint64_t old = d->pci.bar[0], other = bystander.v.pci.bar[0];
    pci_bar_move(&d->pci, 0, other);
    virtio_pci_locate(d);
    const uint16_t q = mmio_read16(other + VIRTIO_PCI_NUM_QUEUES);
    const uint8_t status = mmio_read8(other + VIRTIO_PCI_DEVICE_STATUS);
    pci_bar_move(&d->pci, 0, old);
    virtio_pci_locate(d);
    if (q != 0xffff || status != 0xff) {
        FAIL("%s: two BARs at 0x%lx: num_queues 0x%x, status 0x%x there (expected nobody: all ones)\n", name, other,
             q, status);
        return -1;
    }
    if (works(&victim, name, "victim moved back") != 0 || works(&bystander, name, "bystander after the overlap") != 0)
        return -1;
    printf("pci-malicious: %s -> neither decoded while overlapping, both work apart ok\n", name);
    return 0;
}

static int c_msix_table_odd(const char* name) {
    const struct pci_msix* m = &victim.v.msix;
    const uint64_t e0 = m->table;
    const uint32_t data0 = mmio_read32(e0 + PCI_MSIX_ENTRY_DATA), addr0 = mmio_read32(e0 + PCI_MSIX_ENTRY_ADDR_LO);
    const uint64_t beyond = m->table + (uint64_t)m->num_vectors * PCI_MSIX_ENTRY_SIZE;
    mmio_write32(beyond, 0x12345678);
    mmio_write64(beyond + 8, ~0ull);
    mmio_write8(e0 + PCI_MSIX_ENTRY_DATA, 0x77);
    mmio_write16(e0 + PCI_MSIX_ENTRY_DATA, 0x7777);
    mmio_write32(e0 + PCI_MSIX_ENTRY_DATA + 2, 0x77777777);  // unaligned
    mmio_write8(e0 + PCI_MSIX_ENTRY_CONTROL, 1);              // a byte: not a mask
    mmio_write32(m->pba, ~0u);                                // the PBA is read-only
    const uint32_t beyond_read = mmio_read32(beyond), odd_read = mmio_read16(e0 + PCI_MSIX_ENTRY_DATA);
    const uint32_t pba_beyond = mmio_read32(m->pba + 0x800);
    const uint32_t data1 = mmio_read32(e0 + PCI_MSIX_ENTRY_DATA), addr1 = mmio_read32(e0 + PCI_MSIX_ENTRY_ADDR_LO);
    const uint32_t ctrl1 = mmio_read32(e0 + PCI_MSIX_ENTRY_CONTROL);
    if (beyond_read != 0 || odd_read != 0 || pba_beyond != 0 || data1 != data0 || addr1 != addr0 || ctrl1 != 0) {
        FAIL("%s: beyond the table reads 0x%x, a 16-bit read 0x%x, beyond the PBA 0x%x; entry 0 data 0x%x -> 0x%x, "
             "address 0x%x -> 0x%x, control 0x%x\n",
             name, beyond_read, odd_read, pba_beyond, data0, data1, addr0, addr1, ctrl1);
        return -1;
    }
    if (pci_msix_pending(m, 0)) {
        FAIL("%s: a PBA write set a pending bit\n", name);
        return -1;
    }
    const uint64_t n = request_msis(name, 1);
    if (n != 1) {
        FAIL("%s: a completion afterwards brought %lu MSIs on the queue vector (expected 1)\n", name, n);
        return -1;
    }
    printf("pci-malicious: %s -> ignored, entry 0 unchanged, MSIs still right ok\n", name);
    return 0;
}

static int c_msix_bad_address(const char* name) {
    const struct pci_msix* m = &victim.v.msix;
    const int qv = virtio_msi_index(&victim.v, 0);
    const uint16_t entry = (uint16_t)(qv - victim.v.msi_first);
    const uint64_t e = m->table + (uint64_t)entry * PCI_MSIX_ENTRY_SIZE;
    // Where such an MSI lands is KVM's reading of the address bits (it may still reach this
    // CPU); what matters is that the request completes and the VMM and the entry survive.
    static const uint32_t bad[] = {0x00100000u, 0xfec00000u, 0xffffffffu};
    uint64_t got[ARRAY_SIZE(bad)];
    for (unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
        mmio_write32(e + PCI_MSIX_ENTRY_ADDR_LO, bad[i]);
        mmio_write32(e + PCI_MSIX_ENTRY_ADDR_HI, i == 2 ? 0xffffffffu : 0);
        got[i] = request_msis(name, 0);
        if (got[i] == ~0ull) return -1;
    }
    printf("pci-malicious: %s: MSIs that reached this CPU: %lu, %lu, %lu\n", name, got[0], got[1], got[2]);
    pci_msix_set_entry(m, entry, (uint8_t)(MSI_VECTOR_BASE + qv), 0);
    const uint64_t n = request_msis(name, 1);
    if (n != 1) {
        FAIL("%s: with the right address again: %lu MSIs (expected 1)\n", name, n);
        return -1;
    }
    printf("pci-malicious: %s -> requests completed, right address works again ok\n", name);
    return 0;
}

static int c_msix_vector_range(const char* name) {
    struct virtio_dev* d = &victim.v;
    const uint64_t common = d->common;
    mmio_write16(common + VIRTIO_PCI_CONFIG_MSIX_VECTOR, d->msix.num_vectors);
    const uint16_t cv = mmio_read16(common + VIRTIO_PCI_CONFIG_MSIX_VECTOR);
    mmio_write16(common + VIRTIO_PCI_QUEUE_SELECT, 0);
    mmio_write16(common + VIRTIO_PCI_QUEUE_MSIX_VECTOR, 0x7ff);
    const uint16_t qv = mmio_read16(common + VIRTIO_PCI_QUEUE_MSIX_VECTOR);
    if (cv != VIRTIO_MSI_NO_VECTOR || qv != VIRTIO_MSI_NO_VECTOR) {
        FAIL("%s: vectors beyond the table read back config 0x%x, queue 0x%x (expected 0xffff)\n", name, cv, qv);
        return -1;
    }
    const uint64_t n = request_msis(name, 0);
    if (n != 0) {
        FAIL("%s: a queue without a vector raised %lu MSIs\n", name, n);
        return -1;
    }
    printf("pci-malicious: %s -> NO_VECTOR, completion without an MSI ok\n", name);
    return recover(name);
}

static int c_msix_masked(const char* name) {
    struct virtio_dev* d = &victim.v;
    const uint16_t reg = (uint16_t)(d->msix.cap + PCI_MSIX_CONTROL);
    const uint16_t control = pci_cfg_read16(d->pci.slot, 0, reg);
    const int qv = virtio_msi_index(d, 0);
    const uint16_t entry = (uint16_t)(qv - d->msi_first);
    pci_cfg_write16(d->pci.slot, 0, reg, (uint16_t)(control | PCI_MSIX_FUNCTION_MASK));
    uint64_t n = request_msis(name, 0);
    const int pending = pci_msix_pending_wait(&d->msix, entry);
    irq_take_pending();
    const uint64_t before = msi_count[qv];
    pci_cfg_write16(d->pci.slot, 0, reg, control);
    const uint64_t after = msis(qv, before) - before;
    if (n != 0 || !pending || after != 1) {
        FAIL("%s: function mask: %lu MSIs while masked, PBA bit %d, %lu at the unmask (expected 0, 1, 1)\n", name, n,
             pending, after);
        return -1;
    }
    // MSI-X off: no MSI, the ISR byte reports the used buffer.
    (void)mmio_read8(d->isr);
    pci_cfg_write16(d->pci.slot, 0, reg, (uint16_t)(control & ~PCI_MSIX_ENABLE));
    n = request_msis(name, 0);
    // The used-buffer bit may follow the used element (reading the ISR clears it: keep what came).
    uint8_t isr = 0;
    for (const uint64_t start = rdtsc(); !(isr & VIRTIO_MMIO_INT_VRING) && rdtsc() - start < MSI_EXPECT_CYCLES;)
        isr |= mmio_read8(d->isr);
    pci_cfg_write16(d->pci.slot, 0, reg, control);
    if (n != 0 || !(isr & VIRTIO_MMIO_INT_VRING)) {
        FAIL("%s: MSI-X disabled: %lu MSIs, ISR 0x%x (expected none and the used-buffer bit)\n", name, n, isr);
        return -1;
    }
    printf("pci-malicious: %s -> held while masked, delivered at the unmask; ISR with MSI-X off ok\n", name);
    return 0;
}

static int c_notify_range(const char* name) {
    struct virtio_dev* d = &victim.v;
    const uint64_t notify = d->notify;
    const uint32_t end = d->notify_cap.length;
    mmio_write16(notify + (uint64_t)d->num_queues * d->notify_mult, 0);  // just beyond the queues
    mmio_write16(notify + 0xffc, 0);                                     // far beyond
    mmio_write16(notify + end, 0);
    mmio_write16(notify + 1, 0);      // unaligned
    mmio_write32(notify, 0);          // 32 bits
    mmio_write8(notify, 0);           // 8 bits
    mmio_write16(notify, 0x7fff);     // a queue index that does not exist
    mmio_write64(notify, ~0ull);
    if (virtio_status(d) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
        printf("pci-malicious: %s -> needs reset\n", name);
        return recover(name);
    }
    if (works(&victim, name, "after notify writes out of range") != 0) return -1;
    printf("pci-malicious: %s -> ignored ok\n", name);
    return 0;
}

static int c_queue_select_range(const char* name) {
    struct virtio_dev* d = &victim.v;
    const uint64_t c = d->common;
    static const uint16_t selects[] = {1, 0x100, 0x7fff, 0xffff};
    for (unsigned i = 0; i < ARRAY_SIZE(selects); i++) {
        if (selects[i] < d->num_queues) continue;
        mmio_write16(c + VIRTIO_PCI_QUEUE_SELECT, selects[i]);
        mmio_write16(c + VIRTIO_PCI_QUEUE_SIZE, 8);
        mmio_write32(c + VIRTIO_PCI_QUEUE_DESC, 0x1000);
        mmio_write16(c + VIRTIO_PCI_QUEUE_ENABLE, 1);
        mmio_write16(c + VIRTIO_PCI_QUEUE_MSIX_VECTOR, 0);
        const uint16_t size = mmio_read16(c + VIRTIO_PCI_QUEUE_SIZE), en = mmio_read16(c + VIRTIO_PCI_QUEUE_ENABLE);
        const uint16_t vec = mmio_read16(c + VIRTIO_PCI_QUEUE_MSIX_VECTOR);
        const uint32_t desc = mmio_read32(c + VIRTIO_PCI_QUEUE_DESC);
        if (size != 0 || en != 0 || vec != VIRTIO_MSI_NO_VECTOR || desc != 0) {
            FAIL("%s: queue_select %u: size %u, enable %u, vector 0x%x, desc 0x%x (expected 0, 0, 0xffff, 0)\n", name,
                 selects[i], size, en, vec, desc);
            return -1;
        }
    }
    mmio_write16(c + VIRTIO_PCI_QUEUE_SELECT, 0);
    if (virtio_status(d) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
        printf("pci-malicious: %s -> needs reset\n", name);
        return recover(name);
    }
    if (works(&victim, name, "after queue_select out of range") != 0) return -1;
    printf("pci-malicious: %s -> no queue there, writes ignored ok\n", name);
    return 0;
}

static int c_config_read_only(const char* name) {
    struct virtio_dev* d = &victim.v;
    const uint8_t s = d->pci.slot;
    uint32_t before[64];
    for (unsigned i = 0; i < 64; i++) before[i] = pci_cfg_read32(s, 0, (uint16_t)(4 * i));
    pci_cfg_write32(s, 0, PCI_VENDOR_ID, 0x12345678);
    pci_cfg_write32(s, 0, PCI_REVISION, 0xffffffff);
    pci_cfg_write8(s, 0, PCI_HEADER_TYPE, 0x80);
    pci_cfg_write32(s, 0, PCI_SUBSYSTEM_VENDOR_ID, 0);
    pci_cfg_write8(s, 0, PCI_CAP_PTR, 0x40);
    for (unsigned bar = 2; bar < PCI_NUM_BARS; bar++) pci_cfg_write32(s, 0, (uint16_t)(PCI_BAR0 + 4 * bar), ~0u);
    // Every capability's header and body (but MSI-X's message control, which is writable).
    for (uint16_t off = 0x40; off < 0x100; off += 4) {
        if (d->msix.cap && off == d->msix.cap) continue;
        pci_cfg_write32(s, 0, off, 0xa5a5a5a5);
    }
    // Absent functions and buses.
    pci_cfg_write32(s, 3, PCI_COMMAND, 0xffff);
    outl(0xcf8, 0x80000000u | 1u << 16 | (uint32_t)s << 11 | PCI_COMMAND);
    outl(0xcfc, 0);
    const uint32_t other_bus = inl(0xcfc);
    const uint32_t absent_fn = pci_cfg_read32(s, 3, PCI_VENDOR_ID);
    for (unsigned i = 0; i < 64; i++) {
        const uint32_t now = pci_cfg_read32(s, 0, (uint16_t)(4 * i));
        if (now != before[i]) {
            FAIL("%s: config dword 0x%x changed 0x%08x -> 0x%08x\n", name, 4 * i, before[i], now);
            return -1;
        }
    }
    if (other_bus != 0xffffffffu || absent_fn != 0xffffffffu) {
        FAIL("%s: bus 1 reads 0x%x, function 3 reads 0x%x (expected all ones)\n", name, other_bus, absent_fn);
        return -1;
    }
    if (works(&victim, name, "after the config writes") != 0) return -1;
    printf("pci-malicious: %s -> read-only fields unchanged, absent functions silent ok\n", name);
    return 0;
}

static int c_ecam(const char* name) {
    struct virtio_dev* d = &victim.v;
    const uint8_t slots[3] = {0, d->pci.slot, bystander.v.pci.slot};
    for (unsigned i = 0; i < 3; i++) {
        for (uint16_t off = 0; off < 0x100; off += 4) {
            const uint32_t port = pci_cfg_read32(slots[i], 0, off), ecam = pci_ecam_read32(slots[i], 0, off);
            if (port != ecam) {
                FAIL("%s: 00:%02x.0 dword 0x%x: ports 0x%08x, ECAM 0x%08x\n", name, slots[i], off, port, ecam);
                return -1;
            }
        }
    }
    const uint8_t s = d->pci.slot;
    if (mmio_read16(pci_ecam_addr(s, 0, PCI_DEVICE_ID)) != pci_cfg_read16(s, 0, PCI_DEVICE_ID) ||
        mmio_read8(pci_ecam_addr(s, 0, PCI_CAP_PTR)) != pci_cfg_read8(s, 0, PCI_CAP_PTR)) {
        FAIL("%s: 1- or 2-byte ECAM reads differ from the ports\n", name);
        return -1;
    }
    // A write through ECAM (memory decoding off and on again) is seen through the ports.
    const uint16_t command = pci_cfg_read16(s, 0, PCI_COMMAND);
    mmio_write16(pci_ecam_addr(s, 0, PCI_COMMAND), (uint16_t)(command & ~PCI_COMMAND_MEMORY));
    const uint16_t off_seen = pci_cfg_read16(s, 0, PCI_COMMAND);
    const uint16_t q_off = mmio_read16(d->pci.bar[0] + VIRTIO_PCI_NUM_QUEUES);
    mmio_write8(pci_ecam_addr(s, 0, PCI_COMMAND), (uint8_t)command);
    if (off_seen != (command & ~PCI_COMMAND_MEMORY) || q_off != 0xffff || pci_cfg_read16(s, 0, PCI_COMMAND) != command) {
        FAIL("%s: command written through ECAM: ports read 0x%x (BAR answered 0x%x with decoding off)\n", name,
             off_seen, q_off);
        return -1;
    }
    // Odd accesses: unaligned and 8-byte reads all ones; writes of both kinds change nothing.
    uint32_t before[64];
    for (unsigned i = 0; i < 64; i++) before[i] = pci_cfg_read32(s, 0, (uint16_t)(4 * i));
    const uint32_t unaligned32 = mmio_read32(pci_ecam_addr(s, 0, PCI_BAR0 + 1));
    const uint16_t unaligned16 = mmio_read16(pci_ecam_addr(s, 0, PCI_COMMAND + 1));
    const uint64_t wide = mmio_read64(pci_ecam_addr(s, 0, PCI_VENDOR_ID));
    mmio_write32(pci_ecam_addr(s, 0, PCI_BAR0 + 2), 0xffffffffu);
    mmio_write16(pci_ecam_addr(s, 0, PCI_COMMAND + 1), 0);
    mmio_write64(pci_ecam_addr(s, 0, PCI_COMMAND), 0);
    mmio_write64(pci_ecam_addr(s, 0, PCI_BAR0), ~0ull);
    for (unsigned i = 0; i < 64; i++) {
        const uint32_t now = pci_cfg_read32(s, 0, (uint16_t)(4 * i));
        if (now != before[i]) {
            FAIL("%s: config dword 0x%x changed 0x%08x -> 0x%08x by an odd ECAM access\n", name, 4 * i, before[i], now);
            return -1;
        }
    }
    if (unaligned32 != 0xffffffffu || unaligned16 != 0xffff || wide != ~0ull) {
        FAIL("%s: odd ECAM reads 0x%x / 0x%x / 0x%lx (expected all ones)\n", name, unaligned32, unaligned16, wide);
        return -1;
    }
    // Extended space: zeros, writes ignored; absent functions and past the bus: all ones.
    pci_ecam_write32(s, 0, 0x100, 0x12345678);
    pci_ecam_write32(s, 0, 0xffc, 0x12345678);
    const uint32_t ext = pci_ecam_read32(s, 0, 0x100) | pci_ecam_read32(s, 0, 0xffc);
    pci_ecam_write32(s, 5, PCI_COMMAND, 0xffff);
    const uint32_t absent = pci_ecam_read32(s, 5, PCI_VENDOR_ID) & pci_ecam_read32(31, 7, 0xffc);
    if (ext != 0 || absent != 0xffffffffu) {
        FAIL("%s: extended space reads 0x%x (expected 0), absent functions 0x%x (expected all ones)\n", name, ext,
             absent);
        return -1;
    }
    if (works(&victim, name, "after the ECAM accesses") != 0 || works(&bystander, name, "bystander") != 0) return -1;
    printf("pci-malicious: %s -> same registers as the ports, odd accesses ignored ok\n", name);
    return 0;
}

struct mal_case {
    const char* name;
    int (*run)(const char* name);
};

static const struct mal_case cases[] = {
    {"bar-over-ram", c_bar_over_ram},
    {"bar-over-bar", c_bar_over_bar},
    {"msix-table-odd", c_msix_table_odd},
    {"msix-bad-address", c_msix_bad_address},
    {"msix-vector-range", c_msix_vector_range},
    {"msix-masked", c_msix_masked},
    {"notify-range", c_notify_range},
    {"queue-select-range", c_queue_select_range},
    {"config-read-only", c_config_read_only},
    {"ecam", c_ecam},
};

int guest_main(void) {
    const char* cmdline = boot_cmdline();
    const char* p = strstr(cmdline, "pcimal.only=");
    if (p) {
        only = p + 12;
        only_len = 0;
        while (only[only_len] && only[only_len] != ' ') only_len++;
    }
    struct virtio_mmio_entry entries[VIRTIO_MAX_DEVICES];
    const int found = virtio_find_devices(cmdline, entries, VIRTIO_MAX_DEVICES);
    int drives = 0;
    for (int i = 0; i < found && i < VIRTIO_MAX_DEVICES && drives < 2; i++) {
        if (entries[i].pci_slot < 0) continue;
        if (drives == 0) victim_entry = entries[i];
        else bystander_entry = entries[i];
        drives++;
    }
    if (drives < 2) {
        printf("pci-malicious: FAIL: needs two virtio-pci drives (--enable-pci, two --drive), found %d\n", drives);
        return GUEST_FAIL;
    }
    const char* err;
    if ((err = open_drive(&victim, &victim_entry)) || (err = open_drive(&bystander, &bystander_entry))) {
        printf("pci-malicious: FAIL: opening the drives: %s\n", err);
        return GUEST_FAIL;
    }
    if (blk_get_id(&victim) != VIRTIO_BLK_S_OK || blk_get_id(&bystander) != VIRTIO_BLK_S_OK) {
        printf("pci-malicious: FAIL: GET_ID before the cases\n");
        return GUEST_FAIL;
    }
    printf("pci-malicious: victim %s at 00:%02x.0 BAR 0 0x%lx, bystander %s at 00:%02x.0 BAR 0 0x%lx\n", victim.id,
           victim.v.pci.slot, victim.v.pci.bar[0], bystander.id, bystander.v.pci.slot, bystander.v.pci.bar[0]);
    int ran = 0;
    for (unsigned i = 0; i < ARRAY_SIZE(cases); i++) {
        if (only && (strlen(cases[i].name) != only_len || strncmp(cases[i].name, only, only_len) != 0)) continue;
        ran++;
        if (cases[i].run(cases[i].name) != 0) {
            // Whatever the case left behind, the next one starts from a working victim.
            if (recover(cases[i].name) != 0) break;
        }
    }
    if (ran == 0) {
        printf("pci-malicious: FAIL: no case named by pcimal.only\n");
        return GUEST_FAIL;
    }
    if (failures) {
        printf("pci-malicious: FAIL: %d case(s) failed\n", failures);
        return GUEST_FAIL;
    }
    printf("pci-malicious: PASS (%d cases)\n", ran);
    return GUEST_PASS;
}
