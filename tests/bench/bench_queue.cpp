// Host benchmark of the virtqueue hot path (issue 14); runs without KVM, through
// scripts/bench-queue. Two kinds of case, each set beside memcpy of the same bytes:
//
//   queue  the device side of a split ring in guest memory (virtio/queue.h): pop_available,
//          the chain's readable bytes read with a Reader and its writable bytes written with a
//          Writer, add_used, enable_notification and needs_notification; chains of 1, 3 and 17
//          descriptors, with and without VIRTIO_F_EVENT_IDX.
//   blk    4 KiB reads through virtio-blk (BlockDevice::queue_notify, request parsing, the
//          backend interface, completion into the used ring) with an in-memory disk as backend.
//
// The driver side writes the rings straight into guest memory as a guest would, makes a whole
// batch of chains available at once and takes them back from the used ring after the device's
// pass, checking every used element (and for blk the status byte and the data), so what is
// timed is the device's work plus a few stores and loads per chain. The memcpy figure copies
// exactly the buffers of the same chains (same sizes, same guest addresses) with no ring around
// them: the ceiling a zero-overhead queue would reach. Each case is timed in slices that
// alternate with slices of its memcpy, and reports its fastest slice (the least disturbed by
// other work on a shared machine) and its share of memcpy's speed in the same moments.
#include <sys/uio.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "memory/guest_memory.h"
#include "virtio/block/backend.h"
#include "virtio/block/block_device.h"
#include "virtio/device.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"
#include "vmm/sys/eventfd.h"
#include "vmm/sys/log.h"

#ifndef EMBERVM_BENCH_BUILDTYPE
#define EMBERVM_BENCH_BUILDTYPE "unknown"
#endif

namespace {

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
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
// The driver's side of the ring. Chains are laid out once in the descriptor table (the device
// never changes it) and recycled: publish() makes up to `max` free chains available with one
// avail.idx store, reap() takes back what the device used and checks each used element.

class BatchDriver {
public:
    BatchDriver(const GuestMemory& mem, Queue& queue, bool event_idx)
        : host_(mem.get_slice(GuestAddress(0), kRingAreaEnd).value()), event_idx_(event_idx),
          used_len_(kRingSize, 0), in_flight_(kRingSize, false) {
        std::fill(host_.begin(), host_.end(), 0);
        queue.set_size(kRingSize);
        queue.set_desc_table(GuestAddress(kDescTable));
        queue.set_avail_ring(GuestAddress(kAvailRing));
        queue.set_used_ring(GuestAddress(kUsedRing));
        queue.set_event_idx_enabled(event_idx);
        queue.set_ready(true);
        if (auto why = queue.validate(mem)) throw BenchError("ring set-up: " + *why);
    }

    // Writes a chain into the descriptor table from `head` on and adds it to the free chains;
    // `used_len` is the length the device must report for it.
    void add_chain(uint16_t head, std::span<const Buffer> bufs, uint32_t used_len) {
        for (size_t i = 0; i < bufs.size(); i++) {
            const auto index = static_cast<uint16_t>(head + i);
            uint16_t flags = bufs[i].device_writes ? desc_flags::kWrite : 0;
            if (i + 1 < bufs.size()) flags |= desc_flags::kNext;
            store(kDescTable + 16ULL * index,
                  Descriptor{bufs[i].addr, bufs[i].len, flags, static_cast<uint16_t>(index + 1)});
        }
        used_len_[head] = used_len;
        free_.push_back(head);
    }

    // Makes up to `max` free chains available, calling on_publish(head) for each before it is
    // published. With EVENT_IDX it asks for one interrupt, when the last chain in flight is used.
    template <typename OnPublish>
    uint32_t publish(uint32_t max, OnPublish&& on_publish) {
        const auto n = static_cast<uint32_t>(std::min<size_t>(max, free_.size()));
        for (uint32_t i = 0; i < n; i++) {
            const uint16_t head = free_.back();
            free_.pop_back();
            on_publish(head);
            in_flight_[head] = true;
            store<uint16_t>(kAvailRing + 4 + 2ULL * (avail_idx_ % kRingSize), head);
            ++avail_idx_;
        }
        outstanding_ += n;
        if (event_idx_) {
            store<uint16_t>(kAvailRing + 4 + 2ULL * kRingSize, static_cast<uint16_t>(last_used_ + outstanding_ - 1));
        }
        std::atomic_thread_fence(std::memory_order_release);
        store<uint16_t>(kAvailRing + 2, avail_idx_);
        return n;
    }

