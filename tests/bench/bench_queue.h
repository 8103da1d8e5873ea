// bench-queue: the memory layout, the timing, the settings and the cases (bench_queue.cpp).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "memory/guest_memory.h"

namespace embervm::bench {

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using Clock = std::chrono::steady_clock;

// A check of the device's results failed: the numbers would mean nothing.
class BenchError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Tells the compiler that the memory behind `p` is read and written here, so copies into or
// out of it cannot be dropped or merged.
inline void escape(const void* p) { asm volatile("" : : "g"(p) : "memory"); }

// ---------------------------------------------------------------------------------------------
// Guest memory layout, the same for every case: a ring of 256 (the descriptor table fills its
// page), then request headers and status bytes (blk), then the data buffers.

constexpr uint16_t kRingSize = 256;
constexpr uint64_t kDescTable = 0x0000;
constexpr uint64_t kAvailRing = 0x1000;
constexpr uint64_t kUsedRing = 0x2000;
constexpr uint64_t kRingAreaEnd = 0x3000;
constexpr uint64_t kHeaders = 0x4000;  // blk: 16 bytes per request
constexpr uint64_t kStatus = 0x6000;   // blk: 1 byte per request
constexpr uint64_t kBuffers = 0x10000;
constexpr uint64_t kPage = 4096;

struct Buffer {
    uint64_t addr;
    uint32_t len;
    bool device_writes;
};

// ---------------------------------------------------------------------------------------------
// Timing

// What one round did.
struct Work {
    uint64_t chains = 0;
    uint64_t descriptors = 0;
    uint64_t bytes = 0;
    uint64_t passes = 0;
    uint64_t interrupts = 0;

    Work& operator+=(const Work& o) {
        chains += o.chains;
        descriptors += o.descriptors;
        bytes += o.bytes;
        passes += o.passes;
        interrupts += o.interrupts;
        return *this;
    }
};

// A stretch of timed rounds: what they did and how long it took.
struct Sample {
    Work work;
    double seconds = 0;

    double rate(uint64_t Work::*what) const { return static_cast<double>(work.*what) / seconds; }
};

// One measurement: the whole timed stretch, the fastest of the slices it is cut into (the one
// least disturbed by other work on the machine), and the CPU time the thread got during it.
struct Timed {
    Sample all;
    Sample best;
    double cpu_seconds = 0;

    void add(const Sample& slice, double cpu) {
        if (all.seconds == 0 || slice.rate(&Work::chains) > best.rate(&Work::chains)) best = slice;
        all.work += slice.work;
        all.seconds += slice.seconds;
        cpu_seconds += cpu;
    }
};

// A case measured in slices that alternate with slices of its memcpy ceiling, so that both see
// the machine in about the same state: on a shared virtual machine, whose speed changes by 2x
// and more, the share of memcpy's bytes/s moves less than the absolute rates (not always).
struct Paired {
    Timed device;
    Timed ceiling;
    double fraction_of_memcpy = 0;  // median over the slice pairs
};

constexpr int kSlices = 5;

struct Settings {
    double seconds = 0.5;  // timed, per case, and as many for its memcpy ceiling
    double warmup = 0.1;   // untimed, before each
    uint32_t desc_bytes = 64;
    uint32_t batch = kRingSize;  // most chains the driver makes available at once
    bool json = false;
};

inline double to_seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double thread_cpu_seconds();

// Runs `round` untimed for the warm-up; returns how many rounds take about a millisecond, so
// that the timed slices read the clock only that often.
template <typename Round>
uint64_t warm_up(const Settings& s, Round& round) {
    uint64_t rounds = 0;
    const auto start = Clock::now();
    auto now = start;
    while (to_seconds(now - start) < s.warmup) {
        round();
        ++rounds;
        now = Clock::now();
    }
    const double round_s = to_seconds(now - start) / static_cast<double>(std::max<uint64_t>(rounds, 1));
    return static_cast<uint64_t>(std::max(1.0, 1e-3 / std::max(round_s, 1e-9)));
}

// Runs `round` until `seconds` have passed; adds the slice to `into`.
template <typename Round>
Sample timed_slice(double seconds, uint64_t per_check, Round& round, Timed& into) {
    Sample slice;
    const double cpu_start = thread_cpu_seconds();
    const auto start = Clock::now();
    auto end = start;
    do {
        for (uint64_t i = 0; i < per_check; i++) slice.work += round();
        end = Clock::now();
    } while (to_seconds(end - start) < seconds);
    slice.seconds = to_seconds(end - start);
    into.add(slice, thread_cpu_seconds() - cpu_start);
    return slice;
}

template <typename DeviceRound, typename CopyRound>
Paired run_paired(const Settings& s, DeviceRound&& device, CopyRound&& copy) {
    const uint64_t device_per_check = warm_up(s, device);
    const uint64_t copy_per_check = warm_up(s, copy);
    Paired p;
    std::vector<double> fractions;
    for (int i = 0; i < kSlices; i++) {
        const Sample d = timed_slice(s.seconds / kSlices, device_per_check, device, p.device);
        const Sample c = timed_slice(s.seconds / kSlices, copy_per_check, copy, p.ceiling);
        fractions.push_back(d.rate(&Work::bytes) / c.rate(&Work::bytes));
    }
    std::sort(fractions.begin(), fractions.end());
    p.fraction_of_memcpy = fractions[fractions.size() / 2];
    return p;
}

// One buffer of a chain as host memory, for the memcpy comparison.
struct HostBuffer {
    uint8_t* host;
    uint32_t len;
    bool device_writes;
};

// One round of the memcpy ceiling: the same buffers of `chains_per_round` chains copied into or
// out of `scratch` by plain memcpy.
Work copy_round(const std::vector<std::vector<HostBuffer>>& chains, uint32_t chains_per_round,
                std::span<uint8_t> scratch);
// The host memory of `bufs`, for copy_round.
std::vector<HostBuffer> host_buffers(const GuestMemory& mem, std::span<const Buffer> bufs);
// Guest memory from 0 up to kBuffers + `buffer_bytes`, rounded up to a page.
GuestMemory make_memory(uint64_t buffer_bytes);

// ---------------------------------------------------------------------------------------------
// Results

struct Result {
    std::string name;   // machine-readable
    std::string label;  // for the table
    std::string kind;   // "queue" or "blk"
    uint32_t descriptors_per_chain = 0;
    bool event_idx = false;
    uint32_t batch = 0;
    Paired timing;  // the device, and the same bytes by plain memcpy
};

// The cases (bench_queue_cases.cpp, bench_blk_case.cpp): chains of `n` descriptors through a bare
// queue; 4 KiB reads through virtio-blk.
Result queue_case(const Settings& s, uint16_t n, bool event_idx);
constexpr uint32_t kBlockBytes = 4096;
Result blk_case(const Settings& s, bool event_idx);

}  // namespace embervm::bench
