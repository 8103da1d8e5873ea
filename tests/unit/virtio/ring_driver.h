// Test helper: the driver's side of one split virtqueue in a test guest memory. Builds
// descriptor chains in the descriptor table, publishes them in the available ring and reads
// the used ring, so device models can be driven without a transport.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include <string>
#include <string_view>

#include "memory/guest_memory.h"
#include "virtio/device.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"

namespace embervm::virtio::testing {

struct Buf {
    uint64_t addr;
    uint32_t len;
    bool device_writes;
};

class RingDriver {
public:
    // Rings at base (descriptors), base + 0x1000 (available), base + 0x2000 (used).
    RingDriver(const memory::GuestMemory& mem, Queue& queue, uint64_t base, uint16_t size)
        : mem_(mem), queue_(queue), base_(base), size_(size) {
        queue.set_size(size);
        queue.set_desc_table(memory::GuestAddress(base));
        queue.set_avail_ring(memory::GuestAddress(base + 0x1000));
        queue.set_used_ring(memory::GuestAddress(base + 0x2000));
        queue.set_ready(true);
    }

    // Writes a chain (NEXT flags added) and makes it available; returns its head.
    uint16_t add(const std::vector<Buf>& bufs) {
        const uint16_t head = next_;
        for (size_t i = 0; i < bufs.size(); i++) {
            const uint16_t idx = static_cast<uint16_t>((head + i) % size_);
            uint16_t flags = bufs[i].device_writes ? desc_flags::kWrite : 0;
            if (i + 1 < bufs.size()) flags |= desc_flags::kNext;
            mem_.write_obj(memory::GuestAddress(base_ + 16ULL * idx),
                           Descriptor{bufs[i].addr, bufs[i].len, flags, static_cast<uint16_t>((idx + 1) % size_)});
        }
        next_ = static_cast<uint16_t>((head + bufs.size()) % size_);
        publish(head);
        return head;
    }
    // Writes `bufs` as an indirect table at `table` and makes one INDIRECT descriptor pointing
    // at it available; returns its head.
    uint16_t add_indirect(uint64_t table, const std::vector<Buf>& bufs) {
        for (size_t i = 0; i < bufs.size(); i++) {
            uint16_t flags = bufs[i].device_writes ? desc_flags::kWrite : 0;
            if (i + 1 < bufs.size()) flags |= desc_flags::kNext;
            mem_.write_obj(memory::GuestAddress(table + 16ULL * i),
                           Descriptor{bufs[i].addr, bufs[i].len, flags, static_cast<uint16_t>(i + 1)});
        }
        const uint16_t head = next_;
        mem_.write_obj(memory::GuestAddress(base_ + 16ULL * head),
                       Descriptor{table, static_cast<uint32_t>(16 * bufs.size()), desc_flags::kIndirect, 0});
        next_ = static_cast<uint16_t>((head + 1) % size_);
        publish(head);
        return head;
    }
    uint16_t used_idx() const { return mem_.read_obj<uint16_t>(memory::GuestAddress(base_ + 0x2000 + 2)); }
    // {id, len} of used element `n` (counting from 0).
    std::pair<uint32_t, uint32_t> used(uint16_t n) const {
        const uint64_t e = base_ + 0x2000 + 4 + 8ULL * (n % size_);
        return {mem_.read_obj<uint32_t>(memory::GuestAddress(e)), mem_.read_obj<uint32_t>(memory::GuestAddress(e + 4))};
    }
    void set_used_event(uint16_t v) {
        mem_.write_obj<uint16_t>(memory::GuestAddress(base_ + 0x1000 + 4 + 2ULL * size_), v);
    }
    // The available ring's flags (VRING_AVAIL_F_NO_INTERRUPT).
    void set_avail_flags(uint16_t v) { mem_.write_obj<uint16_t>(memory::GuestAddress(base_ + 0x1000), v); }
    // The used ring's flags (VRING_USED_F_NO_NOTIFY) and avail_event (EVENT_IDX).
    uint16_t used_flags() const { return mem_.read_obj<uint16_t>(memory::GuestAddress(base_ + 0x2000)); }
    uint16_t avail_event() const {
        return mem_.read_obj<uint16_t>(memory::GuestAddress(base_ + 0x2000 + 4 + 8ULL * size_));
    }

private:
    void publish(uint16_t head) {
        mem_.write_obj<uint16_t>(memory::GuestAddress(base_ + 0x1000 + 4 + 2ULL * (avail_ % size_)), head);
        avail_++;
        mem_.write_obj<uint16_t>(memory::GuestAddress(base_ + 0x1000 + 2), avail_);
    }

    const memory::GuestMemory& mem_;
    Queue& queue_;
    uint64_t base_;
    uint16_t size_;
    uint16_t next_ = 0;
    uint16_t avail_ = 0;
};

class FakeInterrupt : public DeviceInterrupt {
public:
    void signal_used_queue(uint16_t q) override { used.push_back(q); }
    void signal_config_change() override { ++config; }
    void device_error(std::string_view reason) override {
        errors.emplace_back(reason);
        broken = true;
    }
    // DEVICE_NEEDS_RESET, as the transport keeps it (tests that reset the device clear it).
    bool needs_reset() const override { return broken; }
    bool broken = false;
    std::vector<uint16_t> used;
    int config = 0;
    std::vector<std::string> errors;
};

}  // namespace embervm::virtio::testing