    // Takes back every used element, checking its head and length, and calls on_used(head) for
    // each. Returns how many there were.
    template <typename OnUsed>
    uint32_t reap(OnUsed&& on_used) {
        const auto used_idx = load<uint16_t>(kUsedRing + 2);
        std::atomic_thread_fence(std::memory_order_acquire);
        uint32_t n = 0;
        for (; last_used_ != used_idx; ++last_used_, ++n) {
            const uint64_t elem = kUsedRing + 4 + 8ULL * (last_used_ % kRingSize);
            const auto id = load<uint32_t>(elem);
            const auto len = load<uint32_t>(elem + 4);
            if (id >= kRingSize || !in_flight_[id]) {
                throw BenchError(fmt::format("used element {} names head {}, which is not in flight", last_used_, id));
            }
            if (len != used_len_[id]) {
                throw BenchError(fmt::format("head {} came back with length {}, expected {}", id, len, used_len_[id]));
            }
            on_used(static_cast<uint16_t>(id));
            in_flight_[id] = false;
            free_.push_back(static_cast<uint16_t>(id));
        }
        outstanding_ -= n;
        return n;
    }

    size_t free_chains() const { return free_.size(); }

private:
    template <typename T>
    void store(uint64_t gpa, const T& value) {
        std::memcpy(host_.data() + gpa, &value, sizeof(T));
    }
    template <typename T>
    T load(uint64_t gpa) const {
        T value;
        std::memcpy(&value, host_.data() + gpa, sizeof(T));
        return value;
    }

