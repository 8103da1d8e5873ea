// Test guest "ticker": prints "tick N" about every 2^24 TSC cycles (a few ms), forever; the host
// ends it. Shows whether the guest makes progress (pause / resume tests, the embedding example).
#include "guest.h"
#include "io.h"

int guest_main(void) {
    printf("ticker: ready\n");
    uint64_t next = rdtsc();
    for (uint64_t n = 1;; n++) {
        next += 1ull << 24;
        while ((int64_t)(rdtsc() - next) < 0) {
        }
        printf("tick %lu\n", n);
    }
}
