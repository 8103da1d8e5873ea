// The vhost-user wire format: message header, the payloads the frontend sends, and the checks
// every reply from the backend passes before the frontend uses a byte of it.
//
// A message is a 12-byte header (request, flags, payload size; all little-endian u32) followed
// by `size` payload bytes; file descriptors travel beside it as SCM_RIGHTS ancillary data. The
// backend is another process and as untrusted as the guest: a reply with the wrong request,
// version, flags, size or unexpected descriptors raises ProtocolError, which breaks only the
// device that talks to that backend.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vmm/sys/error.h"

namespace embervm::virtio::vhost_user {

// The requests the frontend sends (the "front-end message types" of the protocol).
enum class Request : uint32_t {
    GetFeatures = 1,
    SetFeatures = 2,
    SetOwner = 3,
    ResetOwner = 4,
    SetMemTable = 5,
    SetVringNum = 8,
    SetVringAddr = 9,
    SetVringBase = 10,
    GetVringBase = 11,
    SetVringKick = 12,
    SetVringCall = 13,
    SetVringErr = 14,
    GetProtocolFeatures = 15,
    SetProtocolFeatures = 16,
    GetQueueNum = 17,
    SetVringEnable = 18,
    GetConfig = 24,
    SetConfig = 25,
};

const char* request_name(Request r);

// Header flags: bits 0-1 the protocol version (always 1), bit 2 a reply, bit 3 "reply wanted"
// (with the REPLY_ACK protocol feature, for requests that otherwise have no reply).
inline constexpr uint32_t kVersion = 1;
inline constexpr uint32_t kVersionMask = 0x3;
inline constexpr uint32_t kFlagReply = 1u << 2;
inline constexpr uint32_t kFlagNeedReply = 1u << 3;

inline constexpr size_t kHeaderSize = 12;
// The largest payload either side sends here: a memory table of 8 regions (8 + 8 * 32 bytes) or
// a config space message (12 + 256 bytes). Anything larger from the backend is refused.
inline constexpr size_t kMaxPayload = 12 + 256;
inline constexpr size_t kMaxConfigSize = 256;
// The most descriptors one message carries (SET_MEM_TABLE: one per region).
inline constexpr size_t kMaxFds = 8;
inline constexpr size_t kMaxMemRegions = 8;

// Device feature bit 30: the backend speaks GET/SET_PROTOCOL_FEATURES.
inline constexpr uint64_t kFeatureProtocolFeatures = uint64_t{1} << 30;

// Protocol feature bits embervm knows (bit numbers).
inline constexpr unsigned kProtocolMq = 0;
inline constexpr unsigned kProtocolReplyAck = 3;
inline constexpr unsigned kProtocolConfig = 9;

// SET_VRING_KICK/CALL/ERR payload: bits 0-7 the queue index, bit 8 "no descriptor attached".
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFd = uint64_t{1} << 8;

// A backend broke the protocol (or went away); the device using it needs a reset.
class ProtocolError : public Error {
public:
    using Error::Error;
};

struct Header {
    Request request;
    uint32_t flags;
    uint32_t size;
};

// Encodes/decodes the 12-byte header.
std::array<uint8_t, kHeaderSize> encode_header(const Header& h);
Header decode_header(std::span<const uint8_t, kHeaderSize> bytes);

// One region of SET_MEM_TABLE: guest physical address, size, the frontend's own address of it
// ("user address", which vring addresses are given in) and the offset into the fd to map.
struct MemRegion {
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t mmap_offset;
};

// SET_VRING_ADDR: the three rings as frontend user addresses (flags: bit 0 log, unused here).
struct VringAddr {
    uint32_t index;
    uint32_t flags;
    uint64_t desc_user_addr;
    uint64_t used_user_addr;
    uint64_t avail_user_addr;
    uint64_t log_guest_addr;
};

// A whole message from the frontend: header flags already hold the version.
struct OutMessage {
    Request request;
    uint32_t flags = kVersion;
    std::vector<uint8_t> payload;

    std::vector<uint8_t> bytes() const;  // header + payload
};

OutMessage encode_empty(Request r);
OutMessage encode_u64(Request r, uint64_t value);
// SET_VRING_NUM, SET_VRING_BASE, GET_VRING_BASE, SET_VRING_ENABLE: {u32 index, u32 num}.
OutMessage encode_vring_state(Request r, uint32_t index, uint32_t num);
OutMessage encode_vring_addr(const VringAddr& a);
// SET_VRING_KICK/CALL/ERR: `has_fd` false sets the no-descriptor bit.
OutMessage encode_vring_fd(Request r, uint32_t index, bool has_fd);
// SET_MEM_TABLE: {u32 nregions, u32 padding, nregions * MemRegion}; at most kMaxMemRegions.
OutMessage encode_mem_table(std::span<const MemRegion> regions);
// GET_CONFIG: {u32 offset, u32 size, u32 flags, size zero bytes}.
OutMessage encode_get_config(uint32_t offset, uint32_t size);

// Reply checks. Each takes the header and payload the backend sent for a request of kind `asked`
// and throws ProtocolError naming what was wrong.
void check_reply_header(const Header& h, Request asked);
uint64_t decode_u64_reply(const Header& h, std::span<const uint8_t> payload, Request asked);
// GET_VRING_BASE: the reply must name the queue asked for; returns its num (the next avail index).
uint32_t decode_vring_base_reply(const Header& h, std::span<const uint8_t> payload, uint32_t index);
// GET_CONFIG: the reply must repeat offset and size; returns the `size` config bytes.
std::vector<uint8_t> decode_config_reply(const Header& h, std::span<const uint8_t> payload, uint32_t offset,
                                         uint32_t size);

}  // namespace embervm::virtio::vhost_user
