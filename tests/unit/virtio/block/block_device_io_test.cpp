// Tests for virtio/block/block_device: IN, OUT, FLUSH, GET_ID and unknown types, end to end on the fake backend.
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdint>
#include <numeric>
#include <set>
#include <utility>
#include <vector>

#include "tests/unit/virtio/block/block_harness.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_block_device_io_test {

using embervm::memory::GuestAddress;
using namespace embervm::virtio;
using namespace embervm::virtio::block;
using namespace embervm::virtio::testing;

TEST_CASE("virtio-blk device: OUT then IN round trip over odd-sized descriptors", "[virtio][block][block_device]") {
    Harness h;
    // OUT sectors 5..8 (2048 bytes) from five pieces, one of them empty.
    const auto data = h.fill_pattern(kData, 2048, 0x21);
    const Request w = h.request(req::kOut, 5,
                                {R(kData, 1), R(kData + 1, 510), R(kData + 511, 0), R(kData + 511, 1000),
                                 R(kData + 1511, 537)});
    h.notify();
    CHECK(h.status(w) == blk_status::kOk);
    REQUIRE(h.used_idx() == 1);
    CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{w.head, 1});  // OUT: only the status byte
    REQUIRE(h.backend->log.size() == 1);
    CHECK(h.backend->log[0].op == IoRequest::Op::Write);
    CHECK(h.backend->log[0].offset == 5 * 512);
    CHECK(h.backend->log[0].length == 2048);
    CHECK(h.backend->log[0].iov_bytes == 2048);
    CHECK(h.backend->bytes(5 * 512, 2048) == data);
    // Sectors around it are untouched.
    FakeBlockBackend pristine(kSectors * 512, false);
    CHECK(h.backend->bytes(4 * 512, 512) == pristine.bytes(4 * 512, 512));
    CHECK(h.backend->bytes(9 * 512, 512) == pristine.bytes(9 * 512, 512));

    // IN sectors 4..9 (3072 bytes) into three buffers; the last also holds the status byte.
    h.mem.fill(GuestAddress(kData + 0x10000), 0x4000, 0x77);
    const uint64_t hdr = h.header(req::kIn, 4);
    const uint16_t head = h.ring->add({R(hdr, 16), W(kData + 0x10000, 700), W(kData + 0x11000, 1300),
                                       W(kData + 0x12000, 1072 + 1)});
    h.notify();
    REQUIRE(h.used_idx() == 2);
    CHECK(h.used(1) == std::pair<uint32_t, uint32_t>{head, 3072 + 1});  // data + status
    CHECK(h.byte(kData + 0x12000 + 1072) == blk_status::kOk);
    const auto got = concat({h.bytes(kData + 0x10000, 700), h.bytes(kData + 0x11000, 1300),
                             h.bytes(kData + 0x12000, 1072)});
    CHECK(got == concat({pristine.bytes(4 * 512, 512), data, pristine.bytes(9 * 512, 512)}));
    // Bytes after each buffer are untouched.
    CHECK(h.byte(kData + 0x10000 + 700) == 0x77);
    CHECK(h.byte(kData + 0x11000 + 1300) == 0x77);
    CHECK(h.byte(kData + 0x12000 + 1073) == 0x77);
    CHECK(h.backend->log[1].op == IoRequest::Op::Read);
    CHECK(h.backend->log[1].offset == 4 * 512);
    CHECK(h.backend->log[1].iov_bytes == 3072);
    CHECK(h.irq.errors.empty());
    CHECK_FALSE(h.irq.used.empty());
}

