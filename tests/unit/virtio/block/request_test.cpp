// Tests for virtio/block/request: parse_request on its own, every request type and every check of its table.
#include <catch2/catch.hpp>

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "tests/unit/virtio/block/block_harness.h"
#include "virtio/block/request.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_request_test {

using embervm::memory::GuestAddress;
using namespace embervm::virtio;
using namespace embervm::virtio::block;
using namespace embervm::virtio::testing;

namespace {

constexpr uint64_t kAllFeatures = blk_feature::kFlush | blk_feature::kDiscard | blk_feature::kWriteZeroes;

// Builds requests with RingHarness and parses them as the device would.
struct ParseHarness : RingHarness {
    RequestLimits limits{kSectors, kAllFeatures, false, "blk0"};

    // Pops the next chain and parses it.
    ParsedRequest parse() {
        auto chain = queue.pop_available(mem);
        REQUIRE(chain.has_value());
        return parse_request(*chain, mem, limits);
    }
    // Makes `bufs` available as a chain and parses it; `head` gets its head.
    ParsedRequest parse(const std::vector<Buf>& bufs, uint16_t* head = nullptr) {
        const uint16_t h = ring->add(bufs);
        if (head != nullptr) *head = h;
        return parse();
    }
    // The host address of guest memory at `addr` (what an iovec for it holds).
    void* host(uint64_t addr) const { return mem.get_slice(GuestAddress(addr), 1)->data(); }
};

// The alternative `p` must hold (a copy: `p` is often a temporary).
template <typename T>
T as(const ParsedRequest& p) {
    REQUIRE(std::holds_alternative<T>(p));
    return std::get<T>(p);
}

// `p` is answered at once with `status`, a used length of 1 (the status byte only), at `r`.
void check_answered(const ParsedRequest& p, const Request& r, std::optional<uint32_t> type, uint8_t status) {
    const auto now = as<CompleteNow>(p);
    CHECK(now.type == type);
    CHECK(now.status == status);
    CHECK(now.reply.head == r.head);
    CHECK(now.reply.status.value == r.status);
    CHECK(now.reply.used_len == 1);
}

}  // namespace

TEST_CASE("parse_request: IN is a read into the writable buffers before the status byte", "[virtio][block][request]") {
    ParseHarness p;
    p.request(req::kGetId, 0, {});  // so that the head below is not 0
    (void)p.parse();
    const Request r = p.request(req::kIn, 5, {W(kData, 700), W(kData + 0x1000, 324)});
    const auto s = as<SubmitIo>(p.parse());
    CHECK(s.type == req::kIn);
    CHECK(s.reply.head == r.head);
    CHECK(r.head != 0);
    CHECK(s.reply.status.value == r.status);
    CHECK(s.reply.used_len == 1024 + 1);  // the data and the status byte
    CHECK(s.io.op == IoRequest::Op::Read);
    CHECK(s.io.offset == 5 * 512);
    CHECK(s.io.length == 1024);
    CHECK(s.io.user_data == 0);  // the device's to set
    REQUIRE(s.io.iov.size() == 2);
    CHECK(s.io.iov[0].iov_base == p.host(kData));
    CHECK(s.io.iov[0].iov_len == 700);
    CHECK(s.io.iov[1].iov_base == p.host(kData + 0x1000));
    CHECK(s.io.iov[1].iov_len == 324);
    CHECK(p.status(r) == kPoison);  // the parser writes no status
}

