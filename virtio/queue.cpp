// Split virtqueue: ring layout validation, chain parsing with every guest value checked,
// used ring updates, notification suppression, and the Reader/Writer buffer cursors.
#include "virtio/queue.h"

#include <algorithm>
#include <atomic>
#include <limits>

#include <fmt/format.h>

#include "virtio/saved_state.h"

namespace embervm::virtio {

using memory::GuestAddress;
using memory::GuestMemory;

namespace {

// Split ring layout (spec 2.7): byte offsets inside each area.
constexpr uint64_t kDescSize = sizeof(Descriptor);
constexpr uint64_t kRingFlags = 0;
constexpr uint64_t kRingIdx = 2;
constexpr uint64_t kRingEntries = 4;
constexpr uint64_t kAvailEntrySize = 2;
constexpr uint64_t kUsedEntrySize = 8;

// An indirect table's `next` fields are 16-bit, so no chain can use more entries than this.
constexpr uint64_t kMaxIndirectEntries = 65536;

struct UsedElem {
    uint32_t id;
    uint32_t len;
};
static_assert(sizeof(UsedElem) == kUsedEntrySize);

uint64_t desc_table_bytes(uint16_t size) { return kDescSize * size; }
// flags, idx, ring[size], used_event
uint64_t avail_ring_bytes(uint16_t size) { return kRingEntries + kAvailEntrySize * size + 2; }
// flags, idx, ring[size], avail_event
uint64_t used_ring_bytes(uint16_t size) { return kRingEntries + kUsedEntrySize * size + 2; }

bool is_power_of_two(uint16_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Appends host views of [addr, addr+len) split at region boundaries.
template <typename SpanT>
void append_host_slices(const GuestMemory& mem, GuestAddress addr, uint64_t len, std::vector<SpanT>& out) {
    while (len > 0) {
        const memory::GuestRegion* region = nullptr;
        for (const auto& r : mem.regions()) {
            if (addr.value >= r.start().value && addr.value < r.end()) {
                region = &r;
                break;
            }
        }
        if (region == nullptr) {
            throw QueueError(fmt::format("buffer at {:#x} is outside guest memory", addr.value));
        }
        const uint64_t n = std::min<uint64_t>(len, region->end() - addr.value);
        auto slice = mem.get_slice(addr, n);
        if (!slice) {
            throw QueueError(fmt::format("buffer at {:#x}+{:#x} is outside guest memory", addr.value, n));
        }
        out.emplace_back(slice->data(), slice->size());
        addr = GuestAddress(addr.value + n);
        len -= n;
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Buffer cursors

namespace detail {

BufferCursor::BufferCursor(const GuestMemory& mem, std::span<const Descriptor> buffers)
    : mem_(&mem), buffers_(buffers) {
    for (const auto& d : buffers_) {
        remaining_ += d.len;
    }
}

BufferCursor BufferCursor::split_tail(uint64_t n) {
    BufferCursor tail = *this;
    tail.consume(remaining_ - n, [](GuestAddress, uint64_t) {});
    tail.consumed_ = 0;
    remaining_ -= n;
    return tail;
}

}  // namespace detail

size_t Reader::read(std::span<uint8_t> out) {
    size_t done = 0;
    const GuestMemory& mem = cursor_.memory();
    cursor_.consume(out.size(), [&](GuestAddress addr, uint64_t n) {
        if (!mem.try_read(addr, out.subspan(done, n))) {
            throw QueueError(fmt::format("readable buffer at {:#x}+{:#x} is outside guest memory", addr.value, n));
        }
        done += n;
    });
    return done;
}

bool Reader::read_exact(std::span<uint8_t> out) {
    if (out.size() > available()) {
        return false;
    }
    read(out);
    return true;
}

uint64_t Reader::skip(uint64_t n) { return cursor_.consume(n, [](GuestAddress, uint64_t) {}); }

std::vector<std::span<const uint8_t>> Reader::take_slices(uint64_t max_len) {
    std::vector<std::span<const uint8_t>> out;
    const GuestMemory& mem = cursor_.memory();
    cursor_.consume(max_len, [&](GuestAddress addr, uint64_t n) { append_host_slices(mem, addr, n, out); });
    return out;
}

size_t Writer::write(std::span<const uint8_t> in) {
    size_t done = 0;
    const GuestMemory& mem = cursor_.memory();
    cursor_.consume(in.size(), [&](GuestAddress addr, uint64_t n) {
        if (!mem.try_write(addr, in.subspan(done, n))) {
            throw QueueError(fmt::format("writable buffer at {:#x}+{:#x} is outside guest memory", addr.value, n));
        }
        done += n;
    });
    return done;
}

bool Writer::write_all(std::span<const uint8_t> in) {
    if (in.size() > available()) {
        return false;
    }
    write(in);
    return true;
}

std::vector<std::span<uint8_t>> Writer::take_slices(uint64_t max_len) {
    std::vector<std::span<uint8_t>> out;
    const GuestMemory& mem = cursor_.memory();
    cursor_.consume(max_len, [&](GuestAddress addr, uint64_t n) { append_host_slices(mem, addr, n, out); });
    return out;
}

std::optional<Writer> Writer::split_tail(uint64_t n) {
    if (n > available()) {
        return std::nullopt;
    }
    return Writer(cursor_.split_tail(n));
}

// ---------------------------------------------------------------------------------------
// Queue

Queue::Queue(uint16_t max_size) : max_size_(max_size), size_(max_size) {
    if (!is_power_of_two(max_size) || max_size > kMaxQueueSize) {
        throw std::invalid_argument(fmt::format("virtqueue max size {} is not a power of two in [1, {}]", max_size,
                                                kMaxQueueSize));
    }
}

void Queue::reset() { *this = Queue(max_size_); }

void Queue::save_state(StateWriter& w) const {
    w.put<uint32_t>(state_version::kQueue);
    w.put(max_size_);
    w.put(size_);
    w.put_bool(ready_);
    w.put(desc_table_.value);
    w.put(avail_ring_.value);
    w.put(used_ring_.value);
    w.put_bool(event_idx_enabled_);
    w.put_bool(indirect_enabled_);
    w.put(next_avail_);
    w.put(next_used_);
    w.put_bool(signalled_used_.has_value());
    w.put(signalled_used_.value_or(0));
}

void Queue::restore_state(StateReader& r) {
    r.get_version(state_version::kQueue);
    const auto max_size = r.get<uint16_t>("queue max size");
    if (max_size != max_size_) {
        r.fail("queue max size", fmt::format("{} where this device has {}", max_size, max_size_));
    }
    Queue q(max_size_);
    q.size_ = r.get<uint16_t>("queue size");
    if (q.size_ > max_size_) r.fail("queue size", fmt::format("{} exceeds the maximum {}", q.size_, max_size_));
    q.ready_ = r.get_bool("queue ready");
    q.desc_table_ = GuestAddress(r.get<uint64_t>("descriptor table"));
    q.avail_ring_ = GuestAddress(r.get<uint64_t>("available ring"));
    q.used_ring_ = GuestAddress(r.get<uint64_t>("used ring"));
    q.event_idx_enabled_ = r.get_bool("event idx");
    q.indirect_enabled_ = r.get_bool("indirect descriptors");
    q.next_avail_ = r.get<uint16_t>("next avail");
    q.cached_avail_idx_ = q.next_avail_;
    q.next_used_ = r.get<uint16_t>("next used");
    const bool signalled = r.get_bool("signalled used present");
    const auto signalled_used = r.get<uint16_t>("signalled used");
    if (signalled) q.signalled_used_ = signalled_used;
    *this = q;
}

std::optional<std::string> Queue::validate(const GuestMemory& mem) const {
    if (size_ == 0) {
        return "queue size is 0";
    }
    if (!is_power_of_two(size_)) {
        return fmt::format("queue size {} is not a power of two", size_);
    }
    if (size_ > max_size_) {
        return fmt::format("queue size {} exceeds the maximum {}", size_, max_size_);
    }
    struct Area {
        const char* name;
        GuestAddress addr;
        uint64_t len;
        uint64_t align;
    };
    const Area areas[] = {
        {"descriptor table", desc_table_, desc_table_bytes(size_), 16},
        {"available ring", avail_ring_, avail_ring_bytes(size_), 2},
        {"used ring", used_ring_, used_ring_bytes(size_), 4},
    };
    for (const auto& a : areas) {
        if (a.addr.value % a.align != 0) {
            return fmt::format("{} at {:#x} is not {}-byte aligned", a.name, a.addr.value, a.align);
        }
        if (!mem.check_range(a.addr, a.len)) {
            return fmt::format("{} [{:#x}, +{:#x}) is outside guest memory", a.name, a.addr.value, a.len);
        }
    }
    return std::nullopt;
}

void Queue::check_usable() const {
    if (!is_power_of_two(size_)) {
        throw QueueError(fmt::format("queue size {} is not usable", size_));
    }
}

template <typename T>
T Queue::read_ring(const GuestMemory& mem, GuestAddress base, uint64_t offset, const char* what) const {
    T value;
    const auto addr = base.checked_add(offset);
    if (!addr || !mem.try_read(*addr, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&value), sizeof(T)))) {
        throw QueueError(fmt::format("{} at {:#x}+{:#x} is outside guest memory", what, base.value, offset));
    }
    return value;
}

template <typename T>
void Queue::write_ring(const GuestMemory& mem, GuestAddress base, uint64_t offset, const T& value,
                       const char* what) const {
    const auto addr = base.checked_add(offset);
    if (!addr ||
        !mem.try_write(*addr, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&value), sizeof(T)))) {
        throw QueueError(fmt::format("{} at {:#x}+{:#x} is outside guest memory", what, base.value, offset));
    }
}

uint16_t Queue::read_avail_idx(const GuestMemory& mem) {
    const auto idx = read_ring<uint16_t>(mem, avail_ring_, kRingIdx, "avail.idx");
    // The ring entries (and the descriptors they name) were written before avail.idx.
    std::atomic_thread_fence(std::memory_order_acquire);
    const uint16_t pending = static_cast<uint16_t>(idx - next_avail_);
    if (pending > size_) {
        throw QueueError(fmt::format("avail.idx {} is {} entries ahead of the device's {} (queue size {})", idx,
                                     pending, next_avail_, size_));
    }
    cached_avail_idx_ = idx;
    return idx;
}

bool Queue::has_available(const GuestMemory& mem) {
    if (!ready_) {
        return false;
    }
    check_usable();
    if (next_avail_ != cached_avail_idx_) {
        return true;
    }
    return read_avail_idx(mem) != next_avail_;
}

std::optional<DescriptorChain> Queue::pop_available(const GuestMemory& mem) {
    if (!has_available(mem)) {
        return std::nullopt;
    }
    const uint64_t slot = next_avail_ % size_;
    const auto head = read_ring<uint16_t>(mem, avail_ring_, kRingEntries + kAvailEntrySize * slot, "avail.ring entry");
    DescriptorChain chain = parse_chain(mem, head);
    ++next_avail_;
    return chain;
}

void Queue::undo_pop() { --next_avail_; }

DescriptorChain Queue::parse_chain(const GuestMemory& mem, uint16_t head) const {
    if (head >= size_) {
        throw QueueError(fmt::format("descriptor chain head {} is out of range (queue size {})", head, size_));
    }
    DescriptorChain chain;
    chain.head_index_ = head;

    GuestAddress table = desc_table_;
    uint64_t table_entries = size_;  // valid indices in `table`
    bool in_indirect = false;
    uint64_t index = head;
    uint64_t visited = 0;  // descriptors read from `table`; more than table_entries means a loop
    uint64_t total_len = 0;
    bool seen_writable = false;

    for (;;) {
        if (++visited > table_entries) {
            throw QueueError(fmt::format("descriptor chain from head {} is longer than its {} ({} entries): a loop?",
                                         head, in_indirect ? "indirect table" : "queue", table_entries));
        }
        const Descriptor desc = read_ring<Descriptor>(mem, table, kDescSize * index,
                                                      in_indirect ? "indirect descriptor" : "descriptor");
        if (desc.is_indirect()) {
            if (!indirect_enabled_) {
                throw QueueError(fmt::format("descriptor {} is INDIRECT but VIRTIO_RING_F_INDIRECT_DESC was not negotiated",
                                             index));
            }
            if (in_indirect) {
                throw QueueError(fmt::format("indirect descriptor {} inside an indirect table", index));
            }
            if (desc.has_next()) {
                throw QueueError(fmt::format("descriptor {} has both INDIRECT and NEXT", index));
            }
            if (desc.len == 0 || desc.len % kDescSize != 0) {
                throw QueueError(fmt::format("indirect table length {:#x} is not a non-zero multiple of 16", desc.len));
            }
            if (desc.len / kDescSize > kMaxIndirectEntries) {
                throw QueueError(fmt::format("indirect table has {} entries (more than {})", desc.len / kDescSize,
                                             kMaxIndirectEntries));
            }
            if (!mem.check_range(GuestAddress(desc.addr), desc.len)) {
                throw QueueError(fmt::format("indirect table [{:#x}, +{:#x}) is outside guest memory", desc.addr,
                                             desc.len));
            }
            table = GuestAddress(desc.addr);
            table_entries = desc.len / kDescSize;
            in_indirect = true;
            index = 0;
            visited = 0;
            continue;
        }

        if (!GuestAddress(desc.addr).checked_add(desc.len)) {
            throw QueueError(fmt::format("buffer {:#x}+{:#x} overflows the address space", desc.addr, desc.len));
        }
        if (!mem.check_range(GuestAddress(desc.addr), desc.len)) {
            throw QueueError(fmt::format("buffer [{:#x}, +{:#x}) is outside guest memory", desc.addr, desc.len));
        }
        total_len += desc.len;
        if (total_len > std::numeric_limits<uint32_t>::max()) {
            throw QueueError(fmt::format("descriptor chain from head {} is longer than 4 GiB", head));
        }
        if (desc.is_write_only()) {
            seen_writable = true;
            chain.writable_len_ += desc.len;
        } else {
            chain.write_before_read_ |= seen_writable;
            chain.readable_len_ += desc.len;
            ++chain.num_readable_;
        }
        chain.descriptors_.push_back(desc);

        if (!desc.has_next()) {
            break;
        }
        if (desc.next >= table_entries) {
            throw QueueError(fmt::format("descriptor {} has next {} out of range ({} entries)", index, desc.next,
                                         table_entries));
        }
        index = desc.next;
    }

    if (chain.write_before_read_) {
        std::stable_partition(chain.descriptors_.begin(), chain.descriptors_.end(),
                              [](const Descriptor& d) { return !d.is_write_only(); });
    }
    return chain;
}

void Queue::add_used(const GuestMemory& mem, uint16_t head_index, uint32_t len) {
    const UsedElement e{head_index, len};
    add_used_batch(mem, std::span<const UsedElement>(&e, 1));
}

void Queue::add_used_batch(const GuestMemory& mem, std::span<const UsedElement> elements) {
    check_usable();
    if (!ready_) {
        throw QueueError("add_used on a queue that is not ready");
    }
    if (elements.size() > size_) {
        throw QueueError(fmt::format("add_used: {} elements do not fit a queue of size {}", elements.size(), size_));
    }
    for (const UsedElement& e : elements) {
        if (e.head_index >= size_) {
            throw QueueError(fmt::format("add_used: head {} is out of range (queue size {})", e.head_index, size_));
        }
    }
    uint16_t new_idx = next_used_;
    for (const UsedElement& e : elements) {
        const uint64_t slot = new_idx % size_;
        write_ring(mem, used_ring_, kRingEntries + kUsedEntrySize * slot, UsedElem{e.head_index, e.len},
                   "used.ring entry");
        new_idx++;
    }
    // The elements must be visible before the index that publishes them.
    std::atomic_thread_fence(std::memory_order_release);
    write_ring(mem, used_ring_, kRingIdx, new_idx, "used.idx");
    next_used_ = new_idx;
}

bool Queue::needs_notification(const GuestMemory& mem) {
    if (!ready_) {
        return false;
    }
    check_usable();
    // Order our used.idx store before the load of used_event / avail.flags (store-load).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (event_idx_enabled_) {
        const auto used_event = read_ring<uint16_t>(mem, avail_ring_, kRingEntries + kAvailEntrySize * size_, "used_event");
        const auto old = signalled_used_;
        signalled_used_ = next_used_;
        if (!old) {
            return true;
        }
        return vring_need_event(used_event, next_used_, *old);
    }
    const auto flags = read_ring<uint16_t>(mem, avail_ring_, kRingFlags, "avail.flags");
    return (flags & kAvailFlagNoInterrupt) == 0;
}

