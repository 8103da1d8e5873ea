// Tests for virtio/block/block_device: DISCARD and WRITE_ZEROES requests on the fake backend.
#include <catch2/catch.hpp>

#include <cstdint>
#include <utility>
#include <vector>

#include "tests/unit/virtio/block/block_harness.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_block_device_discard_test {

using embervm::memory::GuestAddress;
using namespace embervm::virtio;
using namespace embervm::virtio::block;
using namespace embervm::virtio::testing;

TEST_CASE("virtio-blk device: DISCARD and WRITE_ZEROES segments", "[virtio][block][block_device]") {
    Harness h;
    FakeBlockBackend pristine(kSectors * 512, false);
    constexpr uint64_t kSeg = kData + 0x20000;

    SECTION("WRITE_ZEROES: range zeroed, unmap flag passed through") {
        const uint32_t flags = GENERATE(0u, 1u);
        const Request r = h.range_request(req::kWriteZeroes, kSeg, {{3, 5, flags}});  // odd start: alignment is 1
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
        CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{r.head, 1});
        REQUIRE(h.backend->log.size() == 1);
        CHECK(h.backend->log[0].op == IoRequest::Op::WriteZeroes);
        CHECK(h.backend->log[0].offset == 3 * 512);
        CHECK(h.backend->log[0].length == 5 * 512);
        CHECK(h.backend->log[0].unmap == (flags == 1));
        CHECK(h.backend->bytes(3 * 512, 5 * 512) == std::vector<uint8_t>(5 * 512, 0));
        CHECK(h.backend->bytes(2 * 512, 512) == pristine.bytes(2 * 512, 512));
        CHECK(h.backend->bytes(8 * 512, 512) == pristine.bytes(8 * 512, 512));
    }
    SECTION("DISCARD") {
        const Request r = h.range_request(req::kDiscard, kSeg, {{kSectors - 2, 2, 0}});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
        REQUIRE(h.backend->log.size() == 1);
        CHECK(h.backend->log[0].op == IoRequest::Op::Discard);
        CHECK(h.backend->log[0].offset == (kSectors - 2) * 512);
        CHECK(h.backend->log[0].length == 1024);
        CHECK_FALSE(h.backend->log[0].unmap);
    }
    SECTION("a segment split over two descriptors") {
        h.mem.write_obj(GuestAddress(kSeg), SegmentLayout{7, 2, 1});
        const uint64_t st = h.new_status();
        h.ring->add({R(h.header(req::kWriteZeroes, 0), 16), R(kSeg, 5), R(kSeg + 5, 11), W(st, 1)});
        h.notify();
        CHECK(h.byte(st) == blk_status::kOk);
        REQUIRE(h.backend->log.size() == 1);
        CHECK(h.backend->log[0].offset == 7 * 512);
        CHECK(h.backend->log[0].length == 1024);
        CHECK(h.backend->log[0].unmap);
    }
    SECTION("the header's sector field is ignored") {
        h.mem.write_obj(GuestAddress(kSeg), SegmentLayout{1, 1, 0});
        const Request r = h.request(req::kDiscard, 1000000, {R(kSeg, 16)});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
        REQUIRE(h.backend->log.size() == 1);
        CHECK(h.backend->log[0].offset == 512);
    }
    SECTION("DISCARD with the unmap flag: UNSUPP") {
        const Request r = h.range_request(req::kDiscard, kSeg, {{0, 1, 1}});
        h.notify();
        CHECK(h.status(r) == blk_status::kUnsupp);
    }
    SECTION("unknown flags: UNSUPP") {
        const uint32_t type = GENERATE(req::kDiscard, req::kWriteZeroes);
        const uint32_t flags = GENERATE(2u, 3u, 0x80000000u);
        const Request r = h.range_request(type, kSeg, {{0, 1, flags}});
        h.notify();
        CHECK(h.status(r) == blk_status::kUnsupp);
    }
    SECTION("more segments than max_discard_seg / max_write_zeroes_seg (1): UNSUPP") {
        const uint32_t type = GENERATE(req::kDiscard, req::kWriteZeroes);
        const Request r = h.range_request(type, kSeg, {{0, 1, 0}, {4, 1, 0}});
        h.notify();
        CHECK(h.status(r) == blk_status::kUnsupp);
    }
    SECTION("a segment with trailing bytes (not a multiple of 16): UNSUPP") {
        h.mem.write_obj(GuestAddress(kSeg), SegmentLayout{0, 1, 0});
        const Request r = h.request(req::kDiscard, 0, {R(kSeg, 20)});
        h.notify();
        CHECK(h.status(r) == blk_status::kUnsupp);
    }
    SECTION("a short or missing segment: IOERR") {
        const uint32_t type = GENERATE(req::kDiscard, req::kWriteZeroes);
        const uint32_t len = GENERATE(0u, 1u, 8u, 15u);
        h.mem.write_obj(GuestAddress(kSeg), SegmentLayout{0, 1, 0});
        const Request r = h.request(type, 0, len ? std::vector<Buf>{R(kSeg, len)} : std::vector<Buf>{});
        h.notify();
        CHECK(h.status(r) == blk_status::kIoErr);
    }
    SECTION("out of range, or sector + count overflowing: IOERR") {
        const uint32_t type = GENERATE(req::kDiscard, req::kWriteZeroes);
        const Request a = h.range_request(type, kSeg, {{kSectors - 1, 2, 0}});
        const Request b = h.range_request(type, kSeg + 0x100, {{kSectors, 1, 0}});
        const Request c = h.range_request(type, kSeg + 0x200, {{~uint64_t{0} - 1, 4, 0}});
        h.notify();
        CHECK(h.status(a) == blk_status::kIoErr);
        CHECK(h.status(b) == blk_status::kIoErr);
        CHECK(h.status(c) == blk_status::kIoErr);
    }
    SECTION("zero sectors: OK without I/O") {
        const Request r = h.range_request(req::kWriteZeroes, kSeg, {{5, 0, 0}});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
    }
    if (h.backend->log.empty()) CHECK(h.backend->disk == pristine.disk);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: DISCARD and WRITE_ZEROES size limits", "[virtio][block][block_device]") {
    // A disk larger than the limit (the fake only stores its first 4 MiB).
    Harness h({"big", false, true}, Options{.disk_bytes = (uint64_t{kMaxDiscardSectors} + 64) * 512});
    const uint32_t type = GENERATE(req::kDiscard, req::kWriteZeroes);
    const Request ok = h.range_request(type, kData, {{8, kMaxDiscardSectors, 0}});
    const Request big = h.range_request(type, kData + 0x100, {{0, kMaxDiscardSectors + 1, 0}});
    h.notify();
    CHECK(h.status(ok) == blk_status::kOk);
    CHECK(h.status(big) == blk_status::kIoErr);
    REQUIRE(h.backend->log.size() == 1);
    CHECK(h.backend->log[0].offset == 8 * 512);
    CHECK(h.backend->log[0].length == uint64_t{kMaxDiscardSectors} * 512);
}

TEST_CASE("virtio-blk device: DISCARD and WRITE_ZEROES without the feature are UNSUPP", "[virtio][block][block_device]") {
    Harness h({"n", false, true}, Options{.ack_mask = ~(blk_feature::kDiscard | blk_feature::kWriteZeroes)});
    const Request d = h.range_request(req::kDiscard, kData, {{0, 1, 0}});
    const Request z = h.range_request(req::kWriteZeroes, kData + 0x100, {{0, 1, 0}});
    h.notify();
    CHECK(h.status(d) == blk_status::kUnsupp);
    CHECK(h.status(z) == blk_status::kUnsupp);
    CHECK(h.backend->log.empty());
}

}  // namespace unit_block_device_discard_test
