// Shared pieces of the virtio fuzz targets (tests/fuzz/{split_queue,virtio_blk,virtio_net,
// virtio_balloon,mmio_transport}.cpp):
//   - FuzzInput: decodes the fuzz input as a stream of small fields (an exhausted input reads
//     as zeros), so a target is a loop over operations and mutations stay meaningful;
//   - GuardedMemory: guest memory whose every region sits between PROT_NONE pages of a
//     reservation made for it, so a host access just outside guest memory faults at once (ASan
//     does not watch mmap'd memory) and every host view can be checked to lie inside;
//   - RingDriver: the driver's side of one split virtqueue, building descriptor chains (direct
//     or indirect, with fuzzed addresses, lengths and flags) and publishing them.
// Everything is deterministic: nothing depends on time, threads or the host.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "memory/guest_memory.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/device.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"
#include "vmm/sys/log.h"

// For the harness's own loops over guest memory or frames (shadow copies, fake backends'
// copies): not the code under test, so not instrumented for coverage. With libFuzzer's
// comparison tracing such loops took most of a device target's time, and their branches only
// added features that say nothing about the VMM. noinline keeps them out of instrumented callers.
#if defined(__clang__)
#define EMBERVM_FUZZ_HARNESS_LOOP __attribute__((noinline, no_sanitize("coverage")))
#else
#define EMBERVM_FUZZ_HARNESS_LOOP
#endif

namespace embervm::fuzz {

// Reads little-endian fields from the fuzz input; past its end every field reads as 0.
class FuzzInput {
public:
    FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

    bool empty() const { return pos_ >= size_; }
    size_t remaining() const { return size_ - pos_; }

    uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
    uint16_t u16() {
        const uint16_t lo = u8();
        return static_cast<uint16_t>(lo | (u8() << 8));
    }
    uint32_t u32() {
        const uint32_t lo = u16();
        return lo | (static_cast<uint32_t>(u16()) << 16);
    }
    uint64_t u64() {
        const uint64_t lo = u32();
        return lo | (static_cast<uint64_t>(u32()) << 32);
    }
    bool flag() { return (u8() & 1) != 0; }
    // A value in [0, n) (n > 0).
    size_t below(size_t n) { return u8() % n; }
    // Up to n bytes of the input itself.
    std::span<const uint8_t> bytes(size_t n) {
        n = n < remaining() ? n : remaining();
        std::span<const uint8_t> s(data_ + pos_, n);
        pos_ += n;
        return s;
    }

    // A guest address: mostly a multiple of `scale` below 64 Ki * scale (where the targets'
    // memory is), sometimes a full 64-bit value (the ends of the address space, overflow).
    uint64_t guest_addr(uint64_t scale = 2) {
        const uint8_t mode = u8();
        if ((mode & 7) == 7) return u64();
        return static_cast<uint64_t>(u16()) * scale;
    }
    // A buffer length: mostly below 64 KiB, sometimes any 32-bit value.
    uint32_t buffer_len() {
        const uint8_t mode = u8();
        if ((mode & 7) == 7) return u32();
        return u16();
    }

private:
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
};

// Turns the log off, once: guest errors are logged as warnings, which would slow fuzzing down
// to the speed of the terminal.
inline void quiet_logs() {
    static const bool done = [] {
        log::set_level(log::Level::Off);
        return true;
    }();
    (void)done;
}

// Ends the process with a message: an oracle of a target found a bug (libFuzzer records the
// input as a crash).
[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "fuzz oracle failed: %s\n", what);
    std::abort();
}
inline void check(bool ok, const char* what) {
    if (!ok) fail(what);
}

