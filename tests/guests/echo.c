// Test guest "echo": the host-to-guest console path. Reads one line from COM1 (polled RX),
// prints it back and exits with GUEST_PASS if the line is "ping", else GUEST_FAIL.
#include "guest.h"
#include "str.h"

int guest_main(void) {
    printf("echo: ready\n");
    char line[64];
    size_t n = 0;
    for (;;) {
        const int c = serial_getc();
        if (c == '\n' || c == '\r') break;
        if (n + 1 < sizeof(line)) line[n++] = (char)c;
    }
    line[n] = '\0';
    printf("echo: got '%s'\n", line);
    return strcmp(line, "ping") == 0 ? GUEST_PASS : GUEST_FAIL;
}
