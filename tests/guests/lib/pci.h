// libguest: a minimal PCI driver for test guests: configuration space through the port mechanism
// (address at 0xCF8, data at 0xCFC-0xCFF) or the ECAM window (pci_ecam_*()), bus 0 enumeration, BAR sizing and placement, the
// capability list, and MSI-X (table entries aimed at this CPU's local APIC).
//
//   pci_scan()            every function on bus 0 (vendor ID not 0xFFFF), with its BARs sized
//   pci_bar_size()        writes all ones to a BAR with memory decoding off, reads the size back,
//                         restores the BAR
//   pci_bar_move()        memory decoding off, the new address, decoding back on
//   pci_find_cap()        the capability list walk (bounded, offsets checked)
//   pci_msix_*()          the MSI-X capability: table and PBA found through their BARs, entries
//                         programmed with address 0xFEE00000 | apic id << 12 and a vector whose
//                         IDT stub counts it in msi_count[] (entry64.S)
//
// Only bus 0 is scanned (embervm has one root bus); memory BARs are 32- or 64-bit, I/O BARs are
// recorded as absent.
#pragma once

#include <stdint.h>

#include "guest_defs.h"

#define PCI_MAX_FUNCTIONS 32
#define PCI_NUM_BARS 6

// Configuration header offsets (type 0).
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION 0x08
#define PCI_CLASS 0x09  // 24 bits: programming interface, subclass, class
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID 0x2e
#define PCI_CAP_PTR 0x34

#define PCI_COMMAND_IO 0x1
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_STATUS_CAP_LIST 0x10

#define PCI_BAR_IO 0x1
#define PCI_BAR_TYPE_MASK 0x6
#define PCI_BAR_TYPE_64 0x4

#define PCI_CAP_ID_MSIX 0x11
#define PCI_CAP_ID_VENDOR 0x09

// MSI-X capability (offsets from the capability) and table entries.
#define PCI_MSIX_CONTROL 2
#define PCI_MSIX_TABLE 4
#define PCI_MSIX_PBA 8
#define PCI_MSIX_ENABLE 0x8000
#define PCI_MSIX_FUNCTION_MASK 0x4000
#define PCI_MSIX_ENTRY_SIZE 16
#define PCI_MSIX_ENTRY_ADDR_LO 0
#define PCI_MSIX_ENTRY_ADDR_HI 4
#define PCI_MSIX_ENTRY_DATA 8
#define PCI_MSIX_ENTRY_CONTROL 12
#define PCI_MSIX_ENTRY_MASKED 1

// The IDT vectors libguest counts MSIs on (guest_defs.h: MSI_VECTOR_BASE + i in msi_count[i]).
extern volatile uint64_t msi_count[MSI_VECTORS];

struct pci_fn {
    uint8_t slot, function;
    uint16_t vendor_id, device_id;
    uint32_t class_code;
    uint64_t bar[PCI_NUM_BARS];       // memory BARs' addresses as found (0: none, an I/O BAR)
    uint64_t bar_size[PCI_NUM_BARS];  // 0: not implemented
    uint8_t bar64[PCI_NUM_BARS];      // a 64-bit BAR (takes the next register too)
};

// Configuration space access of bus 0 (offset < 256; widths 1, 2, 4, naturally aligned).
uint32_t pci_cfg_read32(uint8_t slot, uint8_t fn, uint16_t off);
uint16_t pci_cfg_read16(uint8_t slot, uint8_t fn, uint16_t off);
uint8_t pci_cfg_read8(uint8_t slot, uint8_t fn, uint16_t off);
void pci_cfg_write32(uint8_t slot, uint8_t fn, uint16_t off, uint32_t v);
void pci_cfg_write16(uint8_t slot, uint8_t fn, uint16_t off, uint16_t v);
void pci_cfg_write8(uint8_t slot, uint8_t fn, uint16_t off, uint8_t v);

