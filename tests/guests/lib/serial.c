// libguest: COM1 (16550A at port 0x3f8), polled output only.
#include "guest.h"
#include "io.h"

#define COM1 0x3f8
#define UART_THR 0  // transmit holding register (write)
#define UART_IER 1  // interrupt enable
#define UART_LCR 3  // line control
#define UART_MCR 4  // modem control
#define UART_LSR 5  // line status
#define UART_LSR_THRE 0x20

// Bounded wait for THRE: a UART that never becomes ready must not hang the guest forever
// (the character is then written anyway; the VMM's UART never holds back output).
#define THRE_POLL_LIMIT 100000

void serial_init(void) {
    outb(COM1 + UART_IER, 0x00);  // no interrupts: output is polled
    outb(COM1 + UART_LCR, 0x03);  // 8N1, DLAB off
    outb(COM1 + UART_MCR, 0x03);  // DTR, RTS
}

static void put_raw(char c) {
    for (int i = 0; i < THRE_POLL_LIMIT; i++) {
        if (inb(COM1 + UART_LSR) & UART_LSR_THRE) break;
    }
    outb(COM1 + UART_THR, (uint8_t)c);
}

void serial_putc(char c) {
    if (c == '\n') put_raw('\r');
    put_raw(c);
}

void serial_write(const char* s, size_t n) {
    for (size_t i = 0; i < n; i++) serial_putc(s[i]);
}

#define UART_RBR 0  // receive buffer register (read)
#define UART_LSR_DR 0x01

int serial_getc(void) {
    while (!(inb(COM1 + UART_LSR) & UART_LSR_DR)) cpu_pause();
    return inb(COM1 + UART_RBR);
}

int serial_trygetc(void) {
    if (!(inb(COM1 + UART_LSR) & UART_LSR_DR)) return -1;
    return inb(COM1 + UART_RBR);
}