    std::span<uint8_t> host_;  // the ring area, as the guest sees it
    bool event_idx_;
    std::vector<uint32_t> used_len_;  // by head
    std::vector<bool> in_flight_;     // by head
    std::vector<uint16_t> free_;      // heads of the chains not in flight
    uint16_t avail_idx_ = 0;
    uint16_t last_used_ = 0;
    uint32_t outstanding_ = 0;
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

double to_seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double thread_cpu_seconds() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

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
                std::span<uint8_t> scratch) {
    Work w;
    for (uint32_t c = 0; c < chains_per_round; c++) {
        for (const HostBuffer& b : chains[c]) {
            if (b.device_writes) {
                std::memcpy(b.host, scratch.data(), b.len);
            } else {
                std::memcpy(scratch.data(), b.host, b.len);
            }
            escape(b.host);
            escape(scratch.data());
            w.bytes += b.len;
            ++w.descriptors;
        }
        ++w.chains;
    }
    ++w.passes;
    return w;
}

std::vector<HostBuffer> host_buffers(const GuestMemory& mem, std::span<const Buffer> bufs) {
    std::vector<HostBuffer> out;
    for (const Buffer& b : bufs) {
        out.push_back({mem.get_slice(GuestAddress(b.addr), b.len).value().data(), b.len, b.device_writes});
    }
    return out;
}

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

nlohmann::ordered_json to_json(const Sample& sample) {
    return {
        {"seconds", sample.seconds},
        {"chains", sample.work.chains},
        {"descriptors", sample.work.descriptors},
        {"bytes", sample.work.bytes},
        {"chains_per_s", sample.rate(&Work::chains)},
        {"descriptors_per_s", sample.rate(&Work::descriptors)},
        {"bytes_per_s", sample.rate(&Work::bytes)},
    };
}

double ns_per_chain(const Sample& sample) { return sample.seconds * 1e9 / static_cast<double>(sample.work.chains); }

// The rates of the best slice, the headline figures; the rest for a closer look.
nlohmann::ordered_json to_json(const Result& r) {
    const Timed& device = r.timing.device;
    const Timed& ceiling = r.timing.ceiling;
    const Sample& best = device.best;
    const Work& all = device.all.work;
    return {
        {"name", r.name},
        {"kind", r.kind},
        {"descriptors_per_chain", r.descriptors_per_chain},
        {"event_idx", r.event_idx},
        {"batch", r.batch},
        {"chains_per_s", best.rate(&Work::chains)},
        {"descriptors_per_s", best.rate(&Work::descriptors)},
        {"bytes_per_s", best.rate(&Work::bytes)},
        {"ns_per_chain", ns_per_chain(best)},
        {"memcpy_bytes_per_s", ceiling.best.rate(&Work::bytes)},
        {"fraction_of_memcpy", r.timing.fraction_of_memcpy},
        {"interrupts_per_pass", static_cast<double>(all.interrupts) / static_cast<double>(all.passes)},
        {"cpu_fraction", device.cpu_seconds / device.all.seconds},
        {"best", to_json(best)},
        {"all", to_json(device.all)},
        {"memcpy_best", to_json(ceiling.best)},
        {"memcpy_all", to_json(ceiling.all)},
        {"memcpy_cpu_fraction", ceiling.cpu_seconds / ceiling.all.seconds},
    };
}

std::string si(double v, std::string_view unit) {
    if (v >= 1e9) return fmt::format("{:.2f} G{}", v / 1e9, unit);
    if (v >= 1e6) return fmt::format("{:.2f} M{}", v / 1e6, unit);
    if (v >= 1e3) return fmt::format("{:.1f} k{}", v / 1e3, unit);
    return fmt::format("{:.0f} {}", v, unit);
}

void print_table(const Settings& s, const std::vector<Result>& results) {
    fmt::print("bench-queue: buildtype {}{}; per case {} s in {} slices, alternating with as many of memcpy, "
               "after {} s warm-up\n",
               EMBERVM_BENCH_BUILDTYPE,
#ifdef NDEBUG
               " (NDEBUG)",
#else
               "",
#endif
               s.seconds, kSlices, s.warmup);
    fmt::print("queue: ring of {}, {}-byte buffers, R = device-readable, W = device-writable; "
               "blk: 4 KiB reads, header + data + status\n\n",
               kRingSize, s.desc_bytes);
    fmt::print("{:<26} {:>5} {:>11} {:>11} {:>12} {:>9} {:>12} {:>9} {:>11} {:>5}\n", "case", "batch", "chains/s",
               "descs/s", "bytes/s", "ns/chain", "memcpy B/s", "of memcpy", "mean ch/s", "cpu");
    for (const Result& r : results) {
        const Timed& device = r.timing.device;
        const Sample& best = device.best;
        fmt::print("{:<26} {:>5} {:>11} {:>11} {:>12} {:>9.1f} {:>12} {:>8.1f}% {:>11} {:>4.0f}%\n", r.label, r.batch,
                   si(best.rate(&Work::chains), ""), si(best.rate(&Work::descriptors), ""),
                   si(best.rate(&Work::bytes), "B/s"), ns_per_chain(best),
                   si(r.timing.ceiling.best.rate(&Work::bytes), "B/s"), 100.0 * r.timing.fraction_of_memcpy,
                   si(device.all.rate(&Work::chains), ""), 100.0 * device.cpu_seconds / device.all.seconds);
    }
    fmt::print("\nRates are those of the fastest slice (memcpy likewise). of memcpy: bytes/s as a share of\n"
               "memcpy's, median over the slices, each beside a memcpy slice (less sensitive to the host's speed).\n"
               "mean ch/s: chains/s over all slices; cpu: the share of that time the thread ran.\n"
               "For blk, chains are requests and bytes the 4 KiB of data per request.\n");
}

// ---------------------------------------------------------------------------------------------
// queue cases

// The chain shape: one device-readable buffer, then n - 1 device-writable ones.
std::vector<Buffer> chain_buffers(uint16_t head, uint16_t n, uint32_t desc_bytes) {
    std::vector<Buffer> bufs;
    for (uint16_t i = 0; i < n; i++) {
        bufs.push_back({kBuffers + uint64_t{desc_bytes} * (head + i), desc_bytes, i > 0});
    }
    return bufs;
}

std::string shape(uint16_t n) { return n == 1 ? "R" : fmt::format("R+{}W", n - 1); }

GuestMemory make_memory(uint64_t buffer_bytes) {
    const uint64_t size = (kBuffers + buffer_bytes + kPage - 1) / kPage * kPage;
    return GuestMemory({{GuestAddress(0), size}});
}

// One device pass as virtio/queue.h describes it: every available chain is parsed, read and
// written in full and completed; then kicks are asked for again and the interrupt decided.
Work queue_pass(const GuestMemory& mem, Queue& queue, std::span<uint8_t> scratch) {
    Work w;
    queue.disable_notification(mem);
    do {
        while (auto chain = queue.pop_available(mem)) {
            Reader in = chain->reader(mem);
            Writer out = chain->writer(mem);
            const size_t read = in.read(scratch.first(in.available()));
            escape(scratch.data());
            const size_t written = out.write(scratch.first(out.available()));
            queue.add_used(mem, chain->head_index(), static_cast<uint32_t>(out.bytes_written()));
            ++w.chains;
            w.descriptors += chain->descriptors().size();
            w.bytes += read + written;
        }
    } while (queue.enable_notification(mem));
    if (queue.needs_notification(mem)) ++w.interrupts;
    ++w.passes;
    return w;
}

Result queue_case(const Settings& s, uint16_t n, bool event_idx) {
    const uint16_t chains = kRingSize / n;
    GuestMemory mem = make_memory(uint64_t{s.desc_bytes} * kRingSize);
    Queue queue(kRingSize);
    BatchDriver driver(mem, queue, event_idx);
    std::vector<std::vector<HostBuffer>> host_chains;
    for (uint16_t c = 0; c < chains; c++) {
        const auto head = static_cast<uint16_t>(c * n);
        const auto bufs = chain_buffers(head, n, s.desc_bytes);
        driver.add_chain(head, bufs, uint32_t{s.desc_bytes} * (n - 1));
        host_chains.push_back(host_buffers(mem, bufs));
    }
    std::vector<uint8_t> scratch(size_t{s.desc_bytes} * n, 0x5a);
    const uint32_t batch = std::min<uint32_t>(s.batch, chains);

    Result r;
    r.name = fmt::format("queue-{}{}", n, event_idx ? "-event-idx" : "");
    r.label = fmt::format("queue {} ({}){}", n, shape(n), event_idx ? " EVENT_IDX" : "");
    r.kind = "queue";
    r.descriptors_per_chain = n;
    r.event_idx = event_idx;
    r.batch = batch;
    const auto device_round = [&] {
        const uint32_t published = driver.publish(batch, [](uint16_t) {});
        const Work w = queue_pass(mem, queue, scratch);
        const uint32_t used = driver.reap([](uint16_t) {});
        if (used != published || w.chains != published) {
            throw BenchError(fmt::format("{}: {} chains published, {} processed, {} used", r.name, published, w.chains,
                                         used));
        }
        if (w.interrupts != 1) {
            throw BenchError(fmt::format("{}: the pass decided on {} interrupts, expected 1", r.name, w.interrupts));
        }
        return w;
    };
    r.timing = run_paired(s, device_round, [&] { return copy_round(host_chains, batch, scratch); });
    return r;
}

// ---------------------------------------------------------------------------------------------
// blk cases

constexpr uint32_t kBlockBytes = 4096;
constexpr uint64_t kDiskBytes = 1 << 20;

uint8_t disk_byte(uint64_t offset) { return static_cast<uint8_t>(offset * 131 + (offset >> 12)); }

// An in-memory disk behind the backend interface: a request is done inside submit() (memcpy
// instead of preadv) and its completion waits for reap_completions(), as with the sync engine.
// The completion eventfd is never signalled: BlockDevice reaps right after each queue pass, so
// the two eventfd syscalls per pass the sync engine adds are left out of the device path.
class MemoryBackend final : public block::BlockBackend {
public:
    MemoryBackend() : disk_(kDiskBytes) {
        for (uint64_t i = 0; i < kDiskBytes; i++) disk_[i] = disk_byte(i);
    }

