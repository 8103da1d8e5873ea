// The saved state of a device whose rings a vhost backend serves (the host kernel's vhost-net, a
// vhost-user backend process), and the checks that bring it back (virtio/saved_state.h).
//
// What the VMM cannot see otherwise is where the backend stopped: at pause the device stops every
// ring (vhost-net: NET_SET_BACKEND -1; vhost-user: GET_VRING_BASE), which returns the next
// available index the backend would have taken, waits until the used index in guest memory has
// caught up with it (every request the backend took is completed: nothing in flight), and writes
// both into the transport's Queue (next_avail, next_used), which the transport saves. The device's
// own blob adds the features negotiated with the backend and per queue whether it was started and
// its base, so a restore can check the two agree and that the new backend still offers those
// features.
//
// Encoding (after the device's version): u64 negotiated features, u16 queue count, per queue
// u8 started, u32 base (an index: at most 0xffff).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/queue.h"
#include "vmm/sys/state_stream.h"

namespace embervm::virtio {

struct VhostRingState {
    bool started = false;
    uint16_t base = 0;  // the next available index the backend takes
    bool operator==(const VhostRingState&) const = default;
};

struct VhostDeviceState {
    uint64_t features = 0;  // negotiated with the backend (SET_FEATURES)
    std::vector<VhostRingState> rings;
    bool operator==(const VhostDeviceState&) const = default;
};

void encode_vhost_state(StateWriter& w, const VhostDeviceState& s);
// Whether any ring was started when `s` was saved (the device was running then).
bool any_started(const VhostDeviceState& s);
// Reads what encode_vhost_state wrote and checks it: `queue_count` rings, every base an index,
// the features a subset of `backend_features` (what the backend offers now; `backend` names it
// in the error). Throws StateError naming the field.
VhostDeviceState decode_vhost_state(StateReader& r, size_t queue_count, uint64_t backend_features,
                                    std::string_view backend);

// The used ring's index in guest memory (the used ring must be in guest memory: Queue::validate).
uint16_t used_index(const memory::GuestMemory& mem, const Queue& q);
// Waits (polling guest memory every millisecond, at most `timeout`) until queue `q`'s used index
// equals `base`. Returns "" then, else what was seen ("3 requests still in flight after 5000 ms").
std::string wait_until_used(const memory::GuestMemory& mem, const Queue& q, uint16_t base,
                            std::chrono::milliseconds timeout);
// A restored activation: ring `index` of `saved` against the transport's queue (ready when started,
// next_avail and next_used the saved base) and guest memory's used index (the base: nothing in
// flight). Throws StateError naming `device`, the queue and the field.
void check_restored_ring(std::string_view device, const memory::GuestMemory& mem, const Queue& q, uint16_t index,
                         const VhostRingState& saved);

}  // namespace embervm::virtio
