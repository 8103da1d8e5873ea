// Split virtqueue (virtio 1.x, spec 2.7), device side: the descriptor table, available ring
// and used ring live in guest memory and are only ever touched through memory::GuestMemory.
//
// A device handler reads like this (rust-vmm virtio-queue style):
//
//     queue.disable_notification(mem);
//     do {
//         while (auto chain = queue.pop_available(mem)) {
//             Reader in = chain->reader(mem);
//             Writer out = chain->writer(mem);
//             ... handle the request ...
//             queue.add_used(mem, chain->head_index(), out.bytes_written());
//         }
//     } while (queue.enable_notification(mem));   // re-check: buffers added meanwhile?
//     if (queue.needs_notification(mem)) interrupt.signal_used_queue(index);
//
// Error convention: every value read from guest memory is validated before it is used. A
// violation of the spec by the driver (bad head or next index, a loop, a buffer outside guest
// memory, a malformed indirect table, the available index jumping ahead by more than the queue
// size, ...) throws QueueError from the device-side calls below (pop_available, has_available,
// enable_notification; the others only if the rings lie outside guest memory, i.e. on a queue
// that failed validate(), or on a device bug such as an add_used head that is out of range).
// Nothing else is thrown for guest errors, and no access ever leaves guest memory. The device
// reacts to QueueError by reporting DeviceInterrupt::device_error() (DEVICE_NEEDS_RESET) and by
// not using the queue again until reset; the MMIO transport does that for exceptions escaping
// VirtioDevice::queue_notify(). A writable descriptor followed by a readable one is not an
// error here: DescriptorChain::has_write_before_read() reports it and the device decides.
//
// Threading: a Queue is not synchronised. The transport configures it before activation; the
// device then uses it from one thread at a time (normally the event-loop thread).
#pragma once

#include <bit>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/virtio_defs.h"
#include "vmm/sys/state_stream.h"

namespace embervm::virtio {

static_assert(std::endian::native == std::endian::little, "virtio 1.x rings are little-endian");

// The driver broke the virtqueue rules; the device must stop using the queue (needs reset).
class QueueError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// One descriptor as laid out in guest memory (spec 2.7.5).
struct Descriptor {
    uint64_t addr = 0;
    uint32_t len = 0;
    uint16_t flags = 0;
    uint16_t next = 0;

