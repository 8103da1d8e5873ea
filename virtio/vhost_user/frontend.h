// The vhost-user frontend: the requests embervm sends a backend over one Channel, in the
// protocol's order, with every answer checked (message.h). A device owns one Frontend per
// connection and calls it from its own lock; nothing here touches guest memory.
//
// Set-up (connect):  GET_FEATURES, then with VHOST_USER_F_PROTOCOL_FEATURES
//                    GET_PROTOCOL_FEATURES / SET_PROTOCOL_FEATURES (the bits both sides know),
//                    SET_OWNER, GET_QUEUE_NUM (with MQ); GET_CONFIG as the device needs it.
// Start (DRIVER_OK): SET_FEATURES, SET_MEM_TABLE, per queue SET_VRING_NUM/BASE/ADDR/KICK/CALL/ERR
//                    and SET_VRING_ENABLE (start_vring).
// Stop (reset):      GET_VRING_BASE per started queue (the backend stops it and says where it was).
// Pause (snapshot):  SET_VRING_ENABLE 0 (with protocol features) and GET_VRING_BASE per started
//                    queue; the resume is a start from the returned index.
//
// With REPLY_ACK negotiated every request without a reply of its own asks for one, so a backend
// that refuses (non-zero ack) is noticed at that request. Every failure throws ProtocolError.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/vhost_user/channel.h"

namespace embervm::virtio::vhost_user {

// One queue as the backend is told about it. Ring addresses are the VMM's own (user) addresses
// of the rings, which lie in the shared regions of the memory table.
struct VringSetup {
    uint32_t index;
    uint16_t size;
    uint16_t base;  // the avail index the backend starts from
    uint64_t desc_user_addr;
    uint64_t avail_user_addr;
    uint64_t used_user_addr;
    int kick_fd;      // the queue's ioeventfd
    int call_fd;      // an eventfd the backend writes when it used buffers
    int err_fd = -1;  // -1: none (the no-descriptor bit is set)
};

class Frontend {
public:
    explicit Frontend(Channel channel);

    // The set-up exchange. `wanted_protocol_features`: bit mask of the protocol features the
    // device can use (kProtocolConfig, kProtocolMq, kProtocolReplyAck); the negotiated ones are
    // those the backend offers too.
    void connect(uint64_t wanted_protocol_features);

    uint64_t backend_features() const { return backend_features_; }
    bool has_protocol_feature(unsigned bit) const { return (protocol_features_ >> bit) & 1; }
    // GET_QUEUE_NUM's answer with MQ (at least 1), 1 without.
    uint32_t queue_num() const { return queue_num_; }

    // GET_CONFIG (needs the CONFIG protocol feature): `size` bytes at `offset`. The size is the
    // caller's (a device's fixed configuration layout): more than kMaxConfigSize is the caller's
    // mistake, refused with Error before anything is sent; the backend's answer is checked
    // (ProtocolError).
    std::vector<uint8_t> get_config(uint32_t offset, uint32_t size);
    // SET_FEATURES with the device features the driver accepted; adds
    // VHOST_USER_F_PROTOCOL_FEATURES when it was negotiated (the backend needs to see it).
    void set_features(uint64_t acked);
    // SET_MEM_TABLE with one fd per region (at most kMaxMemRegions).
    void set_mem_table(std::span<const memory::SharedRegion> regions);
    // SET_VRING_NUM, _BASE, _ADDR, _KICK, _CALL, _ERR, then SET_VRING_ENABLE 1 when protocol
    // features were negotiated (the rings start disabled then).
    void start_vring(const VringSetup& v);
    // SET_VRING_CALL for a started queue: the backend signals `call_fd` from now on (with
    // REPLY_ACK, from when this returns).
    void set_vring_call(uint32_t index, int call_fd);
    // SET_VRING_ENABLE 0 when protocol features were negotiated (the backend takes no more
    // buffers from the queue); nothing otherwise.
    void disable_vring(uint32_t index);
    // GET_VRING_BASE: stops the queue; returns the avail index the backend reached.
    uint32_t stop_vring(uint32_t index);

    int socket_fd() const { return channel_.fd(); }

private:
    // Sends `m` (asking for an ack with REPLY_ACK) and waits for the ack.
    void send_acked(OutMessage m, std::span<const int> fds = {});
    uint64_t request_u64(Request r);

    Channel channel_;
    uint64_t backend_features_ = 0;
    uint64_t protocol_features_ = 0;
    uint32_t queue_num_ = 1;
};

}  // namespace embervm::virtio::vhost_user
