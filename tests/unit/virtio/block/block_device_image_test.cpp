// Tests for virtio/block/block_device on the real backends (Sync and io_uring) over a temporary image.
#include <catch2/catch.hpp>

#include <numeric>
#include <string>
#include <vector>

#include "tests/unit/virtio/block/block_harness.h"
#include "tests/unit/virtio/temp_image.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_block_device_image_test {

using embervm::memory::GuestAddress;
using namespace embervm::virtio;
using namespace embervm::virtio::block;
using namespace embervm::virtio::testing;
using embervm::test::TempImage;

TEST_CASE("virtio-blk device: real backends on a temporary image", "[virtio][block][block_device]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO((engine == IoEngine::Sync ? "Sync" : "Async"));
    TempImage disk(64 * 512 + 100);  // a partial last sector is invisible
    std::vector<uint8_t> data(1536);
    std::iota(data.begin(), data.end(), uint8_t{0x40});
    {
        Harness h(open_block_backend(disk.path(), false, engine), {"real", false, true});
        CHECK(h.dev->capacity_sectors() == 64);
        h.mem.write(GuestAddress(kData), data);
        const Request w = h.request(req::kOut, 7, {R(kData, 100), R(kData + 100, 1436)});
        const Request f = h.request(req::kFlush, 0, {});
        h.run_until_used(2);
        CHECK(h.status(w) == blk_status::kOk);
        CHECK(h.status(f) == blk_status::kOk);

        h.mem.write_obj(GuestAddress(kData + 0x4000), SegmentLayout{20, 3, 0});
        h.mem.write_obj(GuestAddress(kData + 0x4010), SegmentLayout{30, 2, 1});
        h.mem.write_obj(GuestAddress(kData + 0x4020), SegmentLayout{40, 1, 0});
        const Request z1 = h.request(req::kWriteZeroes, 0, {R(kData + 0x4000, 16)});
        const Request z2 = h.request(req::kWriteZeroes, 0, {R(kData + 0x4010, 16)});
        const Request d = h.request(req::kDiscard, 0, {R(kData + 0x4020, 16)});
        const Request r = h.request(req::kIn, 6, {W(kData + 0x8000, 1000), W(kData + 0x9000, 1048)});
        const Request past = h.request(req::kIn, 63, {W(kData + 0xa000, 1024)});
        const Request id = h.request(req::kGetId, 0, {W(kData + 0xb000, 20)});
        h.run_until_used(8);
        CHECK(h.status(z1) == blk_status::kOk);
        CHECK(h.status(z2) == blk_status::kOk);
        CHECK(h.status(d) == blk_status::kOk);
        CHECK(h.status(r) == blk_status::kOk);
        CHECK(h.status(past) == blk_status::kIoErr);
        CHECK(h.status(id) == blk_status::kOk);
        CHECK(h.used_len(r) == 2048 + 1);
        CHECK(h.used_len(past) == 1);
        CHECK(h.used_len(id) == 21);
        CHECK(h.used_len(z1) == 1);
        CHECK(concat({h.bytes(kData + 0x8000, 1000), h.bytes(kData + 0x9000, 1048)}) ==
              concat({disk.original(6 * 512, 512), data}));
        const auto idb = h.bytes(kData + 0xb000, 20);
        CHECK(std::string(idb.begin(), idb.begin() + 4) == "real");
        CHECK(h.irq.errors.empty());
    }
    // The image has the data and the zeroed ranges.
    CHECK(disk.read(7 * 512, 1536) == data);
    CHECK(disk.read(20 * 512, 3 * 512) == std::vector<uint8_t>(3 * 512, 0));
    CHECK(disk.read(30 * 512, 2 * 512) == std::vector<uint8_t>(2 * 512, 0));
    CHECK(disk.read(23 * 512, 512) == disk.original(23 * 512, 512));
    CHECK(disk.read(64 * 512, 100) == disk.original(64 * 512, 100));

    // Read-only image: F_RO, writes refused, the image unchanged.
    {
        Harness h(open_block_backend(disk.path(), true, engine), {"real", false, true});
        CHECK((h.dev->available_features() & blk_feature::kRo) != 0);
        h.mem.fill(GuestAddress(kData), 512, 0x99);
        const Request w = h.request(req::kOut, 0, {R(kData, 512)});
        const Request r = h.request(req::kIn, 7, {W(kData + 0x1000, 512)});
        h.run_until_used(2);
        CHECK(h.status(w) == blk_status::kIoErr);
        CHECK(h.status(r) == blk_status::kOk);
        CHECK(h.bytes(kData + 0x1000, 512) == std::vector<uint8_t>(data.begin(), data.begin() + 512));
    }
    CHECK(disk.read(0, 512) == disk.original(0, 512));
}

TEST_CASE("virtio-blk device: real backends with a tiny queue depth", "[virtio][block][block_device]") {
    // io_uring at depth 2: the device keeps running into a full backend and must resume from
    // completions (on the event loop), never losing or repeating a request.
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO((engine == IoEngine::Sync ? "Sync" : "Async"));
    TempImage disk(64 * 512);
    Harness h(open_block_backend(disk.path(), false, engine, 2), {"real", false, true});
    std::vector<Request> writes, reads;
    for (uint64_t i = 0; i < 10; i++) {
        h.mem.fill(GuestAddress(kData + 0x1000 * i), 1024, static_cast<uint8_t>(0x80 + i));
        writes.push_back(h.request(req::kOut, 2 * i + 1, {R(kData + 0x1000 * i, 1024)}));
    }
    h.run_until_used(10);
    for (uint64_t i = 0; i < 10; i++) {
        h.mem.fill(GuestAddress(kData + 0x20000 + 0x1000 * i), 1536, 0);
        reads.push_back(h.request(req::kIn, 2 * i, {W(kData + 0x20000 + 0x1000 * i, 1536)}));
    }
    h.run_until_used(20);
    for (uint64_t i = 0; i < 10; i++) {
        INFO("request " << i);
        CHECK(h.status(writes[i]) == blk_status::kOk);
        CHECK(h.status(reads[i]) == blk_status::kOk);
        CHECK(h.used_len(writes[i]) == 1);
        CHECK(h.used_len(reads[i]) == 1537);
        // Sector 2i is the image's (or the previous write's second sector), then the write.
        const auto got = h.bytes(kData + 0x20000 + 0x1000 * i, 1536);
        const auto first = i == 0 ? disk.original(0, 512) : std::vector<uint8_t>(512, static_cast<uint8_t>(0x80 + i - 1));
        CHECK(got == concat({first, std::vector<uint8_t>(1024, static_cast<uint8_t>(0x80 + i))}));
        CHECK(disk.read((2 * i + 1) * 512, 1024) == std::vector<uint8_t>(1024, static_cast<uint8_t>(0x80 + i)));
    }
    CHECK(h.irq.errors.empty());
}

}  // namespace unit_block_device_image_test
