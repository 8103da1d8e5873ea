// Fuzz target: the split virtqueue (virtio/queue.h), device side, against rings and tables in
// fuzzed guest memory. The input is a queue configuration followed by a sequence of driver
// actions (descriptors, ring entries, indices, raw bytes) and device calls (pop, undo, Reader
// and Writer on a popped chain, add_used, batches, notification suppression, EVENT_IDX).
//
// Oracles besides the sanitizers: the guest memory lies between PROT_NONE pages (any access
// just outside faults); every chain's buffers lie inside guest memory and add up; host views
// lie inside a region; a Reader returns what guest memory holds; and after every device call,
// guest memory differs from a shadow copy only in the used ring and (for Writer calls) in the
// chain's writable buffers. QueueError is the one exception the queue may throw for a guest
// error: the target then does what a device does (stops, and the driver resets the queue).
#include <algorithm>
#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "tests/fuzz/virtio_fuzz.h"
#include "virtio/queue.h"

using embervm::fuzz::check;
using embervm::fuzz::FuzzInput;
using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using embervm::virtio::DescriptorChain;
using embervm::virtio::Queue;
using embervm::virtio::QueueError;

namespace {

// 48 KiB: [0, 32 KiB) and [32 KiB, 48 KiB), adjacent; a hole above. Addresses from the input
// are mostly below 64 KiB, so three quarters of them are guest memory.
const embervm::fuzz::GuardedMemory& queue_memory() {
    static const embervm::fuzz::GuardedMemory mem({{GuestAddress(0), 0x8000}, {GuestAddress(0x8000), 0x4000}});
    return mem;
}

constexpr uint16_t kMaxSize = 256;
constexpr size_t kMaxOps = 128;
constexpr size_t kMaxPopped = 16;

struct Config {
    uint16_t size;
    uint64_t desc, avail, used;
    bool event_idx, indirect;
};

// A copy of guest memory as the driver last left it; after a device call, the bytes that differ
// must lie in what the device may write.
class Shadow {
public:
    explicit Shadow(const GuestMemory& mem) : mem_(mem) {
        for (const auto& r : mem.regions()) copies_.emplace_back(r.host_base(), r.host_base() + r.size());
    }
    // Takes guest memory as it is as the reference.
    EMBERVM_FUZZ_HARNESS_LOOP void sync() {
        for (size_t i = 0; i < copies_.size(); i++) {
            const auto& r = mem_.regions()[i];
            std::copy(r.host_base(), r.host_base() + r.size(), copies_[i].begin());
        }
    }
    // The driver wrote `data` at `addr` (all of it inside guest memory): the same in the copy.
    EMBERVM_FUZZ_HARNESS_LOOP void driver_wrote(uint64_t addr, std::span<const uint8_t> data) {
        for (size_t k = 0; k < data.size(); k++) {
            const uint64_t a = addr + k;
            for (size_t i = 0; i < copies_.size(); i++) {
                const auto& r = mem_.regions()[i];
                if (a >= r.start().value && a < r.end()) copies_[i][a - r.start().value] = data[k];
            }
        }
    }
    // Each byte that differs from the copy must satisfy `allowed(guest_address)`; the copy then
    // takes it.
    template <typename Allowed>
    EMBERVM_FUZZ_HARNESS_LOOP void check_writes(Allowed&& allowed) {
        for (size_t i = 0; i < copies_.size(); i++) {
            const auto& r = mem_.regions()[i];
            if (std::equal(copies_[i].begin(), copies_[i].end(), r.host_base())) continue;
            for (size_t b = 0; b < r.size(); b++) {
                if (copies_[i][b] != r.host_base()[b]) {
                    check(allowed(r.start().value + b), "the queue wrote guest memory outside the used ring and the chain's writable buffers");
                    copies_[i][b] = r.host_base()[b];
                }
            }
        }
    }
    // What the driver had at [addr, addr + n) (inside guest memory).
    EMBERVM_FUZZ_HARNESS_LOOP std::vector<uint8_t> bytes(uint64_t addr, size_t n) const {
        std::vector<uint8_t> out(n);
        for (size_t k = 0; k < n; k++) {
            const uint64_t a = addr + k;
            for (size_t i = 0; i < copies_.size(); i++) {
                const auto& r = mem_.regions()[i];
                if (a >= r.start().value && a < r.end()) out[k] = copies_[i][a - r.start().value];
            }
        }
        return out;
    }

private:
    const GuestMemory& mem_;
    std::vector<std::vector<uint8_t>> copies_;
};

bool in(uint64_t a, uint64_t start, uint64_t len) { return a >= start && a - start < len; }

class QueueFuzzer {
public:
    // `shadow` is reused between inputs (run() takes guest memory as it is as its reference):
    // a fresh 48 KiB copy per input cost more than the input's operations.
    QueueFuzzer(const GuestMemory& mem, Shadow& shadow, FuzzInput& input)
        : mem_(mem), in_(input), shadow_(shadow), queue_(kMaxSize) {}