    bool is_write_only() const { return (flags & desc_flags::kWrite) != 0; }
    bool has_next() const { return (flags & desc_flags::kNext) != 0; }
    bool is_indirect() const { return (flags & desc_flags::kIndirect) != 0; }
};
static_assert(sizeof(Descriptor) == 16);

// Event-index test of the spec (2.7.10): true if `event_idx` lies in (old_idx, new_idx], all
// modulo 2^16. `old_idx` is the index at the last notification, `new_idx` the current one.
constexpr bool vring_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
    return static_cast<uint16_t>(new_idx - event_idx - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

namespace detail {
// A position inside an ordered list of guest buffers (already validated to lie in guest
// memory), limited to `remaining()` bytes. Shared by Reader and Writer.
class BufferCursor {
public:
    BufferCursor(const memory::GuestMemory& mem, std::span<const Descriptor> buffers);

    uint64_t remaining() const { return remaining_; }
    uint64_t consumed() const { return consumed_; }
    const memory::GuestMemory& memory() const { return *mem_; }

    // Consumes min(n, remaining()) bytes, calling fn(GuestAddress, uint64_t len) for each
    // piece that is contiguous in guest-physical space. Returns the bytes consumed.
    template <typename Fn>
    uint64_t consume(uint64_t n, Fn&& fn) {
        n = n < remaining_ ? n : remaining_;
        uint64_t done = 0;
        while (done < n) {
            const Descriptor& d = buffers_[index_];
            const uint64_t left_in_buffer = d.len - offset_;
            if (left_in_buffer == 0) {  // zero-length buffer or the end of one
                ++index_;
                offset_ = 0;
                continue;
            }
            const uint64_t k = left_in_buffer < n - done ? left_in_buffer : n - done;
            fn(memory::GuestAddress(d.addr + offset_), k);
            offset_ += k;
            done += k;
        }
        remaining_ -= n;
        consumed_ += n;
        return n;
    }

    // Splits off the last n bytes (n <= remaining()) as a new cursor; this one keeps the rest.
    BufferCursor split_tail(uint64_t n);

private:
    const memory::GuestMemory* mem_;
    std::span<const Descriptor> buffers_;
    size_t index_ = 0;
    uint64_t offset_ = 0;  // within buffers_[index_]
    uint64_t remaining_ = 0;
    uint64_t consumed_ = 0;
};
}  // namespace detail

// Copies out of the device-readable buffers of a chain, in order, bounded by their lengths.
// Valid while the DescriptorChain it came from is alive.
class Reader {
public:
    Reader(const memory::GuestMemory& mem, std::span<const Descriptor> buffers) : cursor_(mem, buffers) {}

    uint64_t available() const { return cursor_.remaining(); }
    uint64_t bytes_read() const { return cursor_.consumed(); }
    // Copies min(out.size(), available()) bytes; returns how many.
    size_t read(std::span<uint8_t> out);
    // Copies exactly out.size() bytes, or nothing (returning false) if fewer are available.
    bool read_exact(std::span<uint8_t> out);
    template <typename T>
    std::optional<T> read_obj() {
        static_assert(std::is_trivially_copyable_v<T>);
        T obj;
        if (!read_exact(std::span<uint8_t>(reinterpret_cast<uint8_t*>(&obj), sizeof(T)))) {
            return std::nullopt;
        }
        return obj;
    }
    // Skips up to n bytes; returns how many.
    uint64_t skip(uint64_t n);
    // Consumes up to max_len bytes and returns them as host views for zero-copy I/O (pwritev,
    // io_uring); each view lies inside one guest memory region.
    std::vector<std::span<const uint8_t>> take_slices(uint64_t max_len);

private:
    detail::BufferCursor cursor_;
};

// Copies into the device-writable buffers of a chain, in order, bounded by their lengths.
// Valid while the DescriptorChain it came from is alive.
class Writer {
public:
    Writer(const memory::GuestMemory& mem, std::span<const Descriptor> buffers) : cursor_(mem, buffers) {}

    uint64_t available() const { return cursor_.remaining(); }
    // Bytes written (or handed out by take_slices) so far: the `len` of the used element.
    uint64_t bytes_written() const { return cursor_.consumed(); }
    // Copies min(in.size(), available()) bytes; returns how many.
    size_t write(std::span<const uint8_t> in);
    // Copies all of `in`, or nothing (returning false) if it does not fit.
    bool write_all(std::span<const uint8_t> in);
    template <typename T>
    bool write_obj(const T& obj) {
        static_assert(std::is_trivially_copyable_v<T>);
        return write_all(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&obj), sizeof(T)));
    }
    // Consumes up to max_len bytes and returns them as host views to be filled (preadv,
    // io_uring); they count as written. Each view lies inside one guest memory region.
    std::vector<std::span<uint8_t>> take_slices(uint64_t max_len);
    // Splits off the last n bytes as their own Writer (e.g. virtio-blk's status byte); this
    // Writer keeps the bytes before them. nullopt if fewer than n bytes are available.
    std::optional<Writer> split_tail(uint64_t n);

private:
    explicit Writer(detail::BufferCursor cursor) : cursor_(cursor) {}
    detail::BufferCursor cursor_;
};