TEST_CASE("virtio-blk device: header and data sharing a descriptor, header split over two",
          "[virtio][block][block_device]") {
    Harness h;
    const uint64_t buf = kData + 0x3000;
    std::vector<uint8_t> sector(512);
    std::iota(sector.begin(), sector.end(), uint8_t{3});
    h.mem.write(GuestAddress(buf + 16), sector);
    const uint64_t st = h.new_status();
    SECTION("header and one sector of data in one descriptor") {
        h.mem.write_obj(GuestAddress(buf), RequestHeaderLayout{req::kOut, 0, 5});
        h.ring->add({R(buf, 16 + 512), W(st, 1)});
        h.notify();
        CHECK(h.byte(st) == blk_status::kOk);
        CHECK(h.backend->bytes(5 * 512, 512) == sector);
    }
    SECTION("header split 3 + 13 bytes, the second piece continuing with the data") {
        h.mem.write_obj(GuestAddress(buf), RequestHeaderLayout{req::kOut, 0, 9});
        h.ring->add({R(buf, 3), R(buf + 3, 13 + 512), W(st, 1)});
        h.notify();
        CHECK(h.byte(st) == blk_status::kOk);
        CHECK(h.backend->bytes(9 * 512, 512) == sector);
    }
    SECTION("IN: data and status byte in one writable descriptor") {
        const uint64_t in = kData + 0x6000;
        h.mem.fill(GuestAddress(in), 514, 0x99);
        const uint16_t head = h.ring->add({R(h.header(req::kIn, 2), 16), W(in, 513)});
        h.notify();
        CHECK(h.byte(in + 512) == blk_status::kOk);
        CHECK(h.byte(in + 513) == 0x99);
        CHECK(h.bytes(in, 512) == h.backend->bytes(2 * 512, 512));
        CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{head, 513});
    }
}

TEST_CASE("virtio-blk device: requests through INDIRECT descriptors", "[virtio][block][block_device]") {
    Harness h;
    const auto data = h.fill_pattern(kData, 1024, 0x90);
    const Request w = h.request(req::kOut, 10, {R(kData, 300), R(kData + 300, 724)}, /*indirect=*/true);
    const Request r = h.request(req::kIn, 10, {W(kData + 0x8000, 1024)}, /*indirect=*/true);
    h.notify();
    CHECK(h.status(w) == blk_status::kOk);
    CHECK(h.status(r) == blk_status::kOk);
    REQUIRE(h.used_idx() == 2);
    CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{w.head, 1});
    CHECK(h.used(1) == std::pair<uint32_t, uint32_t>{r.head, 1025});
    CHECK(h.bytes(kData + 0x8000, 1024) == data);
}

TEST_CASE("virtio-blk device: several requests in one kick complete in order with their heads",
          "[virtio][block][block_device]") {
    Harness h;
    std::vector<Request> reqs;
    for (uint64_t i = 0; i < 5; i++) reqs.push_back(h.request(req::kIn, i * 3, {W(kData + 0x1000 * i, 512 * (i + 1))}));
    h.notify();
    REQUIRE(h.used_idx() == 5);
    FakeBlockBackend pristine(kSectors * 512, false);
    std::set<uint64_t> tags;
    for (uint16_t i = 0; i < 5; i++) {
        INFO("request " << i);
        CHECK(h.status(reqs[i]) == blk_status::kOk);
        CHECK(h.used(i) == std::pair<uint32_t, uint32_t>{reqs[i].head, 512u * (i + 1) + 1});
        CHECK(h.bytes(kData + 0x1000ULL * i, 512ULL * (i + 1)) == pristine.bytes(i * 3 * 512ULL, 512ULL * (i + 1)));
        tags.insert(h.backend->log[i].user_data);
    }
    CHECK(tags.size() == 5);  // every request got its own tag
    CHECK(h.irq.used == std::vector<uint16_t>{0});  // one interrupt for the batch
}

