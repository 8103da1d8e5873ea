// Test guest "ticker": prints "tick N" about every 2^24 TSC cycles (a few ms), forever; the host
// ends it. Shows whether the guest makes progress (pause / resume tests, the embedding example).
//
// It also watches its PS/2 keyboard (the i8042, IRQ 1 routed through the I/O APIC): it reads
// one byte from port 0x60 per keyboard interrupt, the way an interrupt-driven driver does, and
// prints each as "ticker: kbd 0xNN". Once Ctrl, Alt and Del are down together it prints
// "ticker: ctrl-alt-del" and resets the machine through the i8042 (command 0xFE to port 0x64,
// what Linux's `reboot=k` does); embervm then ends with status 0 (exit reason GuestReset). If the
// reset does not end the VM the guest exits with GUEST_FAIL.
//
// Scancodes: set 1 while the controller translates (command byte XLATE, on at power-on), set 2
// otherwise; `ticker.no_xlate` on the command line turns translation off first. The ready line
// says which, and how the guest was booted: "ticker: ready (boot protocol pvh, scancode set 1)".
#include "guest.h"
#include "io.h"
#include "irq.h"
#include "str.h"

#define I8042_DATA 0x60
#define I8042_STATUS 0x64  // read: status; write: controller command
#define I8042_STATUS_OBF 0x01  // a byte waits in the output buffer
#define I8042_STATUS_IBF 0x02  // the controller has not taken the last write yet
#define I8042_CMD_READ_CB 0x20
#define I8042_CMD_WRITE_CB 0x60
#define I8042_CMD_RESET 0xfe
#define I8042_CB_XLATE 0x40
#define KBD_GSI 1
#define TICK_CYCLES (1ull << 24)

static int i8042_wait(uint8_t mask, uint8_t want) {
    for (int i = 0; i < 1000000; i++) {
        if ((inb(I8042_STATUS) & mask) == want) return 0;
        cpu_pause();
    }
    return -1;
}

// Reads the controller's command byte (the reply is polled: controller replies raise no IRQ).
static int i8042_read_command_byte(void) {
    if (i8042_wait(I8042_STATUS_IBF, 0) != 0) return -1;
    outb(I8042_STATUS, I8042_CMD_READ_CB);
    if (i8042_wait(I8042_STATUS_OBF, I8042_STATUS_OBF) != 0) return -1;
    return inb(I8042_DATA);
}

static int i8042_write_command_byte(uint8_t cb) {
    if (i8042_wait(I8042_STATUS_IBF, 0) != 0) return -1;
    outb(I8042_STATUS, I8042_CMD_WRITE_CB);
    if (i8042_wait(I8042_STATUS_IBF, 0) != 0) return -1;
    outb(I8042_DATA, cb);
    return 0;
}

// Which of Ctrl, Alt and Del are down, from the scancodes read so far.
struct keyboard {
    int set;           // 1 or 2
    int extended;      // the last byte was the 0xE0 prefix
    int release;       // set 2: the last byte was the 0xF0 prefix
    int ctrl, alt, del;
};

#define SET1_RELEASE_BIT 0x80
#define SET1_CTRL 0x1d  // left; right Ctrl is 0xE0 0x1D
#define SET1_ALT 0x38   // left; right Alt is 0xE0 0x38
#define SET1_DEL 0x53   // after 0xE0 (without it: keypad '.')
#define SET2_RELEASE 0xf0
#define SET2_CTRL 0x14
#define SET2_ALT 0x11
#define SET2_DEL 0x71
#define SCANCODE_EXTENDED 0xe0

// Takes one scancode byte; returns 1 once Ctrl, Alt and Del are all down.
static int keyboard_byte(struct keyboard* k, uint8_t b) {
    if (b == SCANCODE_EXTENDED) {
        k->extended = 1;
        return 0;
    }
    int code = b, down = 1;
    if (k->set == 1) {
        down = !(b & SET1_RELEASE_BIT);
        code = b & ~SET1_RELEASE_BIT;
    } else {
        if (b == SET2_RELEASE) {
            k->release = 1;
            return 0;
        }
        down = !k->release;
    }
    const int extended = k->extended;
    k->extended = 0;
    k->release = 0;
    const int ctrl = k->set == 1 ? SET1_CTRL : SET2_CTRL;
    const int alt = k->set == 1 ? SET1_ALT : SET2_ALT;
    const int del = k->set == 1 ? SET1_DEL : SET2_DEL;
    if (code == ctrl) k->ctrl = down;
    else if (code == alt) k->alt = down;
    else if (code == del && extended) k->del = down;
    return k->ctrl && k->alt && k->del;
}

GUEST_NORETURN static void reset_through_i8042(void) {
    printf("ticker: ctrl-alt-del\n");
    i8042_wait(I8042_STATUS_IBF, 0);
    outb(I8042_STATUS, I8042_CMD_RESET);
    // The VMM ends the VM on the reset pulse; running on means it did not.
    printf("ticker: FAIL: the i8042 reset did not end the VM\n");
    guest_exit(GUEST_FAIL);
}

int guest_main(void) {
    int cb = i8042_read_command_byte();
    if (cb < 0) {
        printf("ticker: FAIL: no i8042 command byte\n");
        return GUEST_FAIL;
    }
    if (cmdline_has_word(boot_cmdline(), "ticker.no_xlate")) {
        if (i8042_write_command_byte((uint8_t)(cb & ~I8042_CB_XLATE)) != 0 || (cb = i8042_read_command_byte()) < 0 ||
            (cb & I8042_CB_XLATE)) {
            printf("ticker: FAIL: cannot turn i8042 translation off\n");
            return GUEST_FAIL;
        }
    }
    struct keyboard kbd = {.set = (cb & I8042_CB_XLATE) ? 1 : 2};
    const char* err = irq_route_gsi(KBD_GSI);
    if (err) {
        printf("ticker: FAIL: keyboard interrupt: %s\n", err);
        return GUEST_FAIL;
    }
    printf("ticker: ready (boot protocol %s, scancode set %d)\n", boot_protocol_name(), kbd.set);

    uint64_t irqs_seen = irq_count;
    uint64_t next = rdtsc();
    for (uint64_t n = 1;; n++) {
        next += TICK_CYCLES;
        // A guest that falls behind (its "tick" line took longer than a tick: a loaded host,
        // a slow emulator) starts the next tick from now instead of printing the missed ones
        // back to back, which would leave it no time in which to take interrupts.
        const uint64_t now = rdtsc();
        if ((int64_t)(now - next) > 0) next = now;
        // At least one interrupt window per tick, however late the guest is.
        do {
            // Interrupts are taken here only: after `pause`, in the shadow of `sti`.
            __asm__ volatile("sti; pause; cli" : : : "memory");
            // One byte per keyboard interrupt: the controller raises the next one when the
            // next byte moves into its output buffer.
            while (irqs_seen != irq_count) {
                irqs_seen++;
                if (!(inb(I8042_STATUS) & I8042_STATUS_OBF)) continue;
                const uint8_t b = inb(I8042_DATA);
                printf("ticker: kbd 0x%02x\n", b);
                if (keyboard_byte(&kbd, b)) reset_through_i8042();
            }
        } while ((int64_t)(rdtsc() - next) < 0);
        printf("tick %lu\n", n);
    }
}