    uint64_t size_bytes() const override { return kDiskBytes; }
    bool read_only() const override { return false; }
    block::IoEngine engine() const override { return block::IoEngine::Sync; }
    bool submit(block::IoRequest r) override {
        done_.push_back({r.user_data, execute(r)});
        return true;
    }
    void flush_submissions() override {}
    int completion_fd() const override { return event_.fd(); }
    std::vector<block::IoCompletion> reap_completions() override {
        std::vector<block::IoCompletion> out(done_.begin(), done_.end());
        done_.clear();
        return out;
    }
    size_t in_flight() const override { return done_.size(); }

    uint8_t* data(uint64_t offset) { return disk_.data() + offset; }

private:
    int64_t execute(const block::IoRequest& r) {
        using Op = block::IoRequest::Op;
        if (r.op != Op::Read && r.op != Op::Write) return 0;
        uint64_t off = r.offset;
        for (const iovec& v : r.iov) {
            if (off + v.iov_len > disk_.size()) return -EIO;
            if (r.op == Op::Read) {
                std::memcpy(v.iov_base, disk_.data() + off, v.iov_len);
            } else {
                std::memcpy(disk_.data() + off, v.iov_base, v.iov_len);
            }
            off += v.iov_len;
        }
        return static_cast<int64_t>(off - r.offset);
    }

