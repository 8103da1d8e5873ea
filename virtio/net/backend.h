// Network backends: where virtio-net frames leave and enter the host. The device model talks to
// this interface only, so the TAP backend (tap.h) can be replaced by a fake in tests or by a
// vhost backend later. Frames carry the 12-byte virtio_net_hdr_v1 in front (the TAP device is
// opened with IFF_VNET_HDR, so the header passes through unchanged in both directions).
//
// Threading: not synchronised; the device calls it under its own lock, on the event loop.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <string>

namespace embervm::virtio::net {

class NetBackend {
public:
    virtual ~NetBackend() = default;

    // Readable (epoll) when a frame waits.
    virtual int fd() const = 0;
    // Reads one frame (header + packet) into `iov`: its length, or -errno (-EAGAIN: none waits).
    // A frame longer than the buffers is truncated and its full length returned (what the TAP
    // does): a result above the buffers' size means the frame is incomplete. The two
    // num_buffers bytes of the header are left as they were (the TAP skips them).
    virtual ssize_t read_frame(std::span<const iovec> iov) = 0;
    // Writes one frame (header + packet): bytes written or -errno.
    virtual ssize_t write_frame(std::span<const iovec> iov) = 0;
    // The virtio-net offload features (feature masks of net_device.h: GUEST_* and HOST_*) the
    // backend can carry; the device offers no others.
    virtual uint64_t supported_offload_features() const = 0;
    // Configures the receive offloads for what the driver accepted (GUEST_CSUM, GUEST_TSO4/6,
    // GUEST_ECN, GUEST_UFO): frames the backend hands to read_frame() use no others.
    virtual void set_offloads(uint64_t acked_features) = 0;
    // For logs: "tap0".
    virtual std::string name() const = 0;
};

}  // namespace embervm::virtio::net
