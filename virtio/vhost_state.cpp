// The saved state of a vhost-served device: encoding, checks, and the wait for requests in
// flight (see vhost_state.h).
#include "virtio/vhost_state.h"

#include <algorithm>
#include <thread>

#include <fmt/format.h>

namespace embervm::virtio {

void encode_vhost_state(StateWriter& w, const VhostDeviceState& s) {
    w.put<uint64_t>(s.features);
    w.put<uint16_t>(static_cast<uint16_t>(s.rings.size()));
    for (const VhostRingState& ring : s.rings) {
        w.put_bool(ring.started);
        w.put<uint32_t>(ring.base);
    }
}

bool any_started(const VhostDeviceState& s) {
    return std::any_of(s.rings.begin(), s.rings.end(), [](const VhostRingState& r) { return r.started; });
}

VhostDeviceState decode_vhost_state(StateReader& r, size_t queue_count, uint64_t backend_features,
                                    std::string_view backend) {
    VhostDeviceState s;
    s.features = r.get<uint64_t>("vhost features");
    if (const uint64_t missing = s.features & ~backend_features; missing != 0) {
        r.fail("vhost features", fmt::format("{:#x} were negotiated, {} offers {:#x} now (missing {:#x})", s.features,
                                             backend, backend_features, missing));
    }
    const auto count = r.get<uint16_t>("vhost queue count");
    if (count != queue_count) r.fail("vhost queue count", fmt::format("{} where this device has {}", count, queue_count));
    for (uint16_t i = 0; i < count; i++) {
        VhostRingState ring;
        ring.started = r.get_bool("vhost queue started");
        const auto base = r.get<uint32_t>("vhost queue base");
        if (base > 0xffff) r.fail("vhost queue base", fmt::format("queue {}: {} is not a ring index (0 to 65535)", i, base));
        if (!ring.started && base != 0) r.fail("vhost queue base", fmt::format("queue {}: {} for a queue never started", i, base));
        ring.base = static_cast<uint16_t>(base);
        s.rings.push_back(ring);
    }
    return s;
}

uint16_t used_index(const memory::GuestMemory& mem, const Queue& q) {
    // struct virtq_used: le16 flags, le16 idx, ...
    return mem.read_obj<uint16_t>(memory::GuestAddress(q.used_ring().value + 2));
}

std::string wait_until_used(const memory::GuestMemory& mem, const Queue& q, uint16_t base,
                            std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        const uint16_t used = used_index(mem, q);
        if (used == base) return "";
        if (std::chrono::steady_clock::now() >= deadline) {
            return fmt::format("{} requests still in flight after {} ms (available index {}, used index {})",
                               static_cast<uint16_t>(base - used), timeout.count(), base, used);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

void check_restored_ring(std::string_view device, const memory::GuestMemory& mem, const Queue& q, uint16_t index,
                         const VhostRingState& saved) {
    const auto fail = [&](std::string_view field, const std::string& why) {
        throw StateError(fmt::format("{}: saved state field '{}': queue {}: {}", device, field, index, why));
    };
    if (saved.started != q.ready()) {
        fail("vhost queue started", saved.started ? "started by the backend, but the queue is not ready"
                                                  : "ready, but the backend never started it");
    }
    if (!saved.started) return;
    if (q.next_avail() != saved.base || q.next_used() != saved.base) {
        fail("vhost queue base", fmt::format("{} where the queue's next available index is {} and next used {}",
                                             saved.base, q.next_avail(), q.next_used()));
    }
    if (const uint16_t used = used_index(mem, q); used != saved.base) {
        fail("vhost queue base", fmt::format("{} where guest memory's used index is {} (requests in flight)",
                                             saved.base, used));
    }
}

}  // namespace embervm::virtio
