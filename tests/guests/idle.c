// Test guest "idle": says it is ready, then halts every CPU with interrupts off, forever. The
// VMM must still end it in order when it gets SIGTERM/SIGINT (tests/guests/run-signal-test).
#include "guest.h"

int guest_main(void) {
    printf("idle: ready\n");
    cpu_halt_forever();
}
