// libguest: PCI configuration space, enumeration, BARs, capabilities and MSI-X (see pci.h).
#include "pci.h"

#include "io.h"
#include "irq.h"
#include "lapic.h"
#include "str.h"

#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CONFIG_DATA 0xcfc

volatile uint64_t msi_count[MSI_VECTORS];  // incremented by the msi stubs (entry64.S)

static void select_reg(uint8_t slot, uint8_t fn, uint16_t off) {
    outl(PCI_CONFIG_ADDRESS, 0x80000000u | (uint32_t)(slot & 31) << 11 | (uint32_t)(fn & 7) << 8 | (off & 0xfc));
}

uint32_t pci_cfg_read32(uint8_t slot, uint8_t fn, uint16_t off) {
    select_reg(slot, fn, off);
    return inl(PCI_CONFIG_DATA);
}

uint16_t pci_cfg_read16(uint8_t slot, uint8_t fn, uint16_t off) {
    select_reg(slot, fn, off);
    return inw((uint16_t)(PCI_CONFIG_DATA + (off & 2)));
}

uint8_t pci_cfg_read8(uint8_t slot, uint8_t fn, uint16_t off) {
    select_reg(slot, fn, off);
    return inb((uint16_t)(PCI_CONFIG_DATA + (off & 3)));
}

void pci_cfg_write32(uint8_t slot, uint8_t fn, uint16_t off, uint32_t v) {
    select_reg(slot, fn, off);
    outl(PCI_CONFIG_DATA, v);
}

void pci_cfg_write16(uint8_t slot, uint8_t fn, uint16_t off, uint16_t v) {
    select_reg(slot, fn, off);
    outw((uint16_t)(PCI_CONFIG_DATA + (off & 2)), v);
}

void pci_cfg_write8(uint8_t slot, uint8_t fn, uint16_t off, uint8_t v) {
    select_reg(slot, fn, off);
    outb((uint16_t)(PCI_CONFIG_DATA + (off & 3)), v);
}

uint64_t pci_ecam_addr(uint8_t slot, uint8_t fn, uint16_t off) {
    return PCI_ECAM_BASE | (uint64_t)(slot & 31) << 15 | (uint64_t)(fn & 7) << 12 | (off & 0xfff);
}

uint32_t pci_ecam_read32(uint8_t slot, uint8_t fn, uint16_t off) { return mmio_read32(pci_ecam_addr(slot, fn, off)); }

void pci_ecam_write32(uint8_t slot, uint8_t fn, uint16_t off, uint32_t v) {
    mmio_write32(pci_ecam_addr(slot, fn, off), v);
}

uint64_t pci_bar_address(uint8_t slot, uint8_t fn, unsigned bar) {
    const uint32_t lo = pci_cfg_read32(slot, fn, (uint16_t)(PCI_BAR0 + 4 * bar));
    if (lo & PCI_BAR_IO) return 0;
    uint64_t addr = lo & ~0xfu;
    if ((lo & PCI_BAR_TYPE_MASK) == PCI_BAR_TYPE_64 && bar + 1 < PCI_NUM_BARS) {
        addr |= (uint64_t)pci_cfg_read32(slot, fn, (uint16_t)(PCI_BAR0 + 4 * (bar + 1))) << 32;
    }
    return addr;
}

uint64_t pci_bar_size(uint8_t slot, uint8_t fn, unsigned bar, uint8_t* is64) {
    *is64 = 0;
    const uint16_t reg = (uint16_t)(PCI_BAR0 + 4 * bar);
    const uint32_t lo = pci_cfg_read32(slot, fn, reg);
    if (lo & PCI_BAR_IO) return 0;
    const int wide = (lo & PCI_BAR_TYPE_MASK) == PCI_BAR_TYPE_64 && bar + 1 < PCI_NUM_BARS;
    const uint16_t command = pci_cfg_read16(slot, fn, PCI_COMMAND);
    pci_cfg_write16(slot, fn, PCI_COMMAND, (uint16_t)(command & ~(PCI_COMMAND_MEMORY | PCI_COMMAND_IO)));
    pci_cfg_write32(slot, fn, reg, 0xffffffffu);
    uint64_t mask = pci_cfg_read32(slot, fn, reg) & ~0xfull;
    uint32_t hi = 0;
    if (wide) {
        hi = pci_cfg_read32(slot, fn, (uint16_t)(reg + 4));
        pci_cfg_write32(slot, fn, (uint16_t)(reg + 4), 0xffffffffu);
        mask |= (uint64_t)pci_cfg_read32(slot, fn, (uint16_t)(reg + 4)) << 32;
        pci_cfg_write32(slot, fn, (uint16_t)(reg + 4), hi);
    } else {
        mask |= 0xffffffff00000000ull;
    }
    pci_cfg_write32(slot, fn, reg, lo);
    pci_cfg_write16(slot, fn, PCI_COMMAND, command);
    *is64 = (uint8_t)wide;
    // Nothing writable: not implemented (a 32-bit BAR's upper half above was filled in only
    // to make the two's complement come out right).
    if ((uint32_t)mask == 0 && (!wide || (mask >> 32) == 0)) return 0;
    return ~mask + 1;
}