// A validated snapshot of one available descriptor chain (direct descriptors and at most one
// level of indirect table): the descriptors were copied out of guest memory while parsing,
// so later guest writes to the table cannot change what the device sees.
class DescriptorChain {
public:
    // The head index to hand back in Queue::add_used().
    uint16_t head_index() const { return head_index_; }
    // Device-readable buffers, then device-writable buffers, each group in chain order. The
    // indirect descriptor itself is not a buffer and does not appear.
    std::span<const Descriptor> readable() const {
        return std::span<const Descriptor>(descriptors_).first(num_readable_);
    }
    std::span<const Descriptor> writable() const {
        return std::span<const Descriptor>(descriptors_).subspan(num_readable_);
    }
    // All buffers: readable() followed by writable() (the chain order unless
    // has_write_before_read()).
    std::span<const Descriptor> descriptors() const { return descriptors_; }
    // Total lengths; their sum fits in uint32_t (checked while parsing).
    uint32_t readable_len() const { return readable_len_; }
    uint32_t writable_len() const { return writable_len_; }
    // The driver put a device-writable descriptor before a device-readable one (spec 2.7.4.2
    // forbids it). Devices that depend on the order treat this as a fatal error.
    bool has_write_before_read() const { return write_before_read_; }

    Reader reader(const memory::GuestMemory& mem) const { return Reader(mem, readable()); }
    Writer writer(const memory::GuestMemory& mem) const { return Writer(mem, writable()); }

private:
    friend class Queue;
    DescriptorChain() = default;

    uint16_t head_index_ = 0;
    std::vector<Descriptor> descriptors_;
    size_t num_readable_ = 0;
    uint32_t readable_len_ = 0;
    uint32_t writable_len_ = 0;
    bool write_before_read_ = false;
};

// A snapshot of one queue (Queue::progress).
struct QueueProgress {
    uint16_t index = 0;       // the queue's index in its device (set by the device)
    uint16_t size = 0;
    uint16_t avail_idx = 0;   // the driver's avail.idx
    uint16_t next_avail = 0;  // how far the device has taken buffers
    uint16_t used_idx = 0;    // the device's used.idx
    // EVENT_IDX only: the driver's used_event (it wants an interrupt once used_idx passes it).
    std::optional<uint16_t> used_event;
};

class Queue {
public:
    // `max_size` is the device's limit (QueueNumMax): a power of two in [1, kMaxQueueSize];
    // anything else is a programming error (std::invalid_argument).
    explicit Queue(uint16_t max_size);

    // ---- Configuration, written by the transport before activation ----
    uint16_t max_size() const { return max_size_; }
    uint16_t size() const { return size_; }  // starts at max_size()
    void set_size(uint16_t size) { size_ = size; }
    bool ready() const { return ready_; }
    void set_ready(bool ready) { ready_ = ready; }
    memory::GuestAddress desc_table() const { return desc_table_; }
    void set_desc_table(memory::GuestAddress addr) { desc_table_ = addr; }
    memory::GuestAddress avail_ring() const { return avail_ring_; }  // "driver area"
    void set_avail_ring(memory::GuestAddress addr) { avail_ring_ = addr; }
    memory::GuestAddress used_ring() const { return used_ring_; }  // "device area"
    void set_used_ring(memory::GuestAddress addr) { used_ring_ = addr; }
    // From the negotiated features (VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC).
    // Without indirect_enabled an INDIRECT descriptor is a QueueError.
    bool event_idx_enabled() const { return event_idx_enabled_; }
    void set_event_idx_enabled(bool enabled) { event_idx_enabled_ = enabled; }
    bool indirect_enabled() const { return indirect_enabled_; }
    void set_indirect_enabled(bool enabled) { indirect_enabled_ = enabled; }

    // Checks the configuration against guest memory: size a power of two in [1, max_size()];
    // descriptor table 16-, available ring 2-, used ring 4-aligned; each wholly inside guest
    // memory including the used_event / avail_event fields. Returns why it is not valid, or
    // nullopt. Does not look at ready().
    std::optional<std::string> validate(const memory::GuestMemory& mem) const;
    bool is_valid(const memory::GuestMemory& mem) const { return !validate(mem).has_value(); }

    // ---- Device side (throw QueueError on guest errors, see the file comment) ----

