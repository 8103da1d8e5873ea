// Tests for virtio/vhost_user/message: the frontend's requests encode to the bytes
// qemu-storage-daemon was sent, its recorded replies decode, and malformed replies are refused.
#include <catch2/catch.hpp>

#include <cstring>

#include "tests/unit/virtio/vhost_user/recorded.h"
#include "virtio/vhost_user/message.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_message_test {

using namespace embervm::virtio::vhost_user;
using embervm::test::vhost_user::from_hex;
namespace rec = embervm::test::vhost_user;

namespace {

struct Split {
    Header header;
    std::vector<uint8_t> payload;
};

Split split(const std::vector<uint8_t>& bytes) {
    REQUIRE(bytes.size() >= kHeaderSize);
    const Header h = decode_header(std::span<const uint8_t, kHeaderSize>(bytes.data(), kHeaderSize));
    return Split{h, std::vector<uint8_t>(bytes.begin() + kHeaderSize, bytes.end())};
}

uint32_t u32_at(const std::vector<uint8_t>& v, size_t at) {
    uint32_t x;
    std::memcpy(&x, v.data() + at, 4);
    return x;
}
uint64_t u64_at(const std::vector<uint8_t>& v, size_t at) {
    uint64_t x;
    std::memcpy(&x, v.data() + at, 8);
    return x;
}

}  // namespace

TEST_CASE("vhost-user requests encode to the recorded bytes", "[vhost_user]") {
    CHECK(encode_empty(Request::GetFeatures).bytes() == from_hex(rec::kGetFeatures));
    CHECK(encode_empty(Request::GetProtocolFeatures).bytes() == from_hex(rec::kGetProtocolFeatures));
    CHECK(encode_u64(Request::SetProtocolFeatures, 0x209).bytes() == from_hex(rec::kSetProtocolFeatures));
    auto owner = encode_empty(Request::SetOwner);
    owner.flags |= kFlagNeedReply;
    CHECK(owner.bytes() == from_hex(rec::kSetOwnerNeedReply));
    CHECK(encode_empty(Request::GetQueueNum).bytes() == from_hex(rec::kGetQueueNum));
    CHECK(encode_get_config(0, 60).bytes() == from_hex(rec::kGetConfig60));
}

TEST_CASE("vhost-user recorded replies decode", "[vhost_user]") {
    auto f = split(from_hex(rec::kFeaturesReply));
    const uint64_t features = decode_u64_reply(f.header, f.payload, Request::GetFeatures);
    CHECK(features == 0x175007e46);
    CHECK((features & kFeatureProtocolFeatures) != 0);
    CHECK((features >> 32 & 1) == 1);  // VIRTIO_F_VERSION_1

    auto p = split(from_hex(rec::kProtocolFeaturesReply));
    const uint64_t proto = decode_u64_reply(p.header, p.payload, Request::GetProtocolFeatures);
    CHECK(proto == 0x8f2b);
    CHECK((proto >> kProtocolConfig & 1) == 1);
    CHECK((proto >> kProtocolReplyAck & 1) == 1);

    auto ack = split(from_hex(rec::kSetOwnerAck));
    CHECK(decode_u64_reply(ack.header, ack.payload, Request::SetOwner) == 0);
    auto q = split(from_hex(rec::kQueueNumReply));
    CHECK(decode_u64_reply(q.header, q.payload, Request::GetQueueNum) == 1);

    auto c = split(from_hex(rec::kConfig60Reply));
    const auto config = decode_config_reply(c.header, c.payload, 0, 60);
    REQUIRE(config.size() == 60);
    CHECK(u64_at(config, 0) == 0x20000);  // capacity in 512-byte sectors: 64 MiB
    CHECK(u32_at(config, 12) == 126);     // seg_max
    CHECK(u32_at(config, 20) == 512);     // blk_size
}

