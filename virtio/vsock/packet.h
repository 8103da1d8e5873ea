// virtio-vsock packets (virtio 1.2, 5.10.6): the 44-byte little-endian header every packet on
// the receive and transmit queues starts with, its operations, socket types and shutdown flags.
// Shared by the device (vsock_device.h) and its tests.
#pragma once

#include <cstdint>

namespace embervm::virtio::vsock {

// struct virtio_vsock_hdr. Packed: 44 bytes, no padding.
struct __attribute__((packed)) PacketHeader {
    uint64_t src_cid = 0;
    uint64_t dst_cid = 0;
    uint32_t src_port = 0;
    uint32_t dst_port = 0;
    uint32_t len = 0;  // payload bytes after the header
    uint16_t type = 0;
    uint16_t op = 0;
    uint32_t flags = 0;
    uint32_t buf_alloc = 0;  // the sender's receive buffer for this connection
    uint32_t fwd_cnt = 0;    // bytes the sender has taken out of that buffer so far
};
static_assert(sizeof(PacketHeader) == 44);

// The host's CID (VMADDR_CID_HOST): every guest packet goes there.
inline constexpr uint64_t kHostCid = 2;
// Guest CIDs 0-2 are reserved (hypervisor, local, host).
inline constexpr uint64_t kMinGuestCid = 3;

namespace op {
inline constexpr uint16_t kRequest = 1;
inline constexpr uint16_t kResponse = 2;
inline constexpr uint16_t kRst = 3;
inline constexpr uint16_t kShutdown = 4;
inline constexpr uint16_t kRw = 5;
inline constexpr uint16_t kCreditUpdate = 6;
inline constexpr uint16_t kCreditRequest = 7;
}  // namespace op

namespace socket_type {
inline constexpr uint16_t kStream = 1;
inline constexpr uint16_t kSeqpacket = 2;
}  // namespace socket_type

// SHUTDOWN flags: the sender will receive (RCV) / send (SEND) no more.
namespace shutdown_flag {
inline constexpr uint32_t kRcv = 1;
inline constexpr uint32_t kSend = 2;
}  // namespace shutdown_flag

// The event queue's one event (5.10.6.5): the transport was reset (after a restore).
inline constexpr uint32_t kEventTransportReset = 0;

}  // namespace embervm::virtio::vsock