    void run() {
        read_config();
        configure();
        shadow_.sync();
        for (size_t n = 0; n < kMaxOps && !in_.empty(); n++) {
            try {
                step();
            } catch (const QueueError&) {
                // A device stops using the queue; the driver resets it and sets it up again.
                shadow_.check_writes([&](uint64_t a) { return in_used_ring(a) || in_writable(a); });
                configure();
            }
        }
    }

private:
    void read_config() {
        const uint8_t bits = in_.u8();
        // Mostly a power of two up to 256; sometimes any value (validate() must refuse it).
        cfg_.size = (bits & 0x80) != 0 ? in_.u16() : static_cast<uint16_t>(1u << ((bits & 0xf) % 9));
        cfg_.event_idx = (bits & 0x10) != 0;
        cfg_.indirect = (bits & 0x20) != 0;
        cfg_.desc = in_.guest_addr(1);
        cfg_.avail = in_.guest_addr(1);
        cfg_.used = in_.guest_addr(1);
        use_invalid_ = (bits & 0x40) != 0;
    }

    void configure() {
        queue_.reset();
        popped_.clear();
        writable_.clear();
        last_pop_ = false;
        queue_.set_size(cfg_.size);
        queue_.set_desc_table(GuestAddress(cfg_.desc));
        queue_.set_avail_ring(GuestAddress(cfg_.avail));
        queue_.set_used_ring(GuestAddress(cfg_.used));
        queue_.set_event_idx_enabled(cfg_.event_idx);
        queue_.set_indirect_enabled(cfg_.indirect);
        // The transport activates only valid queues; an invalid one is used anyway when the
        // input says so (the calls must then fail with QueueError, never access outside).
        const bool valid = queue_.is_valid(mem_);
        queue_.set_ready(valid || use_invalid_);
    }

    bool in_used_ring(uint64_t a) const {
        return in(a, cfg_.used, 4 + 8ULL * queue_.size() + 2);
    }
    bool in_writable(uint64_t a) const {
        for (const auto& d : writable_) {
            if (in(a, d.addr, d.len)) return true;
        }
        return false;
    }
    bool ring_valid() const { return queue_.is_valid(mem_); }

    void put(uint64_t addr, std::span<const uint8_t> data) {
        if (mem_.try_write(GuestAddress(addr), data)) shadow_.driver_wrote(addr, data);
    }
    template <typename T>
    void put_obj(uint64_t addr, const T& v) {
        put(addr, std::span(reinterpret_cast<const uint8_t*>(&v), sizeof v));
    }

    void step() {
        const uint8_t op = static_cast<uint8_t>(in_.below(16));
        const bool was_pop = last_pop_;
        last_pop_ = false;
        writable_.clear();
        switch (op) {
            // ---- driver actions ----
            case 0: {  // raw bytes
                const uint64_t addr = in_.guest_addr(1);
                put(addr, in_.bytes(in_.u8()));
                break;
            }
            case 1:
            case 2: {  // a descriptor in the queue's table or anywhere (an indirect table)
                const uint64_t table = op == 1 ? cfg_.desc : in_.guest_addr(1);
                const uint16_t index = in_.u8();
                const embervm::virtio::Descriptor d{in_.guest_addr(1), in_.buffer_len(),
                                                    static_cast<uint16_t>(in_.u8() & 0x7), in_.u16()};
                put_obj(table + 16ULL * index, d);
                break;
            }
            case 3: {  // make a head available: mostly one in range, sometimes any value
                const uint16_t raw = in_.u16();
                const uint16_t head = in_.flag() ? raw : static_cast<uint16_t>(raw % std::max<uint16_t>(cfg_.size, 1));
                if (cfg_.size != 0) put_obj<uint16_t>(cfg_.avail + 4 + 2ULL * (avail_idx_ % cfg_.size), head);
                avail_idx_++;
                put_obj<uint16_t>(cfg_.avail + 2, avail_idx_);
                break;
            }
            case 4: {  // avail.idx, avail.flags, used_event
                const uint16_t v = in_.u16();
                switch (in_.below(3)) {
                    case 0: avail_idx_ = v; put_obj<uint16_t>(cfg_.avail + 2, v); break;
                    case 1: put_obj<uint16_t>(cfg_.avail, v); break;
                    default: put_obj<uint16_t>(cfg_.avail + 4 + 2ULL * cfg_.size, v); break;
                }
                break;
            }
            // ---- device calls ----
            case 5:
            case 6: {
                auto chain = queue_.pop_available(mem_);
                shadow_.check_writes([](uint64_t) { return false; });
                if (!chain) break;
                embervm::fuzz::check_chain(mem_, *chain);
                last_pop_ = true;
                if (popped_.size() == kMaxPopped) popped_.pop_front();
                popped_.push_back(std::move(*chain));
                break;
            }
            case 7:
                if (was_pop) {
                    queue_.undo_pop();
                    popped_.pop_back();
                    check(queue_.has_available(mem_), "undo_pop: the chain is not available again");
                }
                break;
            case 8:
                read_chain();
                break;
            case 9:
                write_chain();
                break;
            case 10:
            case 11: {
                const uint32_t len = in_.u32();
                uint16_t head = in_.u16();
                if (!popped_.empty() && in_.u8() != 0xff) head = pick_popped().head_index();
                const uint16_t before = queue_.next_used();
                queue_.add_used(mem_, head, len);
                shadow_.check_writes([&](uint64_t a) { return in_used_ring(a); });
                check(queue_.next_used() == static_cast<uint16_t>(before + 1), "add_used did not advance used.idx");
                check(mem_.read_obj<uint16_t>(GuestAddress(cfg_.used + 2)) == queue_.next_used(),
                      "used.idx in guest memory is not the queue's");
                break;
            }
            case 12: {
                std::vector<Queue::UsedElement> batch;
                const size_t n = in_.below(8);
                for (size_t i = 0; i < n && !popped_.empty(); i++) batch.push_back({pick_popped().head_index(), in_.u32()});
                const uint16_t before = queue_.next_used();
                queue_.add_used_batch(mem_, batch);
                shadow_.check_writes([&](uint64_t a) { return in_used_ring(a); });
                check(queue_.next_used() == static_cast<uint16_t>(before + batch.size()), "add_used_batch: used.idx");
                break;
            }
            case 13:
                queue_.needs_notification(mem_);
                shadow_.check_writes([](uint64_t) { return false; });
                break;
            case 14:
                if (in_.flag()) {
                    queue_.disable_notification(mem_);
                } else {
                    queue_.enable_notification(mem_);
                }
                shadow_.check_writes([&](uint64_t a) { return in_used_ring(a); });
                break;
            default: {
                queue_.has_available(mem_);
                const auto p = queue_.progress(mem_);
                if (p) check(p->next_avail == queue_.next_avail() && p->used_idx == queue_.next_used(), "progress");
                shadow_.check_writes([](uint64_t) { return false; });
                break;
            }
        }
    }