TEST_CASE("parse_request: OUT is a write of the readable bytes after the header", "[virtio][block][request]") {
    ParseHarness p;
    SECTION("header and data in their own descriptors; the reserved field is ignored") {
        const uint64_t st = p.new_status();
        const uint64_t hdr = p.header(req::kOut, 9, 0xdeadbeef);
        uint16_t head = 0;
        const auto s = as<SubmitIo>(p.parse({R(hdr, 16), R(kData, 512), R(kData + 0x1000, 1024), W(st, 1)}, &head));
        CHECK(s.type == req::kOut);
        CHECK(s.reply.head == head);
        CHECK(s.reply.status.value == st);
        CHECK(s.reply.used_len == 1);  // only the status byte is written
        CHECK(s.io.op == IoRequest::Op::Write);
        CHECK(s.io.offset == 9 * 512);
        CHECK(s.io.length == 1536);
        REQUIRE(s.io.iov.size() == 2);
        CHECK(s.io.iov[0].iov_base == p.host(kData));
        CHECK(s.io.iov[0].iov_len == 512);
        CHECK(s.io.iov[1].iov_base == p.host(kData + 0x1000));
        CHECK(s.io.iov[1].iov_len == 1024);
    }
    SECTION("header and data sharing one descriptor") {
        p.mem.write_obj(GuestAddress(kData), RequestHeaderLayout{req::kOut, 0, 3});
        const uint64_t st = p.new_status();
        const auto s = as<SubmitIo>(p.parse({R(kData, 16 + 512), W(st, 1)}));
        CHECK(s.io.offset == 3 * 512);
        CHECK(s.io.length == 512);
        REQUIRE(s.io.iov.size() == 1);
        CHECK(s.io.iov[0].iov_base == p.host(kData + 16));
    }
    SECTION("a header split over two descriptors") {
        p.mem.write_obj(GuestAddress(kData), RequestHeaderLayout{req::kOut, 0, 4});
        const uint64_t st = p.new_status();
        const auto s = as<SubmitIo>(p.parse({R(kData, 3), R(kData + 3, 13 + 512), W(st, 1)}));
        CHECK(s.io.offset == 4 * 512);
        CHECK(s.io.length == 512);
        REQUIRE(s.io.iov.size() == 1);
        CHECK(s.io.iov[0].iov_base == p.host(kData + 16));
    }
}

TEST_CASE("parse_request: the status byte is the last byte of the last non-empty writable buffer",
          "[virtio][block][request]") {
    ParseHarness p;
    SECTION("sharing a buffer with the data") {
        const uint64_t hdr = p.header(req::kIn, 0);
        const auto s = as<SubmitIo>(p.parse({R(hdr, 16), W(kData, 512 + 1)}));
        CHECK(s.reply.status.value == kData + 512);
        CHECK(s.io.length == 512);
        CHECK(s.reply.used_len == 513);
    }
    SECTION("empty writable buffers after it are skipped") {
        const uint64_t hdr = p.header(req::kIn, 0);
        const uint64_t st = p.new_status();
        const auto s = as<SubmitIo>(p.parse({R(hdr, 16), W(kData, 512), W(st, 1), W(kData + 0x1000, 0)}));
        CHECK(s.reply.status.value == st);
        CHECK(s.io.length == 512);
    }
}

TEST_CASE("parse_request: chains no status can be written for are guest errors", "[virtio][block][request]") {
    ParseHarness p;
    const uint64_t st = p.new_status();
    SECTION("no writable descriptor") {
        const auto e = as<GuestError>(p.parse({R(p.header(req::kIn, 0), 16), R(kData, 512)}));
        CHECK(e.what.find("status") != std::string::npos);
    }
    SECTION("only empty writable descriptors") {
        const auto e = as<GuestError>(p.parse({R(p.header(req::kIn, 0), 16), W(st, 0)}));
        CHECK(e.what.find("status") != std::string::npos);
    }
    SECTION("a writable descriptor before the header") {
        const auto e = as<GuestError>(p.parse({W(kData, 512), R(p.header(req::kOut, 0), 16), W(st, 1)}));
        CHECK(e.what.find("device-writable descriptor before a device-readable") != std::string::npos);
    }
    SECTION("a device-readable status descriptor after the data") {
        (void)as<GuestError>(p.parse({R(p.header(req::kIn, 0), 16), W(kData, 512), R(st, 1)}));
    }
    CHECK(p.byte(st) == kPoison);
}

TEST_CASE("parse_request: a short header is IOERR with no type", "[virtio][block][request]") {
    ParseHarness p;
    const uint32_t len = GENERATE(0u, 1u, 8u, 15u);
    INFO("header length " << len);
    const uint64_t st = p.new_status();
    std::vector<Buf> bufs;
    if (len != 0) bufs.push_back(R(p.header(req::kIn, 0), len));
    bufs.push_back(W(kData, 512));
    bufs.push_back(W(st, 1));
    uint16_t head = 0;
    const ParsedRequest parsed = p.parse(bufs, &head);
    check_answered(parsed, {head, st}, std::nullopt, blk_status::kIoErr);
}