// Guest memory whose regions each lie between PROT_NONE guard pages. The guest memory maps its
// regions itself (mmap without a hint, top-down); to put guards around them, a PROT_NONE
// reservation is made first and holes of exactly the regions' sizes are cut into it, which the
// kernel fills with the regions. Where it did not (a hole elsewhere in the address space was
// chosen), that attempt is kept (its mappings fill that hole, PROT_NONE pages what is left of
// its holes) and the next one tries again.
// Made once per process; the attempts that missed stay mapped until it exits.
class GuardedMemory {
public:
    explicit GuardedMemory(const std::vector<std::pair<memory::GuestAddress, size_t>>& ranges) {
        const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
        for (int attempt = 0; attempt < 64; attempt++) {
            size_t total = page;
            for (const auto& r : ranges) total += r.second + page;
            void* p = ::mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (p == MAP_FAILED) fail("mmap of the guard reservation");
            auto* base = static_cast<uint8_t*>(p);
            std::vector<std::pair<uint8_t*, size_t>> holes;
            size_t off = page;
            for (const auto& r : ranges) {
                ::munmap(base + off, r.second);
                holes.emplace_back(base + off, r.second);
                off += r.second + page;
            }
            auto mem = std::make_unique<memory::GuestMemory>(ranges);
            size_t placed = 0;
            for (const auto& region : mem->regions()) {
                for (auto& hole : holes) {
                    if (hole.first == region.host_base() && hole.second == region.size()) {
                        hole.first = nullptr;  // each hole takes one region (nothing to fill)
                        placed++;
                        break;
                    }
                }
            }
            if (placed == ranges.size()) {
                mem_ = std::move(mem);
                return;
            }
            // Keep this attempt's mappings where they landed, and fill what is left of its
            // holes, so the next attempt finds neither as a free gap.
            missed_.push_back(std::move(mem));
            for (const auto& [start, size] : holes) {
                for (size_t p = 0; start != nullptr && p < size; p += page) {
                    void* fill = ::mmap(start + p, page, PROT_NONE,
                                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
                    (void)fill;  // EEXIST where a region of the attempt sits
                }
            }
        }
        fail("could not place the guest memory between guard pages");
    }

    const memory::GuestMemory& get() const { return *mem_; }

    // Zeros every region (each input starts from the same memory).
    void clear() const {
        for (const auto& r : mem_->regions()) std::memset(r.host_base(), 0, r.size());
    }
    // Whether host bytes [p, p + n) lie inside one region.
    bool host_inside(const void* p, size_t n) const {
        const auto* b = static_cast<const uint8_t*>(p);
        for (const auto& r : mem_->regions()) {
            if (b >= r.host_base() && n <= r.size() && b + n <= r.host_base() + r.size()) return true;
        }
        return false;
    }

private:
    std::unique_ptr<memory::GuestMemory> mem_;
    std::vector<std::unique_ptr<memory::GuestMemory>> missed_;
};

// The memory every device target uses: two guest-physically adjacent 64 KiB regions (a buffer
// may span both), nothing above 128 KiB.
inline const GuardedMemory& device_memory() {
    static const GuardedMemory mem({{memory::GuestAddress(0), 0x10000}, {memory::GuestAddress(0x10000), 0x10000}});
    return mem;
}

// Checks what a chain returned by the queue promises: every buffer inside guest memory, the
// readable ones first, the lengths adding up.
inline void check_chain(const memory::GuestMemory& mem, const virtio::DescriptorChain& chain) {
    uint64_t readable = 0, writable = 0;
    for (const auto& d : chain.readable()) {
        check(!d.is_write_only(), "a device-writable buffer among readable()");
        check(mem.check_range(memory::GuestAddress(d.addr), d.len), "a readable buffer outside guest memory");
        readable += d.len;
    }
    for (const auto& d : chain.writable()) {
        check(d.is_write_only(), "a device-readable buffer among writable()");
        check(mem.check_range(memory::GuestAddress(d.addr), d.len), "a writable buffer outside guest memory");
        writable += d.len;
    }
    check(readable == chain.readable_len() && writable == chain.writable_len(), "chain lengths do not add up");
    check(readable + writable <= UINT32_MAX, "chain longer than 4 GiB");
}

// The driver's side of one split virtqueue of a device target. Queue q's rings lie at
// q * 0x1000: descriptors (at most 128, 2 KiB), available ring at +0x800, used ring at
// +0xa00; indirect tables and buffers anywhere (the input decides).
class RingDriver {
public:
    static constexpr uint64_t kDescOffset = 0, kAvailOffset = 0x800, kUsedOffset = 0xa00;
    static constexpr uint16_t kMaxSize = 128;

    RingDriver(const memory::GuestMemory& mem, uint16_t queue_index) : mem_(mem), base_(0x1000ULL * queue_index) {}

    uint64_t desc() const { return base_ + kDescOffset; }
    uint64_t avail() const { return base_ + kAvailOffset; }
    uint64_t used() const { return base_ + kUsedOffset; }
    uint16_t size() const { return size_; }

    // Sets up `q` as a driver does before DRIVER_OK: size (a power of two up to 128, from the
    // input), ring addresses, ready; clears the rings.
    void configure(virtio::Queue& q, uint8_t size_log2, bool event_idx, bool indirect) {
        size_ = static_cast<uint16_t>(1u << (size_log2 % 8));
        if (size_ > q.max_size()) size_ = q.max_size();
        mem_.fill(memory::GuestAddress(base_), 0x1000, 0);
        q.set_size(size_);
        q.set_desc_table(memory::GuestAddress(desc()));
        q.set_avail_ring(memory::GuestAddress(avail()));
        q.set_used_ring(memory::GuestAddress(used()));
        q.set_event_idx_enabled(event_idx);
        q.set_indirect_enabled(indirect);
        q.set_ready(true);
        next_desc_ = 0;
        avail_idx_ = 0;
    }
    // Forgets the driver's ring state (after the transport set the queue up from registers).
    void restart(uint16_t size) {
        size_ = size;
        next_desc_ = 0;
        avail_idx_ = 0;
    }