    std::vector<uint8_t> disk_;
    std::deque<block::IoCompletion> done_;
    embervm::vmm::EventFd event_;
};

class CountingInterrupt final : public DeviceInterrupt {
public:
    void signal_used_queue(uint16_t) override { ++used; }
    void signal_config_change() override {}
    void device_error(std::string_view reason) override { error = reason; }
    bool needs_reset() const override { return !error.empty(); }
    uint64_t used = 0;
    std::string error;
};

struct BlkHeader {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};
static_assert(sizeof(BlkHeader) == 16);

Result blk_case(const Settings& s, bool event_idx) {
    constexpr uint16_t kChainLen = 3;
    constexpr uint16_t kRequests = kRingSize / kChainLen;
    GuestMemory mem = make_memory(uint64_t{kBlockBytes} * kRequests);
    Queue queue(block::kQueueSize);
    BatchDriver driver(mem, queue, event_idx);
    CountingInterrupt irq;
    auto owned_backend = std::make_unique<MemoryBackend>();
    MemoryBackend& backend = *owned_backend;
    block::BlockDevice dev(std::move(owned_backend), {"bench", false, false});  // goes first
    uint64_t acked = dev.available_features() | feature::kVersion1;
    if (!event_idx) acked &= ~feature::kRingEventIdx;
    queue.set_indirect_enabled((acked & feature::kRingIndirectDesc) != 0);
    dev.activate(mem, std::span<Queue>(&queue, 1), acked, irq);

    // Request k: header, data and status at fixed places; its chain starts at descriptor 3k.
    const auto header_of = [](uint16_t head) { return kHeaders + 16ULL * (head / kChainLen); };
    const auto status_of = [](uint16_t head) { return kStatus + head / kChainLen; };
    const auto data_of = [](uint16_t head) { return kBuffers + uint64_t{kBlockBytes} * (head / kChainLen); };
    std::vector<std::vector<HostBuffer>> host_data;  // the data buffers only, for memcpy
    for (uint16_t k = 0; k < kRequests; k++) {
        const auto head = static_cast<uint16_t>(k * kChainLen);
        const Buffer bufs[] = {{header_of(head), sizeof(BlkHeader), false},
                               {data_of(head), kBlockBytes, true},
                               {status_of(head), 1, true}};
        driver.add_chain(head, bufs, kBlockBytes + 1);
        host_data.push_back(host_buffers(mem, std::span<const Buffer>(bufs).subspan(1, 1)));
    }
    const uint32_t batch = std::min<uint32_t>(s.batch, kRequests);

    // Reads walk the disk 4 KiB at a time; each request remembers where it read from.
    uint64_t next_offset = 0;
    std::vector<uint64_t> offset_of(kRingSize, 0);
    const auto on_publish = [&](uint16_t head) {
        mem.write_obj(GuestAddress(header_of(head)), BlkHeader{block::req::kIn, 0, next_offset / block::kSectorSize});
        mem.write_obj<uint8_t>(GuestAddress(status_of(head)), 0xff);
        offset_of[head] = next_offset;
        next_offset = (next_offset + kBlockBytes) % kDiskBytes;
    };
    // The status must say OK and the buffer hold the disk's bytes (its first and last 8).
    const auto on_used = [&](uint16_t head) {
        const auto status = mem.read_obj<uint8_t>(GuestAddress(status_of(head)));
        const uint8_t* got = mem.get_slice(GuestAddress(data_of(head)), kBlockBytes).value().data();
        const uint8_t* want = backend.data(offset_of[head]);
        if (status != block::blk_status::kOk || std::memcmp(got, want, 8) != 0 ||
            std::memcmp(got + kBlockBytes - 8, want + kBlockBytes - 8, 8) != 0) {
            throw BenchError(fmt::format("blk request at offset {:#x}: status {} or its data is wrong", offset_of[head],
                                         status));
        }
    };

    Result r;
    r.name = fmt::format("blk-4k-read{}", event_idx ? "-event-idx" : "");
    r.label = fmt::format("blk 4K read{}", event_idx ? " EVENT_IDX" : "");
    r.kind = "blk";
    r.descriptors_per_chain = kChainLen;
    r.event_idx = event_idx;
    r.batch = batch;
    const auto device_round = [&] {
        const uint32_t published = driver.publish(batch, on_publish);
        const uint64_t interrupts_before = irq.used;
        dev.queue_notify(0);
        const uint32_t used = driver.reap(on_used);
        if (!irq.error.empty()) throw BenchError("blk: the device needs a reset: " + irq.error);
        if (used != published) {
            throw BenchError(fmt::format("blk: {} requests published, {} completed", published, used));
        }
        Work w;
        w.chains = used;
        w.descriptors = uint64_t{used} * kChainLen;
        w.bytes = uint64_t{used} * kBlockBytes;
        w.passes = 1;
        w.interrupts = irq.used - interrupts_before;
        return w;
    };
    // The backend's copy alone: disk to the request's buffer, the same 4 KiB blocks in turn.
    uint64_t copy_offset = 0;
    const auto copy = [&] {
        Work w;
        for (uint32_t k = 0; k < batch; k++) {
            const HostBuffer& b = host_data[k][0];
            std::memcpy(b.host, backend.data(copy_offset), b.len);
            escape(b.host);
            copy_offset = (copy_offset + kBlockBytes) % kDiskBytes;
            ++w.chains;
            ++w.descriptors;
            w.bytes += b.len;
        }
        ++w.passes;
        return w;
    };
    r.timing = run_paired(s, device_round, copy);
    return r;
}

// ---------------------------------------------------------------------------------------------

constexpr std::string_view kUsage = R"(usage: bench-queue [--json] [--seconds S] [--warmup S] [--desc-bytes N] [--batch N]
  --json          one JSON document on stdout instead of the table
  --seconds S     timed seconds per case, and as many for its memcpy ceiling (default 0.5)
  --warmup S      untimed seconds before each, the device and memcpy (default 0.1)
  --desc-bytes N  buffer bytes per descriptor in the queue cases (default 64)
  --batch N       most chains the driver makes available at once (default 256: all that fit)
)";