TEST_CASE("parse_request: IN and OUT lengths and sector ranges", "[virtio][block][request]") {
    ParseHarness p;
    const uint32_t type = GENERATE(req::kIn, req::kOut);
    const bool in = type == req::kIn;
    INFO((in ? "IN" : "OUT"));
    const auto data = [&](uint64_t addr, uint32_t len) { return in ? W(addr, len) : R(addr, len); };
    const auto refused = [&](uint64_t sector, uint32_t len) {
        const Request r = p.request(type, sector, len != 0 ? std::vector<Buf>{data(kData, len)} : std::vector<Buf>{});
        check_answered(p.parse(), r, type, blk_status::kIoErr);
    };
    SECTION("a length that is not a whole number of sectors: IOERR") {
        refused(0, 511);
        refused(0, 513);
        refused(0, 1);
    }
    SECTION("the last sector") {
        p.request(type, kSectors - 1, {data(kData, 512)});
        const auto s = as<SubmitIo>(p.parse());
        CHECK(s.io.offset == (kSectors - 1) * 512);
        CHECK(s.io.length == 512);
    }
    SECTION("the whole disk") {
        p.request(type, 0, {data(kData, kSectors * 512)});
        CHECK(as<SubmitIo>(p.parse()).io.length == kSectors * 512);
    }
    SECTION("past the capacity: IOERR") {
        refused(kSectors - 1, 1024);  // crossing the end
        refused(kSectors, 512);       // starting at the end
        refused(kSectors + 1, 512);
        refused(~uint64_t{0}, 512);
        refused(~uint64_t{0} - 1, 1024);
    }
    SECTION("a sector whose byte offset overflows 64 bits: IOERR, not a request at a wrapped offset") {
        refused(uint64_t{1} << 55, 512);  // * 512 == 2^64 == 0
        refused((uint64_t{1} << 55) + 1, 512);
    }
    SECTION("no data up to the capacity: OK without I/O") {
        for (const uint64_t sector : {uint64_t{0}, kSectors}) {
            const Request r = p.request(type, sector, {});
            check_answered(p.parse(), r, type, blk_status::kOk);
        }
        refused(kSectors + 1, 0);  // beyond it: still out of range
    }
    SECTION("an empty disk takes no data at all") {
        p.limits.capacity_sectors = 0;
        refused(0, 512);
        const Request r = p.request(type, 0, {});
        check_answered(p.parse(), r, type, blk_status::kOk);
    }
}

TEST_CASE("parse_request: buffers in the wrong direction are not data", "[virtio][block][request]") {
    ParseHarness p;
    SECTION("IN with a device-readable data buffer: a read of nothing, OK") {
        const Request r = p.request(req::kIn, 0, {R(kData, 512)});
        check_answered(p.parse(), r, req::kIn, blk_status::kOk);
    }
    SECTION("OUT with a device-writable data buffer: a write of nothing, OK") {
        const Request r = p.request(req::kOut, 0, {W(kData, 512)});
        check_answered(p.parse(), r, req::kOut, blk_status::kOk);
    }
}

TEST_CASE("parse_request: a read-only disk", "[virtio][block][request]") {
    ParseHarness p;
    p.limits.read_only = true;
    SECTION("OUT is IOERR, whatever its length or range") {
        for (const uint32_t len : {512u, 511u, 0u}) {
            INFO("length " << len);
            const Request r = p.request(req::kOut, 0, len != 0 ? std::vector<Buf>{R(kData, len)} : std::vector<Buf>{});
            check_answered(p.parse(), r, req::kOut, blk_status::kIoErr);
        }
    }
    SECTION("IN and FLUSH go on") {
        p.request(req::kIn, 1, {W(kData, 512)});
        CHECK(as<SubmitIo>(p.parse()).io.op == IoRequest::Op::Read);
        p.request(req::kFlush, 0, {});
        CHECK(as<SubmitIo>(p.parse()).io.op == IoRequest::Op::Flush);
    }
    SECTION("DISCARD and WRITE_ZEROES are IOERR (once negotiated), even with a bad segment") {
        const uint32_t type = GENERATE(req::kDiscard, req::kWriteZeroes);
        const Request r = p.range_request(type, kData, {{0, 1, 0x80000000u}});
        check_answered(p.parse(), r, type, blk_status::kIoErr);
    }
}