void Queue::disable_notification(const GuestMemory& mem) {
    if (!ready_ || event_idx_enabled_) {
        return;
    }
    write_ring(mem, used_ring_, kRingFlags, kUsedFlagNoNotify, "used.flags");
}

bool Queue::enable_notification(const GuestMemory& mem) {
    if (!ready_) {
        return false;
    }
    check_usable();
    if (event_idx_enabled_) {
        write_ring(mem, used_ring_, kRingEntries + kUsedEntrySize * size_, next_avail_, "avail_event");
    } else {
        write_ring(mem, used_ring_, kRingFlags, uint16_t{0}, "used.flags");
    }
    // Our store must be visible before we look at avail.idx again (store-load), or a buffer the
    // driver adds in between might not be kicked and not be seen.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return read_avail_idx(mem) != next_avail_;
}

std::optional<QueueProgress> Queue::progress(const GuestMemory& mem) const {
    if (!ready_ || !is_power_of_two(size_)) {
        return std::nullopt;
    }
    try {
        QueueProgress p;
        p.size = size_;
        p.avail_idx = read_ring<uint16_t>(mem, avail_ring_, kRingIdx, "avail.idx");
        p.next_avail = next_avail_;
        p.used_idx = next_used_;
        if (event_idx_enabled_) {
            p.used_event = read_ring<uint16_t>(mem, avail_ring_, kRingEntries + kAvailEntrySize * size_, "used_event");
        }
        return p;
    } catch (const QueueError&) {
        return std::nullopt;
    }
}

}  // namespace embervm::virtio
