// libguest: MP table reader (see mptable.h).
#include "mptable.h"

#include "guest.h"
#include "io.h"
#include "str.h"

#define MPF_SIGNATURE 0x5f504d5f  // "_MP_"
#define MPC_SIGNATURE 0x504d4350  // "PCMP"
#define BDA_EBDA_SEGMENT 0x40e

#define MP_ENTRY_PROCESSOR 0
#define MP_ENTRY_BUS 1
#define MP_ENTRY_IOAPIC 2
#define MP_ENTRY_IO_INTERRUPT 3
#define MP_ENTRY_LOCAL_INTERRUPT 4

struct mp_floating_pointer {
    uint32_t signature;
    uint32_t physptr;
    uint8_t length;  // in 16-byte units
    uint8_t spec_rev;
    uint8_t checksum;
    uint8_t feature[5];
} GUEST_PACKED;

struct mp_config_table {
    uint32_t signature;
    uint16_t base_length;
    uint8_t spec_rev;
    uint8_t checksum;
    char oem_id[8];
    char product_id[12];
    uint32_t oem_table_ptr;
    uint16_t oem_table_size;
    uint16_t entry_count;
    uint32_t lapic_addr;
    uint16_t ext_length;
    uint8_t ext_checksum;
    uint8_t reserved;
} GUEST_PACKED;

struct mp_processor_entry {
    uint8_t type;
    uint8_t apic_id;
    uint8_t apic_version;
    uint8_t cpu_flags;
    uint32_t signature;
    uint32_t feature_flags;
    uint32_t reserved[2];
} GUEST_PACKED;

struct mp_ioapic_entry {
    uint8_t type;
    uint8_t id;
    uint8_t version;
    uint8_t flags;
    uint32_t addr;
} GUEST_PACKED;

static uint8_t sum_bytes(const volatile uint8_t* p, uint32_t n) {
    uint8_t s = 0;
    for (uint32_t i = 0; i < n; i++) s = (uint8_t)(s + p[i]);
    return s;
}

static const struct mp_floating_pointer* scan(uint64_t start, uint64_t length) {
    for (uint64_t a = start; a + 16 <= start + length; a += 16) {
        const struct mp_floating_pointer* fp = phys_ptr(a);
        if (fp->signature == MPF_SIGNATURE && fp->length == 1 && sum_bytes((const uint8_t*)fp, 16) == 0) {
            return fp;
        }
    }
    return NULL;
}

static const struct mp_floating_pointer* find_floating_pointer(void) {
    const uint64_t ebda = (uint64_t)*(const volatile uint16_t*)phys_ptr(BDA_EBDA_SEGMENT) << 4;
    const struct mp_floating_pointer* fp = NULL;
    if (ebda >= 0x80000 && ebda < 0xa0000) fp = scan(ebda, 0x400);
    if (!fp) fp = scan(0x9fc00, 0x400);
    if (!fp) fp = scan(0xf0000, 0x10000);
    return fp;
}

static void copy_id(char* dst, const char* src, size_t n) {
    memcpy(dst, src, n);
    dst[n] = '\0';
    while (n > 0 && dst[n - 1] == ' ') dst[--n] = '\0';
}

const char* mptable_read(struct mp_info* out) {
    memset(out, 0, sizeof(*out));
    const struct mp_floating_pointer* fp = find_floating_pointer();
    if (!fp) return "no MP floating pointer (\"_MP_\" with a valid checksum) found";
    out->floating_pointer_addr = (uint64_t)(uintptr_t)fp;
    if (fp->feature[0] != 0) return "MP floating pointer asks for a default configuration (no table)";
    if (fp->physptr == 0 || fp->physptr >= 0x100000) return "MP floating pointer has no configuration table below 1 MiB";

    const struct mp_config_table* mpc = phys_ptr(fp->physptr);
    out->config_table_addr = fp->physptr;
    if (mpc->signature != MPC_SIGNATURE) return "MP configuration table has no \"PCMP\" signature";
    if (mpc->base_length < sizeof(*mpc) || fp->physptr + mpc->base_length + mpc->ext_length > 0x100000) {
        return "MP configuration table length is out of range";
    }
    if (sum_bytes((const uint8_t*)mpc, mpc->base_length) != 0) return "MP configuration table checksum is wrong";
    if (mpc->ext_length != 0 &&
        (uint8_t)(sum_bytes((const uint8_t*)mpc + mpc->base_length, mpc->ext_length) + mpc->ext_checksum) != 0) {
        return "MP extended table checksum is wrong";
    }
    out->lapic_addr = mpc->lapic_addr;
    copy_id(out->oem_id, mpc->oem_id, sizeof(mpc->oem_id));
    copy_id(out->product_id, mpc->product_id, sizeof(mpc->product_id));

    // Walk the entries by the table length, as Linux does, and count them: the header's entry
    // count is reported, not trusted (qboot, QEMU microvm's firmware, leaves it 0).
    out->declared_entry_count = mpc->entry_count;
    const uint8_t* p = (const uint8_t*)(mpc + 1);
    const uint8_t* end = (const uint8_t*)mpc + mpc->base_length;
    while (p < end) {
        if (p[0] > MP_ENTRY_LOCAL_INTERRUPT) return "MP configuration table has an entry of unknown type";
        const unsigned size = p[0] == MP_ENTRY_PROCESSOR ? 20 : 8;
        if (p + size > end) return "MP configuration table entry runs past the table";
        if (p[0] == MP_ENTRY_PROCESSOR) {
            const struct mp_processor_entry* e = (const struct mp_processor_entry*)p;
            if (out->cpu_count == GUEST_MAX_CPUS) return "MP table lists more CPUs than this guest supports";
            out->cpus[out->cpu_count++] = (struct mp_cpu){e->apic_id, e->cpu_flags & 1, (e->cpu_flags >> 1) & 1};
        } else if (p[0] == MP_ENTRY_IOAPIC) {
            const struct mp_ioapic_entry* e = (const struct mp_ioapic_entry*)p;
            if (out->ioapic_count++ == 0) {
                out->ioapic_id = e->id;
                out->ioapic_addr = e->addr;
            }
        }
        out->entry_count++;
        p += size;
    }
    return NULL;
}
