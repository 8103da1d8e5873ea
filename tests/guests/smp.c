// Test guest "smp": starts every vCPU the MP table lists and checks that each one came up.
//
// The boot CPU reads the MP table (checksums validated), sends INIT-SIPI-SIPI to every other
// enabled processor entry; each AP goes 16 -> 32 -> 64-bit through libguest's trampoline, prints
// "cpu <apic id> online" and checks in. The boot CPU waits (bounded) for all of them and prints
// "smp: N of N cpus online" (GUEST_PASS), or which APIC IDs are missing (GUEST_FAIL).
#include "guest.h"
#include "io.h"
#include "lapic.h"
#include "mptable.h"
#include "smp.h"
#include "spinlock.h"
#include "str.h"

// How long the boot CPU waits for the APs: until BOTH bounds are reached, so the wait is long
// enough where instructions are slow (here every guest kernel-mode instruction is emulated,
// ~0.25 M/s: 1 M iterations take well over 10 s) and where they are fast (2^31 TSC cycles:
// about a second).
#define WAIT_MIN_ITERATIONS 1000000u
#define WAIT_MIN_TSC_CYCLES (1ull << 31)

static volatile uint32_t aps_online;
static volatile uint8_t online[256];  // by APIC ID

static void ap_main(void) {
    const uint8_t id = lapic_id();
    printf("cpu %u online\n", id);
    online[id] = 1;
    atomic_fetch_add32(&aps_online, 1);
}

static void wait_for_aps(uint32_t expected) {
    const uint64_t start = rdtsc();
    for (uint32_t i = 0; atomic_read32(&aps_online) < expected; i++) {
        if (i >= WAIT_MIN_ITERATIONS && (i & 1023) == 0 && rdtsc() - start >= WAIT_MIN_TSC_CYCLES) return;
        cpu_pause();
    }
}

int guest_main(void) {
    if (lapic_enable() != 0) {
        printf("smp: FAIL: the local APIC is in x2APIC mode\n");
        return GUEST_FAIL;
    }
    const uint8_t bsp = lapic_id();

    static struct mp_info mp;
    const char* err = mptable_read(&mp);
    if (err) {
        printf("smp: FAIL: %s\n", err);
        return GUEST_FAIL;
    }
    char ids[8 * GUEST_MAX_CPUS + 1];
    ids[0] = '\0';  // (no "= \"\"": GCC zero-fills the whole array, with `rep stos`)
    size_t ids_len = 0;
    unsigned enabled = 0;
    int bsp_listed = 0;
    for (unsigned i = 0; i < mp.cpu_count; i++) {
        const struct mp_cpu* c = &mp.cpus[i];
        ids_len += (size_t)snprintf(ids + ids_len, sizeof(ids) - ids_len, " %u%s%s", c->apic_id,
                                    c->is_bsp ? "(bsp)" : "", c->enabled ? "" : "(disabled)");
        if (ids_len >= sizeof(ids)) ids_len = sizeof(ids) - 1;
        if (c->enabled) enabled++;
        if (c->apic_id == bsp && c->enabled && c->is_bsp) bsp_listed = 1;
    }
    printf("smp: MP table at 0x%lx, config table at 0x%lx (OEM '%s', product '%s'), LAPIC 0x%x\n",
           mp.floating_pointer_addr, mp.config_table_addr, mp.oem_id, mp.product_id, mp.lapic_addr);
    printf("smp: %u processor entries, APIC IDs:%s; %u I/O APIC(s), first at 0x%x\n", mp.cpu_count, ids,
           mp.ioapic_count, mp.ioapic_addr);
    if (mp.declared_entry_count != mp.entry_count) {
        // A VMM must get this right. QEMU microvm's firmware (qboot) leaves it 0: boot this guest
        // there with "mptable=lenient" on the command line.
        const int lenient = cmdline_has_word(boot_cmdline(), "mptable=lenient");
        printf("smp: %s: the MP table header says %u entries, the table holds %u\n", lenient ? "warning" : "FAIL",
               mp.declared_entry_count, mp.entry_count);
        if (!lenient) return GUEST_FAIL;
    }
    if (mp.lapic_addr != LAPIC_BASE) {
        printf("smp: FAIL: MP table LAPIC address 0x%x, expected 0x%lx\n", mp.lapic_addr, (uint64_t)LAPIC_BASE);
        return GUEST_FAIL;
    }
    if (!bsp_listed) {
        printf("smp: FAIL: the boot CPU (APIC ID %u) is not an enabled BSP entry of the MP table\n", bsp);
        return GUEST_FAIL;
    }

    printf("cpu %u online\n", bsp);
    online[bsp] = 1;
    for (unsigned i = 0; i < mp.cpu_count; i++) {
        const struct mp_cpu* c = &mp.cpus[i];
        if (!c->enabled || c->apic_id == bsp) continue;
        if (smp_start_ap(c->apic_id, ap_main) != 0) {
            printf("smp: IPI to APIC ID %u was not delivered (ICR busy)\n", c->apic_id);
        }
    }
    wait_for_aps(enabled - 1);

    const unsigned up = atomic_read32(&aps_online) + 1;
    if (up == enabled) {
        printf("smp: %u of %u cpus online\n", up, enabled);
        return GUEST_PASS;
    }
    char missing[4 * GUEST_MAX_CPUS + 1];
    missing[0] = '\0';
    size_t missing_len = 0;
    for (unsigned i = 0; i < mp.cpu_count; i++) {
        const struct mp_cpu* c = &mp.cpus[i];
        if (!c->enabled || online[c->apic_id]) continue;
        missing_len += (size_t)snprintf(missing + missing_len, sizeof(missing) - missing_len, " %u", c->apic_id);
        if (missing_len >= sizeof(missing)) missing_len = sizeof(missing) - 1;
    }
    printf("smp: FAIL: %u of %u cpus online; missing APIC IDs:%s\n", up, enabled, missing);
    return GUEST_FAIL;
}