template <typename T>
bool parse_number(std::string_view text, T& out) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && end == text.data() + text.size();
}

std::optional<Settings> parse_args(int argc, char** argv) {
    Settings s;
    for (int i = 1; i < argc; i++) {
        const std::string_view arg = argv[i];
        const auto value = [&]() -> std::string_view { return i + 1 < argc ? argv[++i] : ""; };
        bool ok = true;
        if (arg == "--json") {
            s.json = true;
        } else if (arg == "--seconds") {
            ok = parse_number(value(), s.seconds) && s.seconds > 0;
        } else if (arg == "--warmup") {
            ok = parse_number(value(), s.warmup) && s.warmup >= 0;
        } else if (arg == "--desc-bytes") {
            ok = parse_number(value(), s.desc_bytes) && s.desc_bytes > 0 && s.desc_bytes <= (1u << 20);
        } else if (arg == "--batch") {
            ok = parse_number(value(), s.batch) && s.batch > 0;
        } else if (arg == "--help" || arg == "-h") {
            fmt::print("{}", kUsage);
            std::exit(0);
        } else {
            ok = false;
        }
        if (!ok) {
            fmt::print(stderr, "bench-queue: bad argument {}\n{}", arg, kUsage);
            return std::nullopt;
        }
    }
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    const auto settings = parse_args(argc, argv);
    if (!settings) return 2;
    const Settings& s = *settings;
    embervm::log::set_level(embervm::log::Level::Warn);  // not BlockDevice's "activated" lines
    try {
        std::vector<Result> results;
        for (const uint16_t n : {1, 3, 17}) {
            for (const bool event_idx : {false, true}) results.push_back(queue_case(s, n, event_idx));
        }
        for (const bool event_idx : {false, true}) results.push_back(blk_case(s, event_idx));

        if (s.json) {
            nlohmann::ordered_json cases = nlohmann::ordered_json::array();
            for (const Result& r : results) cases.push_back(to_json(r));
#ifdef NDEBUG
            const bool ndebug = true;
#else
            const bool ndebug = false;
#endif
            const nlohmann::ordered_json doc = {
                {"buildtype", EMBERVM_BENCH_BUILDTYPE},  {"ndebug", ndebug},       {"seconds", s.seconds},
                {"warmup_seconds", s.warmup},            {"ring_size", kRingSize}, {"desc_bytes", s.desc_bytes},
                {"blk_request_bytes", kBlockBytes},      {"cases", cases},
            };
            fmt::print("{}\n", doc.dump(2));
        } else {
            print_table(s, results);
        }
    } catch (const std::exception& e) {
        fmt::print(stderr, "bench-queue: {}\n", e.what());
        return 1;
    }
    return 0;
}