// The same registers through bus 0's ECAM window: 4 KiB per function at PCI_ECAM_BASE +
// (slot << 15 | fn << 12 | off), one MMIO access of the given width. The window's address is
// fixed (boot/layout.h's kPciEcamStart, where embervm always puts it with --enable-pci; a
// Linux guest finds it in ACPI's MCFG). pci_ecam_addr() is the address of a register, for
// mmio_read8/16/32() and mmio_write*() (io.h) of any width.
#define PCI_ECAM_BASE 0xe0000000ull
#define PCI_ECAM_SIZE 0x100000ull
uint64_t pci_ecam_addr(uint8_t slot, uint8_t fn, uint16_t off);
uint32_t pci_ecam_read32(uint8_t slot, uint8_t fn, uint16_t off);
void pci_ecam_write32(uint8_t slot, uint8_t fn, uint16_t off, uint32_t v);

// Enumerates bus 0 (functions 1-7 only of multi-function devices). Fills at most `max`; returns
// how many were found.
int pci_scan(struct pci_fn* out, int max);
// The function at `slot`.0 (vendor ID not 0xFFFF): 0 and *out filled, or -1.
int pci_read_fn(uint8_t slot, uint8_t fn, struct pci_fn* out);

// Sizes BAR `bar` (restoring its address and the command register). Returns the size (0: not
// implemented or an I/O BAR); sets *is64.
uint64_t pci_bar_size(uint8_t slot, uint8_t fn, unsigned bar, uint8_t* is64);
// The BAR's current address (memory BARs; 64-bit ones read from both registers).
uint64_t pci_bar_address(uint8_t slot, uint8_t fn, unsigned bar);
// Moves memory BAR `bar` to `addr` with memory decoding off meanwhile; decoding on afterwards.
void pci_bar_move(struct pci_fn* f, unsigned bar, uint64_t addr);
void pci_enable_memory(const struct pci_fn* f, int on);

// The first capability with `id` after config offset `after` (0: from the start of the list).
// Returns its offset, or 0 if there is none (or the list is malformed: offsets below 0x40,
// unaligned, or a loop).
uint8_t pci_find_cap(uint8_t slot, uint8_t fn, uint8_t id, uint8_t after);

// ---- MSI-X ----
struct pci_msix {
    uint8_t cap;           // config offset of the capability (0: none)
    uint16_t num_vectors;  // table size
    uint64_t table, pba;   // guest-physical addresses (from the BARs as they are now)
    uint32_t table_bar, table_off, pba_bar, pba_off;
};
// Reads the MSI-X capability of `f`. Returns NULL, or what is wrong.
const char* pci_msix_probe(const struct pci_fn* f, struct pci_msix* m);
// Recomputes m->table / m->pba after a BAR moved.
void pci_msix_update(const struct pci_fn* f, struct pci_msix* m);
// Programs entry `i` to deliver IDT vector `vector` to this CPU's local APIC, and unmasks it
// (masked = 0) or leaves it masked.
void pci_msix_set_entry(const struct pci_msix* m, uint16_t i, uint8_t vector, int masked);
void pci_msix_mask_entry(const struct pci_msix* m, uint16_t i, int masked);
// Enables MSI-X (enable bit on, function mask off) or disables it.
void pci_msix_enable(const struct pci_fn* f, const struct pci_msix* m, int on);
// The pending bit of entry `i` (the PBA).
int pci_msix_pending(const struct pci_msix* m, uint16_t i);

// msi_count[index] once it passed `seen` (interrupts pending are taken), or after `max_cycles`
// TSC cycles without: a VMM publishes a used element before it signals the vector, and an
// irqfd may inject a little later, so a count that must not move is also given that long.
uint64_t msi_wait(int index, uint64_t seen, uint64_t max_cycles);
// How long to wait for an MSI or a pending bit that must come (seconds on any host: a VMM
// publishes a used element before it signals, and on a loaded or emulated host the signal can
// follow the element by tens of milliseconds) and for a count that must not move (~50 ms).
#define MSI_EXPECT_CYCLES (1ull << 33)
#define MSI_QUIET_CYCLES (1ull << 27)
// Prints where MSI `index` stands in this CPU's local APIC (IRR, ISR, TPR, PPR, and the highest
// vector in service), after `what`: for a failure message when an MSI did not come.
void msi_print_lapic(const char* what, int index);
// Waits up to MSI_EXPECT_CYCLES for the pending bit of entry `i`; returns it.
int pci_msix_pending_wait(const struct pci_msix* m, uint16_t i);

// Hands out `n` consecutive MSI vectors (indices into msi_count; IDT vector MSI_VECTOR_BASE +
// index). Returns the first index, or -1 if they ran out.
int msi_alloc(unsigned n);
