// libguest: reader of the Intel MultiProcessor Specification 1.4 table (the VMM's list of CPUs).
#pragma once

#include <stdint.h>

#include "guest_defs.h"

struct mp_cpu {
    uint8_t apic_id;
    uint8_t enabled;  // CPU flags bit 0
    uint8_t is_bsp;   // CPU flags bit 1
};

struct mp_info {
    uint64_t floating_pointer_addr;
    uint64_t config_table_addr;
    uint32_t lapic_addr;
    char oem_id[9];
    char product_id[13];
    unsigned declared_entry_count;  // the table header's entry count
    unsigned entry_count;           // entries actually found within the table length
    unsigned cpu_count;  // processor entries (enabled or not), at most GUEST_MAX_CPUS
    struct mp_cpu cpus[GUEST_MAX_CPUS];
    unsigned ioapic_count;
    uint32_t ioapic_addr;  // of the first I/O APIC entry
    uint8_t ioapic_id;
};

// Finds the MP floating pointer (first KiB of the EBDA, last KiB of base memory 0x9fc00, BIOS
// ROM 0xf0000 - 0xfffff), validates the checksums of the floating pointer and of the
// configuration table (base and extended), and reads the processor and I/O APIC entries (walking
// the table by its length; a wrong entry count in the header is reported in the result, not
// an error here). Returns NULL on success, else what was wrong.
const char* mptable_read(struct mp_info* out);
