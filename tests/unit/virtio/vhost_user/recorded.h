// Byte sequences recorded from qemu-storage-daemon 7.2 (Debian 12) exporting a 64 MiB raw image
// as vhost-user-blk (writable=on): the frontend's requests as sent, the backend's replies as
// received, in hex.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace embervm::test::vhost_user {

inline std::vector<uint8_t> from_hex(std::string_view hex) {
    std::vector<uint8_t> out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) {
        auto nib = [](char c) { return static_cast<uint8_t>(c <= '9' ? c - '0' : c - 'a' + 10); };
        out.push_back(static_cast<uint8_t>(nib(hex[i]) << 4 | nib(hex[i + 1])));
    }
    return out;
}

// Frontend to backend.
inline constexpr std::string_view kGetFeatures = "010000000100000000000000";
inline constexpr std::string_view kGetProtocolFeatures = "0f0000000100000000000000";
inline constexpr std::string_view kSetProtocolFeatures = "1000000001000000080000000902000000000000";  // MQ|REPLY_ACK|CONFIG
inline constexpr std::string_view kSetOwnerNeedReply = "030000000900000000000000";
inline constexpr std::string_view kGetQueueNum = "110000000100000000000000";
inline constexpr std::string_view kGetConfig60 =
    "180000000100000048000000000000003c00000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

// Backend to frontend.
inline constexpr std::string_view kFeaturesReply = "010000000500000008000000467e007501000000";  // 0x1'7500'7e46
inline constexpr std::string_view kProtocolFeaturesReply = "0f00000005000000080000002b8f000000000000";  // 0x8f2b
inline constexpr std::string_view kSetOwnerAck = "0300000005000000080000000000000000000000";
inline constexpr std::string_view kQueueNumReply = "1100000005000000080000000100000000000000";
// virtio_blk_config (60 bytes): capacity 0x20000 sectors, size_max 0, seg_max 126, geometry 0,
// blk_size 512, topology (0, 0, min_io 1, opt_io 1), wce 0, num_queues 1, max_discard_sectors
// 32768, max_discard_seg 1, discard_sector_alignment 1, max_write_zeroes_sectors 32768,
// max_write_zeroes_seg 1, write_zeroes_may_unmap 0.
inline constexpr std::string_view kConfig60Reply =
    "180000000500000048000000000000003c00000000000000"
    "0000020000000000000000007e0000000000000000020000000001000100000000000100008000000100000001000000008000000100000000000000";

}  // namespace embervm::test::vhost_user
