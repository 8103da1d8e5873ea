// Test guest "irq_recovery": a virtio-blk driver whose used-buffer interrupt is lost, the way
// nested KVM lost some (issue 13), and that then sleeps until an interrupt comes. The VMM's
// stall watchdog must see the unacknowledged interrupt and raise it again.
//
// How the interrupt is lost: the driver masks its I/O APIC pin, makes one read request
// available and polls the used ring for it; the device completes it and raises its edge
// interrupt, which the masked pin drops. The driver leaves InterruptStatus unacknowledged (it
// never took the interrupt), unmasks the pin and sleeps (`sti; hlt`) with the local APIC timer
// as its only other wake-up, about 17 s away. A device interrupt before the timer: PASS, with
// how long it took; the timer first: FAIL (nobody raised the lost interrupt again).
//
// Command line: the virtio_mmio.device= entry of one virtio-blk device (embervm adds it).
#include "guest.h"
#include "io.h"
#include "irq.h"
#include "lapic.h"
#include "virtio.h"
#include "virtio_blk.h"

#define LVT_MASKED (1u << 16)
#define TIMER_DIVIDE_64 0x9       // divide configuration register: divide by 64
#define TIMER_COUNT (1u << 28)    // x 64 ns at KVM's 1 GHz APIC bus: about 17 s

static struct blk_dev dev;
static struct virtio_blk_req_hdr hdr;
static uint8_t data[4096] __attribute__((aligned(4096)));
static volatile uint8_t status_byte;

int guest_main(void) {
    const char* cmdline = boot_cmdline();
    struct virtio_mmio_entry entries[VIRTIO_MAX_DEVICES];
    const int found = virtio_mmio_parse_cmdline(cmdline, entries, VIRTIO_MAX_DEVICES);
    if (found < 1) {
        printf("irq-recovery: FAIL: no virtio_mmio.device= entry in: %s\n", cmdline);
        return GUEST_FAIL;
    }
    const char* err = blk_open(&dev, &entries[0], VIRTIO_BLK_GUEST_FEATURES, 0);
    if (err) {
        printf("irq-recovery: FAIL: %s\n", err);
        return GUEST_FAIL;
    }
    err = irq_route_gsi(dev.v.gsi);  // local APIC on, pin routed
    if (err) {
        printf("irq-recovery: FAIL: GSI %u: %s\n", dev.v.gsi, err);
        return GUEST_FAIL;
    }
    irq_unroute_gsi(dev.v.gsi);  // masked: the next edge is dropped
    virtio_isr_ack(&dev.v, virtio_isr_read(&dev.v));

    struct virtq* q = &dev.v.vq[0];
    hdr = (struct virtio_blk_req_hdr){VIRTIO_BLK_T_IN, 0, 0};
    status_byte = 0xff;
    const struct virtio_buf bufs[3] = {
        {(uint64_t)(uintptr_t)&hdr, sizeof(hdr), 0},
        {(uint64_t)(uintptr_t)data, sizeof(data), 1},
        {(uint64_t)(uintptr_t)&status_byte, 1, 1},
    };
    if (virtq_add(q, bufs, 3) < 0) {
        printf("irq-recovery: FAIL: no room in the queue\n");
        return GUEST_FAIL;
    }
    virtq_publish(q);
    virtq_kick(&dev.v, q);
    struct virtq_used_elem e;
    const enum virtq_wait_result w = virtq_wait_used(&dev.v, q, &e);
    if (w != VIRTQ_USED || virtq_free_chain(q, e.id) != 0 || status_byte != VIRTIO_BLK_S_OK) {
        printf("irq-recovery: FAIL: the read did not complete (wait result %d, status %u)\n", (int)w, status_byte);
        return GUEST_FAIL;
    }
    // The device publishes the used element first and sets InterruptStatus right after: give it
    // a moment (bounded) to get there.
    uint32_t isr = virtio_isr_read(&dev.v);
    for (const uint64_t start = rdtsc(); !(isr & 1u) && rdtsc() - start < (1ull << 33);) {
        cpu_pause();
        isr = virtio_isr_read(&dev.v);
    }
    printf("irq-recovery: request done with the pin masked, InterruptStatus 0x%x, %lu interrupts so far\n", isr,
           irq_count);
    if (!(isr & 1u /* used buffer */)) {
        printf("irq-recovery: FAIL: the device did not set the used-buffer bit\n");
        return GUEST_FAIL;
    }

    // Leave InterruptStatus as it is, unmask, and sleep until an interrupt or the timer.
    const uint64_t irqs_before = irq_count;
    lapic_write(LAPIC_TIMER_DIVIDE, TIMER_DIVIDE_64);
    lapic_write(LAPIC_LVT_TIMER, IRQ_VECTOR);  // one-shot
    lapic_write(LAPIC_TIMER_INITIAL, TIMER_COUNT);
    const uint64_t t0 = rdtsc();
    irq_route_gsi(dev.v.gsi);
    while (irq_count == irqs_before) irq_wait();
    const uint64_t cycles = rdtsc() - t0;
    const uint32_t timer_left = lapic_read(LAPIC_TIMER_CURRENT);
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | IRQ_VECTOR);
    lapic_write(LAPIC_TIMER_INITIAL, 0);
    irq_unroute_gsi(dev.v.gsi);
    if (timer_left == 0) {
        printf("irq-recovery: FAIL: no device interrupt within %lu TSC cycles (the timer ran out): the lost "
               "interrupt was not raised again\n",
               cycles);
        return GUEST_FAIL;
    }
    const uint32_t ack = virtio_isr_read(&dev.v);
    virtio_isr_ack(&dev.v, ack);
    printf("irq-recovery: the interrupt came again after %lu TSC cycles (%u%% of the timer left), "
           "InterruptStatus 0x%x\n",
           cycles, (uint32_t)((uint64_t)timer_left * 100 / TIMER_COUNT), ack);
    printf("irq-recovery: PASS\n");
    return GUEST_PASS;
}
