// libguest: helpers of the stress modes (see stress.h).
#include "stress.h"

#include "guest.h"
#include "str.h"

static uint64_t state = 1;

void rand_seed(uint64_t seed) { state = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull; }

uint64_t rand_u64(void) {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545f4914f6cdd1dull;
}

uint32_t rand_below(uint32_t n) { return n ? (uint32_t)(rand_u64() % n) : 0; }

int rand_chance(unsigned percent) { return rand_below(100) < percent; }

void stress_split(struct virtio_buf* out, unsigned n, uint64_t addr, uint32_t len, uint8_t write) {
    for (unsigned i = 0; i < n; i++) {
        const uint32_t rest = n - 1 - i;  // bytes the later pieces need at least
        const uint32_t piece = i + 1 == n ? len : 1 + rand_below(len - rest);
        out[i] = (struct virtio_buf){addr, piece, write};
        addr += piece;
        len -= piece;
    }
}

int stress_knob(const char* cmdline, const char* prefix, const char* key, uint64_t* v, uint64_t min, uint64_t max) {
    size_t n;
    const char* s = cmdline_find(cmdline, key, &n);
    if (!s) return 0;
    if (parse_u64(s, v) != n || *v < min || *v > max) {
        printf("%sFAIL: bad %s (%lu ... %lu)\n", prefix, key, min, max);
        return -1;
    }
    return 0;
}