    // Decodes one driver action from the input and does it:
    //   0-3  a chain of 1-8 buffers (addresses, lengths, WRITE flags from the input; some
    //        flags and next fields raw), made available
    //   4    the same as one indirect table at an input-chosen address
    //   5    raw bytes written to guest memory (a request header, a payload, a bad ring entry)
    //   6    avail.idx / avail.flags / used_event set to an input value
    void act(FuzzInput& in) {
        const uint8_t op = static_cast<uint8_t>(in.below(7));
        if (op <= 4) {
            add_chain(in, op == 4);
        } else if (op == 5) {
            const uint64_t addr = in.guest_addr();
            const auto data = in.bytes(in.u8());
            mem_.try_write(memory::GuestAddress(addr), data);
        } else {
            const uint16_t v = in.u16();
            switch (in.below(3)) {
                case 0: avail_idx_ = v; put16(avail() + 2, v); break;
                case 1: put16(avail(), v); break;
                default: put16(avail() + 4 + 2ULL * size_, v); break;
            }
        }
    }

    void add_chain(FuzzInput& in, bool indirect) {
        const size_t n = 1 + in.below(8);
        const uint8_t raw = in.u8();  // bit 0: keep the input's flags and next fields as they are
        const uint64_t table = indirect ? in.guest_addr() : 0;
        const uint16_t head = static_cast<uint16_t>(next_desc_ % size_);
        for (size_t i = 0; i < n; i++) {
            const uint64_t addr = in.guest_addr();
            const uint32_t len = in.buffer_len();
            uint16_t flags = in.flag() ? virtio::desc_flags::kWrite : 0;
            uint16_t next = indirect ? static_cast<uint16_t>(i + 1) : static_cast<uint16_t>((head + i + 1) % size_);
            if (i + 1 < n) flags |= virtio::desc_flags::kNext;
            if (raw & 1) {
                flags = in.u16();
                next = in.u16();
            }
            const virtio::Descriptor d{addr, len, flags, next};
            const uint64_t at = indirect ? table + 16 * i : desc() + 16ULL * ((head + i) % size_);
            mem_.try_write(memory::GuestAddress(at), std::span(reinterpret_cast<const uint8_t*>(&d), sizeof d));
        }
        if (indirect) {
            const virtio::Descriptor d{table, static_cast<uint32_t>(16 * n), virtio::desc_flags::kIndirect, 0};
            mem_.try_write(memory::GuestAddress(desc() + 16ULL * head),
                           std::span(reinterpret_cast<const uint8_t*>(&d), sizeof d));
            next_desc_ = static_cast<uint16_t>(next_desc_ + 1);
        } else {
            next_desc_ = static_cast<uint16_t>(next_desc_ + n);
        }
        put16(avail() + 4 + 2ULL * (avail_idx_ % size_), head);
        avail_idx_++;
        put16(avail() + 2, avail_idx_);
    }

private:
    void put16(uint64_t addr, uint16_t v) {
        mem_.try_write(memory::GuestAddress(addr), std::span(reinterpret_cast<const uint8_t*>(&v), 2));
    }

    const memory::GuestMemory& mem_;
    uint64_t base_;
    uint16_t size_ = 1;
    uint16_t next_desc_ = 0;
    uint16_t avail_idx_ = 0;
};

// The features a driver accepts: a subset of those offered (the transport allows no others),
// chosen by a 32-bit mask from the input, always with VERSION_1.
inline uint64_t accept_features(FuzzInput& in, const virtio::VirtioDevice& dev) {
    const uint64_t offered = dev.available_features() | virtio::feature::kVersion1;
    return offered & (in.u32() | virtio::feature::kVersion1);
}

// A kick as the transport delivers it: an exception escaping the device puts it into
// DEVICE_NEEDS_RESET (which `irq` keeps).
inline void kick(virtio::VirtioDevice& dev, uint16_t queue, virtio::testing::FakeInterrupt& irq) {
    try {
        dev.queue_notify(queue);
    } catch (const std::exception&) {
        irq.broken = true;
    }
}

// One configuration space access of 1, 2, 4 or 8 bytes at an offset below `span`, then the
// device's progress and metrics (what the watchdog and the metrics thread read meanwhile).
inline void config_access(FuzzInput& in, virtio::VirtioDevice& dev, uint64_t span) {
    uint8_t buf[8] = {};
    const size_t width = size_t{1} << in.below(4);
    const uint64_t offset = in.u8() % span;
    if (in.flag()) {
        dev.read_config(offset, std::span(buf, width));
    } else {
        const uint64_t v = in.u64();
        std::memcpy(buf, &v, sizeof v);
        dev.write_config(offset, std::span(buf, width));
    }
    dev.progress();
    dev.metrics_json();
}

// No device may publish more used elements than it took chains (unless it broke).
inline void check_used_within_taken(std::span<const virtio::Queue> queues, const virtio::testing::FakeInterrupt& irq) {
    for (const virtio::Queue& q : queues) {
        check(q.next_used() <= q.next_avail() || irq.broken, "more used elements than chains taken");
    }
}

// LLVMFuzzerTestOneInput of a device target: `Fuzzer(memory, input).run()` on the cleared
// device_memory(), with the log off.
template <typename Fuzzer>
int run_device_target(const uint8_t* data, size_t size) {
    quiet_logs();
    const GuardedMemory& guarded = device_memory();
    guarded.clear();
    FuzzInput input(data, size);
    Fuzzer(guarded.get(), input).run();
    return 0;
}

}  // namespace embervm::fuzz