TEST_CASE("virtio-blk device: sector ranges against the capacity", "[virtio][block][block_device]") {
    Harness h;
    const auto before = h.backend->disk;
    SECTION("the last sector") {
        const Request r = h.request(req::kIn, kSectors - 1, {W(kData, 512)});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
        CHECK(h.backend->log.size() == 1);
    }
    SECTION("a read crossing the end: IOERR, no I/O, used length 1") {
        h.mem.fill(GuestAddress(kData), 1024, 0x33);
        const Request r = h.request(req::kIn, kSectors - 1, {W(kData, 1024)});
        h.notify();
        CHECK(h.status(r) == blk_status::kIoErr);
        CHECK(h.used(0).second == 1);
        CHECK(h.bytes(kData, 1024) == std::vector<uint8_t>(1024, 0x33));
        CHECK(h.backend->log.empty());
    }
    SECTION("a write starting at the capacity") {
        const Request r = h.request(req::kOut, kSectors, {R(kData, 512)});
        h.notify();
        CHECK(h.status(r) == blk_status::kIoErr);
    }
    SECTION("sector far beyond, and sector * 512 overflowing 64 bits") {
        const Request a = h.request(req::kOut, ~uint64_t{0}, {R(kData, 512)});
        const Request b = h.request(req::kIn, (~uint64_t{0} / 512) + 1, {W(kData, 512)});
        const Request c = h.request(req::kIn, ~uint64_t{0} - 1, {W(kData, 1024)});
        h.notify();
        CHECK(h.status(a) == blk_status::kIoErr);
        CHECK(h.status(b) == blk_status::kIoErr);
        CHECK(h.status(c) == blk_status::kIoErr);
        CHECK(h.backend->log.empty());
    }
    SECTION("a data length that is not a multiple of 512") {
        const Request a = h.request(req::kOut, 0, {R(kData, 511)});
        const Request b = h.request(req::kIn, 0, {W(kData, 513)});
        h.notify();
        CHECK(h.status(a) == blk_status::kIoErr);
        CHECK(h.status(b) == blk_status::kIoErr);
        CHECK(h.backend->log.empty());
    }
    SECTION("no data at the capacity (or below): OK without I/O") {
        const Request a = h.request(req::kIn, kSectors, {});
        const Request b = h.request(req::kOut, 0, {});
        h.notify();
        CHECK(h.status(a) == blk_status::kOk);
        CHECK(h.status(b) == blk_status::kOk);
        CHECK(h.used(0).second == 1);
        CHECK(h.backend->log.empty());
    }
    for (const Submitted& s : h.backend->log) CHECK(s.offset + s.length <= kSectors * 512);
    CHECK(h.backend->disk == before);  // nothing out of range was written
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: FLUSH", "[virtio][block][block_device]") {
    SECTION("negotiated: reaches the backend, OK, used length 1") {
        Harness h({"f", false, true});
        REQUIRE((h.acked & blk_feature::kFlush) != 0);
        const Request r = h.request(req::kFlush, 0, {});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
        REQUIRE(h.backend->log.size() == 1);
        CHECK(h.backend->log[0].op == IoRequest::Op::Flush);
        CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{r.head, 1});
    }
    SECTION("offered but not acked by the driver: UNSUPP") {
        Harness h({"f", false, true}, Options{.ack_mask = ~blk_feature::kFlush});
        const Request r = h.request(req::kFlush, 0, {});
        h.notify();
        CHECK(h.status(r) == blk_status::kUnsupp);
        CHECK(h.backend->log.empty());
    }
    SECTION("not offered (options.flush false): UNSUPP") {
        Harness h({"f", false, false});
        REQUIRE((h.acked & blk_feature::kFlush) == 0);
        const Request r = h.request(req::kFlush, 0, {});
        h.notify();
        CHECK(h.status(r) == blk_status::kUnsupp);
        CHECK(h.backend->log.empty());
        CHECK(h.used(0).second == 1);
    }
    SECTION("on a read-only drive: still OK") {
        Harness h({"f", true, true});
        const Request r = h.request(req::kFlush, 0, {});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
    }
    SECTION("the backend fails the flush: IOERR") {
        Harness h({"f", false, true});
        h.backend->fail_with = -EIO;
        const Request r = h.request(req::kFlush, 0, {});
        h.notify();
        CHECK(h.status(r) == blk_status::kIoErr);
    }
}