TEST_CASE("parse_request: FLUSH", "[virtio][block][request]") {
    ParseHarness p;
    SECTION("negotiated: a flush of no data; the sector and any buffers are ignored") {
        const Request r = p.request(req::kFlush, 12345, {R(kData, 512), W(kData + 0x1000, 512)});
        const auto s = as<SubmitIo>(p.parse());
        CHECK(s.type == req::kFlush);
        CHECK(s.io.op == IoRequest::Op::Flush);
        CHECK(s.io.iov.empty());
        CHECK(s.io.length == 0);
        CHECK(s.reply.status.value == r.status);
        CHECK(s.reply.used_len == 1);
    }
    SECTION("not negotiated: UNSUPP") {
        p.limits.acked_features = kAllFeatures & ~blk_feature::kFlush;
        const Request r = p.request(req::kFlush, 0, {});
        check_answered(p.parse(), r, req::kFlush, blk_status::kUnsupp);
    }
}

TEST_CASE("parse_request: GET_ID writes the serial into the chain", "[virtio][block][request]") {
    const GetIdCase c = GENERATE(from_range(get_id_cases()));
    INFO(c.what);
    ParseHarness p;
    p.limits.id = c.id;
    p.limits.read_only = c.read_only;
    p.limits.acked_features = 0;  // GET_ID needs no feature
    const std::vector<Buf> bufs = get_id_buffers(p, c);
    const Request r = p.request(req::kGetId, 0, bufs);
    const auto now = as<CompleteNow>(p.parse());
    CHECK(now.type == req::kGetId);
    CHECK(now.status == blk_status::kOk);
    CHECK(now.reply.head == r.head);
    CHECK(now.reply.status.value == r.status);
    CHECK(now.reply.used_len == c.want.size() + 1);
    CHECK(p.status(r) == kPoison);  // the status is the device's to write
    check_get_id_buffers(p, bufs, c);
}

