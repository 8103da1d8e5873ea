// bench-queue: the driver side of a split ring, chains published in batches and reaped.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include <fmt/format.h>

#include "bench_queue.h"
#include "virtio/queue.h"

namespace embervm::bench {

using namespace embervm::virtio;

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

}  // namespace embervm::bench