TEST_CASE("virtio-blk device: GET_ID", "[virtio][block][block_device]") {
    const GetIdCase c = GENERATE(from_range(get_id_cases()));
    INFO(c.what);
    Harness h({c.id, c.read_only, false});
    const std::vector<Buf> bufs = get_id_buffers(h, c);
    const Request r = h.request(req::kGetId, 0, bufs);
    h.notify();
    CHECK(h.status(r) == blk_status::kOk);
    CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{r.head, static_cast<uint32_t>(c.want.size() + 1)});
    check_get_id_buffers(h, bufs, c);
    CHECK(h.backend->log.empty());
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: unknown request types are UNSUPP", "[virtio][block][block_device]") {
    // All in one kick: each is answered in order, none reaches the backend or breaks the device.
    Harness h;
    h.mem.fill(GuestAddress(kData), 0x200 * kUnknownTypes.size(), 0x44);
    std::vector<Request> reqs;
    for (size_t i = 0; i < kUnknownTypes.size(); i++) {
        reqs.push_back(h.request(kUnknownTypes[i], 0, {W(kData + 0x200 * i, 512)}));
    }
    h.notify();
    REQUIRE(h.used_idx() == kUnknownTypes.size());
    for (uint16_t i = 0; i < kUnknownTypes.size(); i++) {
        INFO("type " << kUnknownTypes[i]);
        CHECK(h.status(reqs[i]) == blk_status::kUnsupp);
        CHECK(h.used(i) == std::pair<uint32_t, uint32_t>{reqs[i].head, 1});
    }
    CHECK(h.bytes(kData, 0x200 * kUnknownTypes.size()) == std::vector<uint8_t>(0x200 * kUnknownTypes.size(), 0x44));
    CHECK(h.backend->log.empty());
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: a read-only drive", "[virtio][block][block_device]") {
    const bool via_backend = GENERATE(false, true);
    INFO((via_backend ? "read-only backend" : "read_only option"));
    // The driver acks DISCARD / WRITE_ZEROES although they were not offered (a transport
    // would refuse; the device must still refuse the requests).
    const bool force = GENERATE(false, true);
    INFO("acked regardless: " << force);
    Harness h({"ro", !via_backend, true},
              Options{.ro_backend = via_backend, .ack_force = force ? blk_feature::kDiscard | blk_feature::kWriteZeroes : 0});
    const uint64_t f = h.dev->available_features();
    CHECK((f & blk_feature::kRo) != 0);
    CHECK((f & (blk_feature::kDiscard | blk_feature::kWriteZeroes)) == 0);

    const auto before = h.backend->disk;
    h.fill_pattern(kData, 1024, 1);
    const Request w = h.request(req::kOut, 0, {R(kData, 1024)});
    const Request d = h.range_request(req::kDiscard, kData + 0x1000, {{0, 1, 0}});
    const Request z = h.range_request(req::kWriteZeroes, kData + 0x1100, {{0, 1, 1}});
    const Request r = h.request(req::kIn, 2, {W(kData + 0x2000, 512)});
    h.notify();
    CHECK(h.status(w) == blk_status::kIoErr);
    const uint8_t range_status = force ? blk_status::kIoErr : blk_status::kUnsupp;
    CHECK(h.status(d) == range_status);
    CHECK(h.status(z) == range_status);
    CHECK(h.status(r) == blk_status::kOk);
    REQUIRE(h.used_idx() == 4);
    for (uint16_t i = 0; i < 3; i++) CHECK(h.used(i).second == 1);
    CHECK(h.used(3).second == 513);
    CHECK(h.bytes(kData + 0x2000, 512) == h.backend->bytes(1024, 512));
    // Only the read reached the backend; the disk is unchanged.
    REQUIRE(h.backend->log.size() == 1);
    CHECK(h.backend->log[0].op == IoRequest::Op::Read);
    CHECK(h.backend->disk == before);
}

}  // namespace unit_block_device_io_test
