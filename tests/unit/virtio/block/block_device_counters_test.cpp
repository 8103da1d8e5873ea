// Tests for BlockDevice::counters() (virtio/block/block_device) through the real backends on a temporary image.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "tests/unit/virtio/block/block_harness.h"
#include "tests/unit/virtio/temp_image.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_block_device_counters_test {

using namespace embervm::virtio;
using namespace embervm::virtio::block;
using namespace embervm::virtio::testing;
using embervm::test::TempImage;

namespace {

constexpr uint64_t kDiskBytes = 64 * kSectorSize;
// Plain rings: no EVENT_IDX or indirect descriptors.
constexpr Options kPlainRings{.ack_mask = ~(feature::kRingEventIdx | feature::kRingIndirectDesc)};

}  // namespace

TEST_CASE("virtio-blk counters: requests by type, bytes, IOERR and UNSUPP", "[virtio][block][block_device][metrics]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO(to_string(engine));
    TempImage image(kDiskBytes);
    // Depth 2: the async backend is full most of the time.
    Harness h(open_block_backend(image.path(), false, engine, 2), {"counted", false, true}, kPlainRings);
    CHECK(h.dev->counters().read_requests == 0);

    std::vector<Request> ok;
    for (uint64_t i = 0; i < 3; i++) ok.push_back(h.request(req::kOut, 4 * i, {R(kData + 0x1000 * i, 1024)}));
    for (uint64_t i = 0; i < 2; i++) ok.push_back(h.request(req::kIn, 4 * i, {W(kData + 0x8000 + 0x1000 * i, 512)}));
    ok.push_back(h.request(req::kFlush, 0, {}));
    ok.push_back(h.request(req::kGetId, 0, {W(kData + 0x10000, 20)}));
    ok.push_back(h.range_request(req::kDiscard, kData + 0x11000, {{8, 2, 0}}));
    ok.push_back(h.range_request(req::kWriteZeroes, kData + 0x12000, {{10, 1, 0}}));
    const Request out_of_range = h.request(req::kIn, 64, {W(kData + 0x13000, 512)});
    const Request unknown = h.request(99, 0, {});
    h.run_until_used(static_cast<uint16_t>(ok.size() + 2));

    for (const Request& r : ok) CHECK(h.status(r) == blk_status::kOk);
    CHECK(h.status(out_of_range) == blk_status::kIoErr);
    CHECK(h.status(unknown) == blk_status::kUnsupp);
    const BlockCounters c = h.dev->counters();
    CHECK(c.write_requests == 3);
    CHECK(c.read_requests == 3);  // the out-of-range read is a read request too
    CHECK(c.flush_requests == 1);
    CHECK(c.get_id_requests == 1);
    CHECK(c.discard_requests == 1);
    CHECK(c.write_zeroes_requests == 1);
    CHECK(c.write_bytes == 3 * 1024);
    CHECK(c.read_bytes == 2 * 512);  // not the failed read's
    CHECK(c.io_errors == 1);
    CHECK(c.unsupported_requests == 1);
    CHECK(c.device_errors == 0);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk counters: a malformed chain is one device error", "[virtio][block][block_device][metrics]") {
    TempImage image(kDiskBytes);
    Harness h(open_block_backend(image.path(), false, IoEngine::Sync, 8), {"counted", false, true}, kPlainRings);
    // No device-writable buffer: there is nowhere to put the status.
    h.ring->add({R(h.header(req::kIn, 0), 16)});
    h.notify();
    CHECK(h.irq.errors.size() == 1);
    CHECK(h.dev->counters().device_errors == 1);
    // The device is broken until reset: another kick changes nothing.
    h.request(req::kIn, 0, {W(kData, 512)});
    h.notify();
    CHECK(h.dev->counters().device_errors == 1);
    CHECK(h.dev->counters().read_requests == 0);
}

}  // namespace unit_block_device_counters_test