int pci_read_fn(uint8_t slot, uint8_t fn, struct pci_fn* out) {
    const uint16_t vendor = pci_cfg_read16(slot, fn, PCI_VENDOR_ID);
    if (vendor == 0xffff) return -1;
    memset(out, 0, sizeof(*out));
    out->slot = slot;
    out->function = fn;
    out->vendor_id = vendor;
    out->device_id = pci_cfg_read16(slot, fn, PCI_DEVICE_ID);
    out->class_code = pci_cfg_read32(slot, fn, PCI_REVISION) >> 8;
    if ((pci_cfg_read8(slot, fn, PCI_HEADER_TYPE) & 0x7f) != 0) return 0;  // a bridge: no BARs here
    for (unsigned b = 0; b < PCI_NUM_BARS; b++) {
        out->bar_size[b] = pci_bar_size(slot, fn, b, &out->bar64[b]);
        if (out->bar_size[b]) out->bar[b] = pci_bar_address(slot, fn, b);
        if (out->bar64[b]) b++;  // the upper half
    }
    return 0;
}

int pci_scan(struct pci_fn* out, int max) {
    int n = 0;
    for (uint8_t slot = 0; slot < 32; slot++) {
        for (uint8_t fn = 0; fn < 8; fn++) {
            struct pci_fn f;
            if (pci_read_fn(slot, fn, &f) != 0) {
                if (fn == 0) break;
                continue;
            }
            if (n < max) out[n] = f;
            n++;
            if (fn == 0 && !(pci_cfg_read8(slot, 0, PCI_HEADER_TYPE) & 0x80)) break;  // single function
        }
    }
    return n < max ? n : max;
}

void pci_enable_memory(const struct pci_fn* f, int on) {
    uint16_t command = pci_cfg_read16(f->slot, f->function, PCI_COMMAND);
    command = on ? (uint16_t)(command | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER) : (uint16_t)(command & ~PCI_COMMAND_MEMORY);
    pci_cfg_write16(f->slot, f->function, PCI_COMMAND, command);
}

void pci_bar_move(struct pci_fn* f, unsigned bar, uint64_t addr) {
    const uint16_t reg = (uint16_t)(PCI_BAR0 + 4 * bar);
    pci_enable_memory(f, 0);
    const uint32_t flags = pci_cfg_read32(f->slot, f->function, reg) & 0xf;
    pci_cfg_write32(f->slot, f->function, reg, (uint32_t)addr | flags);
    if (f->bar64[bar]) pci_cfg_write32(f->slot, f->function, (uint16_t)(reg + 4), (uint32_t)(addr >> 32));
    pci_enable_memory(f, 1);
    f->bar[bar] = pci_bar_address(f->slot, f->function, bar);
}

uint8_t pci_find_cap(uint8_t slot, uint8_t fn, uint8_t id, uint8_t after) {
    if (!(pci_cfg_read16(slot, fn, PCI_STATUS) & PCI_STATUS_CAP_LIST)) return 0;
    uint8_t off = after ? pci_cfg_read8(slot, fn, (uint16_t)(after + 1)) : pci_cfg_read8(slot, fn, PCI_CAP_PTR);
    // At most (256 - 64) / 4 capabilities fit: more steps mean a loop.
    for (int steps = 0; off != 0 && steps < 48; steps++) {
        if (off < 0x40 || (off & 3) != 0) return 0;
        if (pci_cfg_read8(slot, fn, off) == id) return off;
        off = pci_cfg_read8(slot, fn, (uint16_t)(off + 1));
    }
    return 0;
}

// ---- MSI-X ----

void pci_msix_update(const struct pci_fn* f, struct pci_msix* m) {
    m->table = f->bar[m->table_bar] + m->table_off;
    m->pba = f->bar[m->pba_bar] + m->pba_off;
}

