// The vhost-user frontend: the requests in the protocol's order, every answer checked.
#include "virtio/vhost_user/frontend.h"

#include <fmt/format.h>

namespace embervm::virtio::vhost_user {

namespace {
// The protocol features embervm can use at all.
constexpr uint64_t kKnownProtocolFeatures =
    (uint64_t{1} << kProtocolMq) | (uint64_t{1} << kProtocolReplyAck) | (uint64_t{1} << kProtocolConfig);
// More queues than a virtio device of embervm has (kMaxQueues in the transports is far less).
constexpr uint64_t kMaxQueueNum = 1024;
}  // namespace

Frontend::Frontend(Channel channel) : channel_(std::move(channel)) {}

uint64_t Frontend::request_u64(Request r) {
    channel_.send(encode_empty(r));
    const auto reply = channel_.receive(r);
    return decode_u64_reply(reply.header, reply.payload, r);
}

void Frontend::send_acked(OutMessage m, std::span<const int> fds) {
    const bool ack = has_protocol_feature(kProtocolReplyAck);
    if (ack) m.flags |= kFlagNeedReply;
    channel_.send(m, fds);
    if (!ack) return;
    const auto reply = channel_.receive(m.request);
    const uint64_t status = decode_u64_reply(reply.header, reply.payload, m.request);
    if (status != 0) {
        throw ProtocolError(fmt::format("vhost-user: the backend refused {} (status {})", request_name(m.request),
                                        status));
    }
}

void Frontend::connect(uint64_t wanted_protocol_features) {
    backend_features_ = request_u64(Request::GetFeatures);
    protocol_features_ = 0;
    if (backend_features_ & kFeatureProtocolFeatures) {
        const uint64_t offered = request_u64(Request::GetProtocolFeatures);
        const uint64_t use = offered & wanted_protocol_features & kKnownProtocolFeatures;
        // SET_PROTOCOL_FEATURES itself is never acked: REPLY_ACK is not in force before it lands.
        channel_.send(encode_u64(Request::SetProtocolFeatures, use));
        protocol_features_ = use;
    }
    send_acked(encode_empty(Request::SetOwner));
    queue_num_ = 1;
    if (has_protocol_feature(kProtocolMq)) {
        const uint64_t n = request_u64(Request::GetQueueNum);
        if (n == 0 || n > kMaxQueueNum) {
            throw ProtocolError(fmt::format("vhost-user: the backend claims {} queues (1 to {})", n, kMaxQueueNum));
        }
        queue_num_ = static_cast<uint32_t>(n);
    }
}

std::vector<uint8_t> Frontend::get_config(uint32_t offset, uint32_t size) {
    if (!has_protocol_feature(kProtocolConfig)) {
        throw ProtocolError("vhost-user: the backend does not offer its configuration space (protocol feature CONFIG)");
    }
    channel_.send(encode_get_config(offset, size));
    const auto reply = channel_.receive(Request::GetConfig);
    return decode_config_reply(reply.header, reply.payload, offset, size);
}

void Frontend::set_features(uint64_t acked) {
    if (backend_features_ & kFeatureProtocolFeatures) acked |= kFeatureProtocolFeatures;
    send_acked(encode_u64(Request::SetFeatures, acked));
}

void Frontend::set_mem_table(std::span<const memory::SharedRegion> regions) {
    std::vector<MemRegion> table;
    std::vector<int> fds;
    for (const auto& r : regions) {
        table.push_back(MemRegion{r.guest_address.value, r.size, r.host_address, r.fd_offset});
        fds.push_back(r.fd);
    }
    send_acked(encode_mem_table(table), fds);
}

void Frontend::start_vring(const VringSetup& v) {
    send_acked(encode_vring_state(Request::SetVringNum, v.index, v.size));
    send_acked(encode_vring_state(Request::SetVringBase, v.index, v.base));
    send_acked(encode_vring_addr(VringAddr{v.index, 0, v.desc_user_addr, v.used_user_addr, v.avail_user_addr, 0}));
    const int kick[] = {v.kick_fd};
    send_acked(encode_vring_fd(Request::SetVringKick, v.index, true), kick);
    set_vring_call(v.index, v.call_fd);
    if (v.err_fd >= 0) {
        const int err[] = {v.err_fd};
        send_acked(encode_vring_fd(Request::SetVringErr, v.index, true), err);
    } else {
        send_acked(encode_vring_fd(Request::SetVringErr, v.index, false));
    }
    if (backend_features_ & kFeatureProtocolFeatures) {
        send_acked(encode_vring_state(Request::SetVringEnable, v.index, 1));
    }
}

void Frontend::set_vring_call(uint32_t index, int call_fd) {
    const int call[] = {call_fd};
    send_acked(encode_vring_fd(Request::SetVringCall, index, true), call);
}

void Frontend::disable_vring(uint32_t index) {
    if (backend_features_ & kFeatureProtocolFeatures) {
        send_acked(encode_vring_state(Request::SetVringEnable, index, 0));
    }
}

uint32_t Frontend::stop_vring(uint32_t index) {
    channel_.send(encode_vring_state(Request::GetVringBase, index, 0));
    const auto reply = channel_.receive(Request::GetVringBase);
    return decode_vring_base_reply(reply.header, reply.payload, index);
}

}  // namespace embervm::virtio::vhost_user