    // The next available chain, or nullopt if there is none (or the queue is not ready).
    std::optional<DescriptorChain> pop_available(const memory::GuestMemory& mem);
    // Puts the last popped chain back: the next pop_available() returns it again (for a
    // device that cannot take it yet, e.g. a full backend or a too small RX buffer).
    void undo_pop();
    // Whether pop_available() would return a chain (without parsing it).
    bool has_available(const memory::GuestMemory& mem);
    // Publishes a used element {head_index, len} (len: bytes written into the chain).
    // head_index must come from a popped chain (else QueueError; nothing is written).
    void add_used(const memory::GuestMemory& mem, uint16_t head_index, uint32_t len);
    // Publishes several used elements with one used.idx update, so the driver sees all or none
    // of them (virtio-net's mergeable receive buffers: a driver reading the first buffer of a
    // frame expects the other num_buffers - 1 to be there). At most size() elements; a bad head
    // throws QueueError before anything is written.
    struct UsedElement {
        uint16_t head_index;
        uint32_t len;
    };
    void add_used_batch(const memory::GuestMemory& mem, std::span<const UsedElement> elements);
    // Whether the driver wants an interrupt for the used elements added since the last time
    // this returned (EVENT_IDX: vring_need_event with used_event; otherwise the avail ring's
    // NO_INTERRUPT flag). Call after a batch of add_used().
    bool needs_notification(const memory::GuestMemory& mem);
    // Asks the driver not to notify (kick) this queue: VRING_USED_F_NO_NOTIFY, or with
    // EVENT_IDX nothing (the stale avail_event already suppresses kicks).
    void disable_notification(const memory::GuestMemory& mem);
    // Asks for kicks again (clears NO_NOTIFY / writes avail_event = next_avail) and then
    // re-checks the avail ring: true if buffers arrived meanwhile, so the device must drain
    // again instead of waiting for a kick that may never come.
    bool enable_notification(const memory::GuestMemory& mem);

    // Back to the state after construction (configuration and runtime state).
    void reset();

    // Where the driver and the device stand, for the stall watchdog (virtio/watchdog.h): reads
    // avail.idx and (EVENT_IDX) used_event from guest memory without validating or changing
    // anything. nullopt if the queue is not ready or its rings are not readable.
    std::optional<QueueProgress> progress(const memory::GuestMemory& mem) const;

    // Runtime state, for logs, tests and a later snapshot/restore.
    uint16_t next_avail() const { return next_avail_; }
    uint16_t next_used() const { return next_used_; }
    void set_next_avail(uint16_t idx) { next_avail_ = idx; cached_avail_idx_ = idx; }
    void set_next_used(uint16_t idx) { next_used_ = idx; signalled_used_.reset(); }

    // Snapshots (virtio/saved_state.h): the driver's set-up and the device's positions. A
    // restored queue is only checked against its maximum size here; a ready one is validated
    // against guest memory when the device is activated again. Throws StateError.
    void save_state(StateWriter& w) const;
    void restore_state(StateReader& r);

private:
    void check_usable() const;
    // Reads avail.idx (acquire) and validates it against next_avail_.
    uint16_t read_avail_idx(const memory::GuestMemory& mem);
    DescriptorChain parse_chain(const memory::GuestMemory& mem, uint16_t head) const;

    template <typename T>
    T read_ring(const memory::GuestMemory& mem, memory::GuestAddress base, uint64_t offset, const char* what) const;
    template <typename T>
    void write_ring(const memory::GuestMemory& mem, memory::GuestAddress base, uint64_t offset, const T& value,
                    const char* what) const;

    uint16_t max_size_;
    uint16_t size_;
    bool ready_ = false;
    memory::GuestAddress desc_table_;
    memory::GuestAddress avail_ring_;
    memory::GuestAddress used_ring_;
    bool event_idx_enabled_ = false;
    bool indirect_enabled_ = false;

    uint16_t next_avail_ = 0;        // next avail ring entry to pop
    uint16_t cached_avail_idx_ = 0;  // avail.idx last read from the guest
    uint16_t next_used_ = 0;         // next used ring entry to fill (our used.idx)
    std::optional<uint16_t> signalled_used_;  // next_used_ when needs_notification last ran
};

}  // namespace embervm::virtio