    const DescriptorChain& pick_popped() { return popped_[in_.below(popped_.size())]; }

    // A Reader over a popped chain: what it returns is what the driver wrote there.
    void read_chain() {
        if (popped_.empty()) return;
        const DescriptorChain& chain = pick_popped();
        auto reader = chain.reader(mem_);
        const size_t skip = in_.u16();
        const uint64_t skipped = reader.skip(skip);
        check(skipped == std::min<uint64_t>(skip, chain.readable_len()), "Reader::skip count");
        if (in_.flag()) {
            const auto slices = reader.take_slices(in_.u32());
            for (const auto& s : slices) check(queue_memory().host_inside(s.data(), s.size()), "Reader slice outside guest memory");
        } else {
            std::vector<uint8_t> out(in_.u16());
            const size_t n = reader.read(out);
            check(n == std::min<uint64_t>(out.size(), chain.readable_len() - skipped), "Reader::read count");
            // The same bytes gathered from the shadow copy.
            std::vector<uint8_t> want;
            uint64_t pos = 0;
            for (const auto& d : chain.readable()) {
                const uint64_t from = std::max<uint64_t>(pos, skipped), to = std::min<uint64_t>(pos + d.len, skipped + n);
                if (from < to) {
                    const auto part = shadow_.bytes(d.addr + (from - pos), to - from);
                    want.insert(want.end(), part.begin(), part.end());
                }
                pos += d.len;
            }
            check(std::equal(want.begin(), want.end(), out.begin()), "Reader returned other bytes than guest memory holds");
        }
        shadow_.check_writes([](uint64_t) { return false; });
    }

    // A Writer over a popped chain (with a status-byte tail split off, as virtio-blk does).
    void write_chain() {
        if (popped_.empty()) return;
        const DescriptorChain& chain = pick_popped();
        for (const auto& d : chain.writable()) writable_.push_back(d);
        auto writer = chain.writer(mem_);
        const uint8_t mode = in_.u8();
        if (mode & 1) {
            if (auto tail = writer.split_tail(in_.u8() % 4)) {
                const uint8_t status = 0x5a;
                tail->write(std::span(&status, 1));
            }
        }
        if (mode & 2) {
            const auto slices = writer.take_slices(in_.u32());
            for (const auto& s : slices) {
                check(queue_memory().host_inside(s.data(), s.size()), "Writer slice outside guest memory");
                std::fill(s.begin(), s.end(), uint8_t{0xa5});
            }
        } else {
            std::vector<uint8_t> data(in_.u16(), 0x3c);
            const size_t n = writer.write(data);
            check(n <= data.size() && writer.bytes_written() <= chain.writable_len(), "Writer::write count");
        }
        shadow_.check_writes([&](uint64_t a) { return in_writable(a); });
    }

    const GuestMemory& mem_;
    FuzzInput& in_;
    Shadow& shadow_;
    Queue queue_;
    Config cfg_{};
    bool use_invalid_ = false;
    uint16_t avail_idx_ = 0;
    std::deque<DescriptorChain> popped_;
    std::vector<embervm::virtio::Descriptor> writable_;  // what the current device call may write
    bool last_pop_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto& guarded = queue_memory();
    static Shadow shadow(guarded.get());
    guarded.clear();
    FuzzInput input(data, size);
    QueueFuzzer(guarded.get(), shadow, input).run();
    return 0;
}