const char* pci_msix_probe(const struct pci_fn* f, struct pci_msix* m) {
    memset(m, 0, sizeof(*m));
    m->cap = pci_find_cap(f->slot, f->function, PCI_CAP_ID_MSIX, 0);
    if (!m->cap) return "no MSI-X capability";
    m->num_vectors = (uint16_t)((pci_cfg_read16(f->slot, f->function, (uint16_t)(m->cap + PCI_MSIX_CONTROL)) & 0x7ff) + 1);
    const uint32_t table = pci_cfg_read32(f->slot, f->function, (uint16_t)(m->cap + PCI_MSIX_TABLE));
    const uint32_t pba = pci_cfg_read32(f->slot, f->function, (uint16_t)(m->cap + PCI_MSIX_PBA));
    m->table_bar = table & 7;
    m->table_off = table & ~7u;
    m->pba_bar = pba & 7;
    m->pba_off = pba & ~7u;
    if (m->table_bar >= PCI_NUM_BARS || !f->bar_size[m->table_bar]) return "the MSI-X table's BIR names no memory BAR";
    if (m->pba_bar >= PCI_NUM_BARS || !f->bar_size[m->pba_bar]) return "the MSI-X PBA's BIR names no memory BAR";
    if ((uint64_t)m->table_off + (uint64_t)m->num_vectors * PCI_MSIX_ENTRY_SIZE > f->bar_size[m->table_bar])
        return "the MSI-X table does not fit its BAR";
    if ((uint64_t)m->pba_off + ((m->num_vectors + 63u) / 64u) * 8u > f->bar_size[m->pba_bar])
        return "the MSI-X PBA does not fit its BAR";
    pci_msix_update(f, m);
    return NULL;
}

void pci_msix_set_entry(const struct pci_msix* m, uint16_t i, uint8_t vector, int masked) {
    const uint64_t e = m->table + (uint64_t)i * PCI_MSIX_ENTRY_SIZE;
    mmio_write32(e + PCI_MSIX_ENTRY_CONTROL, PCI_MSIX_ENTRY_MASKED);
    mmio_write32(e + PCI_MSIX_ENTRY_ADDR_LO, (uint32_t)LAPIC_BASE | (uint32_t)lapic_id() << 12);
    mmio_write32(e + PCI_MSIX_ENTRY_ADDR_HI, 0);
    mmio_write32(e + PCI_MSIX_ENTRY_DATA, vector);  // fixed delivery, edge
    mmio_write32(e + PCI_MSIX_ENTRY_CONTROL, masked ? PCI_MSIX_ENTRY_MASKED : 0);
}

void pci_msix_mask_entry(const struct pci_msix* m, uint16_t i, int masked) {
    mmio_write32(m->table + (uint64_t)i * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_CONTROL,
                 masked ? PCI_MSIX_ENTRY_MASKED : 0);
}

void pci_msix_enable(const struct pci_fn* f, const struct pci_msix* m, int on) {
    const uint16_t reg = (uint16_t)(m->cap + PCI_MSIX_CONTROL);
    uint16_t control = pci_cfg_read16(f->slot, f->function, reg);
    control = (uint16_t)(control & ~(PCI_MSIX_ENABLE | PCI_MSIX_FUNCTION_MASK));
    if (on) control |= PCI_MSIX_ENABLE;
    pci_cfg_write16(f->slot, f->function, reg, control);
}

int pci_msix_pending(const struct pci_msix* m, uint16_t i) {
    return (int)((mmio_read64(m->pba + 8u * (i / 64u)) >> (i % 64u)) & 1);
}

void msi_print_lapic(const char* what, int index) {
    const uint8_t v = (uint8_t)(MSI_VECTOR_BASE + index);
    int in_service = -1;
    for (int reg = 7; reg >= 0 && in_service < 0; reg--) {
        const uint32_t bits = lapic_read(LAPIC_ISR + 0x10u * (uint32_t)reg);
        if (bits) in_service = reg * 32 + 31 - __builtin_clz(bits);
    }
    printf("%s: MSI vector 0x%x: LAPIC IRR %d ISR %d, TPR 0x%x PPR 0x%x, highest in service %d, count %lu\n", what,
           v, lapic_vector_bit(LAPIC_IRR, v), lapic_vector_bit(LAPIC_ISR, v), lapic_read(LAPIC_TPR),
           lapic_read(LAPIC_PPR), in_service, msi_count[index]);
}

int pci_msix_pending_wait(const struct pci_msix* m, uint16_t i) {
    const uint64_t start = rdtsc();
    while (!pci_msix_pending(m, i) && rdtsc() - start < MSI_EXPECT_CYCLES) cpu_pause();
    return pci_msix_pending(m, i);
}

uint64_t msi_wait(int index, uint64_t seen, uint64_t max_cycles) {
    const uint64_t start = rdtsc();
    do {
        irq_take_pending();
        if (msi_count[index] > seen) break;
        cpu_pause();
    } while (rdtsc() - start < max_cycles);
    return msi_count[index];
}

static unsigned msi_next;

int msi_alloc(unsigned n) {
    if (n > MSI_VECTORS - msi_next) return -1;
    const int first = (int)msi_next;
    msi_next += n;
    return first;
}