TEST_CASE("parse_request: DISCARD and WRITE_ZEROES segments", "[virtio][block][request]") {
    ParseHarness p;
    const uint32_t type = GENERATE(req::kDiscard, req::kWriteZeroes);
    const bool discard = type == req::kDiscard;
    INFO((discard ? "DISCARD" : "WRITE_ZEROES"));
    const auto answered = [&](const Request& r, uint8_t status) { check_answered(p.parse(), r, type, status); };

    SECTION("one segment: the range in bytes; the header's sector is ignored") {
        p.mem.write_obj(GuestAddress(kData), SegmentLayout{3, 5, 0});
        const Request r = p.request(type, 1000000, {R(kData, 16)});
        const auto s = as<SubmitIo>(p.parse());
        CHECK(s.type == type);
        CHECK(s.io.op == (discard ? IoRequest::Op::Discard : IoRequest::Op::WriteZeroes));
        CHECK(s.io.offset == 3 * 512);
        CHECK(s.io.length == 5 * 512);
        CHECK_FALSE(s.io.unmap);
        CHECK(s.io.iov.empty());
        CHECK(s.reply.head == r.head);
        CHECK(s.reply.status.value == r.status);
        CHECK(s.reply.used_len == 1);
    }
    SECTION("the segment split over two descriptors") {
        p.mem.write_obj(GuestAddress(kData), SegmentLayout{7, 2, 0});
        const uint64_t st = p.new_status();
        const auto s = as<SubmitIo>(p.parse({R(p.header(type, 0), 16), R(kData, 5), R(kData + 5, 11), W(st, 1)}));
        CHECK(s.io.offset == 7 * 512);
        CHECK(s.io.length == 1024);
    }
    SECTION("the unmap flag: WRITE_ZEROES passes it on, DISCARD is UNSUPP") {
        const Request r = p.range_request(type, kData, {{1, 1, 1}});
        if (discard) {
            answered(r, blk_status::kUnsupp);
        } else {
            CHECK(as<SubmitIo>(p.parse()).io.unmap);
        }
    }
    SECTION("unknown flags: UNSUPP") {
        const uint32_t flags = GENERATE(2u, 3u, 0x80000000u);
        answered(p.range_request(type, kData, {{0, 1, flags}}), blk_status::kUnsupp);
    }
    SECTION("more than one segment, or trailing bytes: UNSUPP") {
        answered(p.range_request(type, kData, {{0, 1, 0}, {4, 1, 0}}), blk_status::kUnsupp);
        p.mem.write_obj(GuestAddress(kData + 0x100), SegmentLayout{0, 1, 0});
        answered(p.request(type, 0, {R(kData + 0x100, 17)}), blk_status::kUnsupp);
    }
    SECTION("no whole segment: IOERR") {
        const uint32_t len = GENERATE(0u, 1u, 8u, 15u);
        p.mem.write_obj(GuestAddress(kData), SegmentLayout{0, 1, 0});
        answered(p.request(type, 0, len != 0 ? std::vector<Buf>{R(kData, len)} : std::vector<Buf>{}), blk_status::kIoErr);
    }
    SECTION("up to max_discard_sectors / max_write_zeroes_sectors, IOERR beyond") {
        p.limits.capacity_sectors = uint64_t{kMaxDiscardSectors} + 64;
        p.range_request(type, kData, {{8, kMaxDiscardSectors, 0}});
        CHECK(as<SubmitIo>(p.parse()).io.length == uint64_t{kMaxDiscardSectors} * 512);
        answered(p.range_request(type, kData + 0x100, {{0, kMaxDiscardSectors + 1, 0}}), blk_status::kIoErr);
    }
    SECTION("past the capacity, or sector + count overflowing: IOERR") {
        answered(p.range_request(type, kData, {{kSectors - 1, 2, 0}}), blk_status::kIoErr);
        answered(p.range_request(type, kData + 0x100, {{kSectors, 1, 0}}), blk_status::kIoErr);
        answered(p.range_request(type, kData + 0x200, {{~uint64_t{0} - 1, 4, 0}}), blk_status::kIoErr);
        answered(p.range_request(type, kData + 0x300, {{kSectors + 1, 0, 0}}), blk_status::kIoErr);
    }
    SECTION("zero sectors up to the capacity: OK without I/O") {
        answered(p.range_request(type, kData, {{5, 0, 0}}), blk_status::kOk);
        answered(p.range_request(type, kData + 0x100, {{kSectors, 0, 0}}), blk_status::kOk);
    }
    SECTION("the table's order: UNSUPP segment checks come before IOERR ones") {
        // Two segments, the first too large and out of range.
        answered(p.range_request(type, kData, {{kSectors, kMaxDiscardSectors + 1, 0}, {0, 1, 0}}), blk_status::kUnsupp);
        // Unknown flags on a segment out of range.
        answered(p.range_request(type, kData + 0x100, {{kSectors + 5, 1, 4}}), blk_status::kUnsupp);
    }
    SECTION("not negotiated: UNSUPP before anything else (read-only, a missing segment)") {
        p.limits.acked_features = kAllFeatures & ~(discard ? blk_feature::kDiscard : blk_feature::kWriteZeroes);
        answered(p.range_request(type, kData, {{0, 1, 0}}), blk_status::kUnsupp);
        answered(p.request(type, 0, {}), blk_status::kUnsupp);
        p.limits.read_only = true;
        answered(p.range_request(type, kData, {{0, 1, 0}}), blk_status::kUnsupp);
    }
}

TEST_CASE("parse_request: unknown request types are UNSUPP", "[virtio][block][request]") {
    ParseHarness p;
    const uint32_t type = GENERATE(from_range(kUnknownTypes.begin(), kUnknownTypes.end()));
    INFO("type " << type);
    p.mem.fill(GuestAddress(kData), 512, 0x44);
    const Request r = p.request(type, 0, {W(kData, 512)});
    check_answered(p.parse(), r, type, blk_status::kUnsupp);
    CHECK(p.bytes(kData, 512) == std::vector<uint8_t>(512, 0x44));
}

}  // namespace unit_request_test
