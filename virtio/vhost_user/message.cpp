// The vhost-user wire format: encoding the frontend's messages, checking the backend's replies.
#include "virtio/vhost_user/message.h"

#include <cstring>

#include <fmt/format.h>

namespace embervm::virtio::vhost_user {

namespace {

// The wire is little-endian, like every host embervm runs on (x86-64); these keep the layout
// explicit instead of copying structs with padding.
void put_u32(std::vector<uint8_t>& out, uint32_t v) {
    for (int i = 0; i < 4; i++) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_u64(std::vector<uint8_t>& out, uint64_t v) {
    for (int i = 0; i < 8; i++) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint32_t get_u32(std::span<const uint8_t> in, size_t at) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= static_cast<uint32_t>(in[at + i]) << (8 * i);
    return v;
}
uint64_t get_u64(std::span<const uint8_t> in, size_t at) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= static_cast<uint64_t>(in[at + i]) << (8 * i);
    return v;
}

void check_payload_size(const Header& h, std::span<const uint8_t> payload, size_t expected, Request asked) {
    if (h.size != expected || payload.size() != expected) {
        throw ProtocolError(fmt::format("vhost-user: reply to {} has a {}-byte payload, expected {}",
                                        request_name(asked), h.size, expected));
    }
}

}  // namespace

const char* request_name(Request r) {
    switch (r) {
        case Request::GetFeatures: return "GET_FEATURES";
        case Request::SetFeatures: return "SET_FEATURES";
        case Request::SetOwner: return "SET_OWNER";
        case Request::ResetOwner: return "RESET_OWNER";
        case Request::SetMemTable: return "SET_MEM_TABLE";
        case Request::SetVringNum: return "SET_VRING_NUM";
        case Request::SetVringAddr: return "SET_VRING_ADDR";
        case Request::SetVringBase: return "SET_VRING_BASE";
        case Request::GetVringBase: return "GET_VRING_BASE";
        case Request::SetVringKick: return "SET_VRING_KICK";
        case Request::SetVringCall: return "SET_VRING_CALL";
        case Request::SetVringErr: return "SET_VRING_ERR";
        case Request::GetProtocolFeatures: return "GET_PROTOCOL_FEATURES";
        case Request::SetProtocolFeatures: return "SET_PROTOCOL_FEATURES";
        case Request::GetQueueNum: return "GET_QUEUE_NUM";
        case Request::SetVringEnable: return "SET_VRING_ENABLE";
        case Request::GetConfig: return "GET_CONFIG";
        case Request::SetConfig: return "SET_CONFIG";
    }
    return "an unknown request";
}

std::array<uint8_t, kHeaderSize> encode_header(const Header& h) {
    std::array<uint8_t, kHeaderSize> out{};
    const uint32_t words[3] = {static_cast<uint32_t>(h.request), h.flags, h.size};
    for (size_t w = 0; w < 3; w++) {
        for (size_t i = 0; i < 4; i++) out[4 * w + i] = static_cast<uint8_t>(words[w] >> (8 * i));
    }
    return out;
}

Header decode_header(std::span<const uint8_t, kHeaderSize> bytes) {
    return Header{static_cast<Request>(get_u32(bytes, 0)), get_u32(bytes, 4), get_u32(bytes, 8)};
}

std::vector<uint8_t> OutMessage::bytes() const {
    const auto header = encode_header(Header{request, flags, static_cast<uint32_t>(payload.size())});
    std::vector<uint8_t> out(header.begin(), header.end());
    out.insert(out.end(), payload.begin(), payload.end());
    return out;
}

OutMessage encode_empty(Request r) { return OutMessage{r, kVersion, {}}; }

OutMessage encode_u64(Request r, uint64_t value) {
    OutMessage m{r, kVersion, {}};
    put_u64(m.payload, value);
    return m;
}

OutMessage encode_vring_state(Request r, uint32_t index, uint32_t num) {
    OutMessage m{r, kVersion, {}};
    put_u32(m.payload, index);
    put_u32(m.payload, num);
    return m;
}

OutMessage encode_vring_addr(const VringAddr& a) {
    OutMessage m{Request::SetVringAddr, kVersion, {}};
    put_u32(m.payload, a.index);
    put_u32(m.payload, a.flags);
    put_u64(m.payload, a.desc_user_addr);
    put_u64(m.payload, a.used_user_addr);
    put_u64(m.payload, a.avail_user_addr);
    put_u64(m.payload, a.log_guest_addr);
    return m;
}

OutMessage encode_vring_fd(Request r, uint32_t index, bool has_fd) {
    return encode_u64(r, (index & kVringIndexMask) | (has_fd ? 0 : kVringNoFd));
}

OutMessage encode_mem_table(std::span<const MemRegion> regions) {
    if (regions.empty() || regions.size() > kMaxMemRegions) {
        throw Error(fmt::format("vhost-user: a memory table takes 1 to {} regions, not {}", kMaxMemRegions,
                                regions.size()));
    }
    OutMessage m{Request::SetMemTable, kVersion, {}};
    put_u32(m.payload, static_cast<uint32_t>(regions.size()));
    put_u32(m.payload, 0);  // padding
    for (const auto& r : regions) {
        put_u64(m.payload, r.guest_phys_addr);
        put_u64(m.payload, r.memory_size);
        put_u64(m.payload, r.userspace_addr);
        put_u64(m.payload, r.mmap_offset);
    }
    return m;
}

OutMessage encode_get_config(uint32_t offset, uint32_t size) {
    if (size > kMaxConfigSize) {
        throw Error(fmt::format("vhost-user: GET_CONFIG of {} bytes (at most {})", size, kMaxConfigSize));
    }
    OutMessage m{Request::GetConfig, kVersion, {}};
    put_u32(m.payload, offset);
    put_u32(m.payload, size);
    put_u32(m.payload, 0);  // flags: none (not a live-migration write)
    m.payload.resize(m.payload.size() + size, 0);
    return m;
}

void check_reply_header(const Header& h, Request asked) {
    if (h.request != asked) {
        throw ProtocolError(fmt::format("vhost-user: the backend answered {} with request {}", request_name(asked),
                                        static_cast<uint32_t>(h.request)));
    }
    if ((h.flags & kVersionMask) != kVersion) {
        throw ProtocolError(fmt::format("vhost-user: reply to {} has version {}, expected {}", request_name(asked),
                                        h.flags & kVersionMask, kVersion));
    }
    // Only the version and the reply bit may be set in a reply.
    if (h.flags != (kVersion | kFlagReply)) {
        throw ProtocolError(fmt::format("vhost-user: reply to {} has flags {:#x}, expected {:#x}", request_name(asked),
                                        h.flags, kVersion | kFlagReply));
    }
    if (h.size > kMaxPayload) {
        throw ProtocolError(fmt::format("vhost-user: reply to {} claims a {}-byte payload (at most {})",
                                        request_name(asked), h.size, kMaxPayload));
    }
}

uint64_t decode_u64_reply(const Header& h, std::span<const uint8_t> payload, Request asked) {
    check_reply_header(h, asked);
    check_payload_size(h, payload, 8, asked);
    return get_u64(payload, 0);
}

uint32_t decode_vring_base_reply(const Header& h, std::span<const uint8_t> payload, uint32_t index) {
    check_reply_header(h, Request::GetVringBase);
    check_payload_size(h, payload, 8, Request::GetVringBase);
    if (get_u32(payload, 0) != index) {
        throw ProtocolError(fmt::format("vhost-user: GET_VRING_BASE for queue {} answered for queue {}", index,
                                        get_u32(payload, 0)));
    }
    return get_u32(payload, 4);
}

std::vector<uint8_t> decode_config_reply(const Header& h, std::span<const uint8_t> payload, uint32_t offset,
                                         uint32_t size) {
    check_reply_header(h, Request::GetConfig);
    check_payload_size(h, payload, 12 + size, Request::GetConfig);
    if (get_u32(payload, 0) != offset || get_u32(payload, 4) != size) {
        throw ProtocolError(fmt::format("vhost-user: GET_CONFIG of {} bytes at {} answered with {} bytes at {}", size,
                                        offset, get_u32(payload, 4), get_u32(payload, 0)));
    }
    return {payload.begin() + 12, payload.end()};
}

}  // namespace embervm::virtio::vhost_user
