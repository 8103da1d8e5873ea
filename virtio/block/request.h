// virtio-blk requests (virtio 1.2, section 5.2): the protocol constants and the parser that turns
// one descriptor chain into either I/O for the backend, a status to complete with at once, or a
// guest error. Everything it reads from guest memory (header, segment, lengths, addresses) is
// checked here; the device (block_device.h) only dispatches the result.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "memory/guest_memory.h"
#include "virtio/block/backend.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"

namespace embervm::virtio::block {

// Request types, statuses and feature bits (virtio 1.2, section 5.2).
namespace req {
inline constexpr uint32_t kIn = 0;
inline constexpr uint32_t kOut = 1;
inline constexpr uint32_t kFlush = 4;
inline constexpr uint32_t kGetId = 8;
inline constexpr uint32_t kDiscard = 11;
inline constexpr uint32_t kWriteZeroes = 13;
}  // namespace req
namespace blk_status {
inline constexpr uint8_t kOk = 0;
inline constexpr uint8_t kIoErr = 1;
inline constexpr uint8_t kUnsupp = 2;
}  // namespace blk_status
namespace blk_feature {
inline constexpr uint64_t kSegMax = feature_bit(2);
inline constexpr uint64_t kRo = feature_bit(5);
inline constexpr uint64_t kBlkSize = feature_bit(6);
inline constexpr uint64_t kFlush = feature_bit(9);
inline constexpr uint64_t kDiscard = feature_bit(13);
inline constexpr uint64_t kWriteZeroes = feature_bit(14);
}  // namespace blk_feature

inline constexpr uint64_t kSectorSize = 512;
inline constexpr size_t kIdBytes = 20;  // VIRTIO_BLK_ID_BYTES
// Largest discard / write-zeroes request, in sectors (one segment each).
inline constexpr uint32_t kMaxDiscardSectors = 1u << 22;  // 2 GiB

// What the parser checks a request against.
struct RequestLimits {
    uint64_t capacity_sectors = 0;
    uint64_t acked_features = 0;
    bool read_only = false;
    std::string_view id;  // the GET_ID serial (truncated to kIdBytes)
};

// Where and how a request is answered: the status byte's address and the used length (bytes
// written into the chain, the status byte included).
struct Reply {
    uint16_t head = 0;
    memory::GuestAddress status{0};
    uint32_t used_len = 1;
};

// A request for the backend. io.user_data is left for the device to set.
struct SubmitIo {
    uint32_t type = 0;
    Reply reply;
    IoRequest io;
};

// A request answered without I/O: refused (IOERR, UNSUPP), empty, or GET_ID (whose serial
// the parser has already written into the chain).
struct CompleteNow {
    std::optional<uint32_t> type;  // the header's type, if the header could be read
    Reply reply;
    uint8_t status = blk_status::kOk;
};

// A chain no status can be written for, or that breaks the ring rules: the device needs reset.
struct GuestError {
    std::string what;
};

using ParsedRequest = std::variant<SubmitIo, CompleteNow, GuestError>;

// Parses `chain`. Throws what the guest memory accessors throw for addresses outside guest
// memory (the device treats that as a guest error too).
ParsedRequest parse_request(const DescriptorChain& chain, const memory::GuestMemory& mem, const RequestLimits& limits);

}  // namespace embervm::virtio::block