TEST_CASE("vhost-user payload layouts: vring state, address, fd and memory table", "[vhost_user]") {
    CHECK(encode_vring_state(Request::SetVringNum, 1, 256).bytes() ==
          from_hex("08000000010000000800000001000000" "00010000"));
    CHECK(encode_vring_state(Request::GetVringBase, 0, 0).bytes() ==
          from_hex("0b000000010000000800000000000000" "00000000"));
    CHECK(encode_vring_fd(Request::SetVringKick, 2, true).bytes() ==
          from_hex("0c000000010000000800000002000000" "00000000"));
    CHECK(encode_vring_fd(Request::SetVringErr, 2, false).bytes() ==
          from_hex("0e000000010000000800000002010000" "00000000"));

    const auto addr = encode_vring_addr(VringAddr{1, 0, 0x7f0000001000, 0x7f0000003000, 0x7f0000002000, 0});
    REQUIRE(addr.payload.size() == 40);
    CHECK(addr.bytes() == from_hex("09000000010000002800000001000000"
                                   "00000000"
                                   "00100000007f0000"
                                   "00300000007f0000"
                                   "00200000007f0000"
                                   "0000000000000000"));

    const MemRegion regions[] = {{0, 0xc0000000, 0x7f1000000000, 0}, {0x100000000, 0x40000000, 0x7f2000000000, 0}};
    const auto table = encode_mem_table(regions);
    REQUIRE(table.payload.size() == 8 + 2 * 32);
    CHECK(table.bytes() == from_hex("05000000010000004800000002000000"
                                    "00000000"
                                    "0000000000000000" "000000c000000000" "0000000010" "7f0000" "0000000000000000"
                                    "0000000001000000" "0000004000000000" "0000000020" "7f0000" "0000000000000000"));
    CHECK_THROWS_AS(encode_mem_table({}), embervm::Error);
    const std::vector<MemRegion> nine(9, MemRegion{0, 0x1000, 0, 0});
    CHECK_THROWS_AS(encode_mem_table(nine), embervm::Error);
    CHECK_THROWS_AS(encode_get_config(0, 257), embervm::Error);
}

TEST_CASE("vhost-user replies that break the protocol are refused", "[vhost_user]") {
    auto good = split(from_hex(rec::kFeaturesReply));

    SECTION("an answer to another request") {
        CHECK_THROWS_AS(decode_u64_reply(good.header, good.payload, Request::GetProtocolFeatures), ProtocolError);
    }
    SECTION("no reply flag") {
        auto h = good.header;
        h.flags = kVersion;
        CHECK_THROWS_AS(decode_u64_reply(h, good.payload, Request::GetFeatures), ProtocolError);
    }
    SECTION("another version") {
        auto h = good.header;
        h.flags = 2 | kFlagReply;
        CHECK_THROWS_AS(decode_u64_reply(h, good.payload, Request::GetFeatures), ProtocolError);
    }
    SECTION("unknown flag bits") {
        auto h = good.header;
        h.flags |= 0x100;
        CHECK_THROWS_AS(decode_u64_reply(h, good.payload, Request::GetFeatures), ProtocolError);
    }
    SECTION("a payload that is too short, too long or larger than any reply") {
        auto h = good.header;
        h.size = 4;
        std::vector<uint8_t> four(4);
        CHECK_THROWS_AS(decode_u64_reply(h, four, Request::GetFeatures), ProtocolError);
        h.size = 16;
        std::vector<uint8_t> sixteen(16);
        CHECK_THROWS_AS(decode_u64_reply(h, sixteen, Request::GetFeatures), ProtocolError);
        h.size = 0xffffffff;
        CHECK_THROWS_AS(check_reply_header(h, Request::GetFeatures), ProtocolError);
    }
    SECTION("a header that disagrees with the payload it came with") {
        auto h = good.header;
        h.size = 8;
        std::vector<uint8_t> nine(9);
        CHECK_THROWS_AS(decode_u64_reply(h, nine, Request::GetFeatures), ProtocolError);
    }
    SECTION("GET_CONFIG answered at another offset or size") {
        auto c = split(from_hex(rec::kConfig60Reply));
        CHECK_THROWS_AS(decode_config_reply(c.header, c.payload, 4, 60), ProtocolError);
        CHECK_THROWS_AS(decode_config_reply(c.header, c.payload, 0, 56), ProtocolError);
        c.payload[4] = 56;  // claims 56 bytes but carries 60
        CHECK_THROWS_AS(decode_config_reply(c.header, c.payload, 0, 56), ProtocolError);
    }
    SECTION("GET_VRING_BASE answered for another queue") {
        const auto bytes = from_hex("0b00000005000000080000000100000034120000");
        auto r = split(bytes);
        CHECK(decode_vring_base_reply(r.header, r.payload, 1) == 0x1234);
        CHECK_THROWS_AS(decode_vring_base_reply(r.header, r.payload, 0), ProtocolError);
    }
}

}  // namespace unit_message_test
