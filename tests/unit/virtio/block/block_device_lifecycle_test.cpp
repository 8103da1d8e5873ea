// Tests for virtio/block/block_device: reset, destruction and run-time backend replacement (drive swap).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <array>
#include <atomic>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "devices/irq.h"
#include "tests/unit/virtio/block/block_harness.h"
#include "tests/unit/virtio/temp_image.h"
#include "virtio/mmio_transport.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_block_device_lifecycle_test {

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using namespace embervm::virtio::block;
using namespace embervm::virtio::testing;
using embervm::test::TempImage;

namespace {

class CountingIrqLine : public embervm::devices::IrqLine {
public:
    void trigger() override { ++count; }
    std::atomic<int> count{0};
};

}  // namespace

TEST_CASE("virtio-blk device: reset with requests in flight waits for them, then writes nothing",
          "[virtio][block][block_device]") {
    Harness h;
    h.backend->hold = true;
    h.mem.fill(GuestAddress(kData), 0x3000, 0x11);
    std::vector<Request> reqs;
    for (uint64_t i = 0; i < 3; i++) reqs.push_back(h.request(req::kIn, i, {W(kData + 0x1000 * i, 512)}));
    h.notify();
    REQUIRE(h.backend->held() == 3);
    const size_t irqs = h.irq.used.size();

    // The backend finishes while reset() is already waiting; reset() returns only after that.
    CHECK(op_waits_for_held_requests(*h.backend, [&] { h.dev->reset(); }));
    CHECK(h.backend->in_flight() == 0);
    // Nothing was completed into the old queue: no status, no used element, no interrupt.
    for (const Request& r : reqs) CHECK(h.status(r) == kPoison);
    CHECK(h.used_idx() == 0);
    CHECK(h.irq.used.size() == irqs);
    // Late wake-ups and kicks after reset are harmless.
    h.run();
    h.notify();
    CHECK(h.used_idx() == 0);
    h.dev->reset();  // idempotent
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: reset drops completions the backend has ready but the device has not taken",
          "[virtio][block][block_device]") {
    Harness h;
    h.backend->hold = true;
    const Request r = h.request(req::kIn, 1, {W(kData, 512)});
    h.notify();
    REQUIRE(h.backend->held() == 1);
    h.backend->release_held();  // done "in the background" (as io_uring would), not reaped yet
    h.dev->reset();
    CHECK(h.backend->in_flight() == 0);
    CHECK(h.used_idx() == 0);  // nothing completed into the old queue
    CHECK(h.status(r) == kPoison);
    h.run();  // a late wake-up after reset is harmless
    CHECK(h.used_idx() == 0);
    h.dev->reset();  // idempotent
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: after reset the old guest memory is never touched", "[virtio][block][block_device]") {
    boost::asio::io_context io;
    embervm::vmm::EventLoop loop{io};
    const auto run = [&] {
        io.restart();
        io.poll();
    };
    auto backend = std::make_unique<FakeBlockBackend>(kSectors * 512, false);
    FakeBlockBackend* fake = backend.get();
    BlockDevice dev(std::move(backend), {"gone", false, true});
    FakeInterrupt irq;
    {
        auto mem = std::make_unique<GuestMemory>(std::vector<std::pair<GuestAddress, size_t>>{{GuestAddress(0), kMemSize}});
        Queue q(kQueueSize);
        RingDriver ring(*mem, q, kRings, kRing);
        dev.activate(Activation{*mem, std::span<Queue>(&q, 1), dev.available_features() | feature::kVersion1, irq, {},
                                &loop});
        run();
        fake->hold = true;
        mem->write_obj(GuestAddress(kHeaders), RequestHeaderLayout{req::kIn, 0, 0});
        ring.add({R(kHeaders, 16), W(kData, 512), W(kStatus, 1)});
        dev.queue_notify(0);
        REQUIRE(fake->held() == 1);
        CHECK(op_waits_for_held_requests(*fake, [&] { dev.reset(); }));
        CHECK(ring.used_idx() == 0);
        // The memory and queue go away (munmap: any later access would fault).
    }
    // A stray completion and notification after that must not touch them.
    fake->hold = false;
    fake->release_held();
    run();
    dev.queue_notify(0);
    CHECK(fake->in_flight() == 0);
    CHECK(irq.errors.empty());
}

TEST_CASE("virtio-blk device: destruction waits for requests in flight", "[virtio][block][block_device]") {
    Harness h;
    h.backend->hold = true;
    const Request r = h.request(req::kIn, 0, {W(kData, 512)});
    h.notify();
    REQUIRE(h.backend->held() == 1);
    FakeBlockBackend& fake = *h.backend;
    h.backend = nullptr;  // goes with the device
    CHECK(op_waits_for_held_requests(fake, [&] { h.dev.reset(); }));  // ~BlockDevice
    CHECK(h.status(r) == kPoison);
    CHECK(h.used_idx() == 0);
}

TEST_CASE("virtio-blk device: replace_backend finishes requests in flight, queued ones go to the new backend",
          "[virtio][block][block_device][replace_backend]") {
    Harness h;
    FakeBlockBackend* old_backend = h.backend;
    old_backend->hold = true;
    old_backend->depth = 2;
    h.mem.fill(GuestAddress(kData), 0x4000, 0);
    std::vector<Request> reqs;
    for (uint64_t i = 0; i < 4; i++) reqs.push_back(h.request(req::kIn, i, {W(kData + 0x1000 * i, 512)}));
    h.notify();
    REQUIRE(old_backend->held() == 2);  // in flight; the other two wait in the ring (backend full)
    REQUIRE(h.used_idx() == 0);

    auto next = other_disk(2 * kSectors);
    FakeBlockBackend* new_backend = next.get();
    std::vector<std::vector<uint8_t>> old_sectors, new_sectors;
    for (uint64_t s = 0; s < 4; s++) {
        old_sectors.push_back(old_backend->bytes(s * 512, 512));
        new_sectors.push_back(new_backend->bytes(s * 512, 512));
        REQUIRE(old_sectors[s] != new_sectors[s]);
    }

    // The old backend finishes while replace_backend() waits for it; it returns only after that.
    bool notified = false;
    CHECK(op_waits_for_held_requests(*old_backend, [&] { notified = h.dev->replace_backend(std::move(next)); }));
    h.backend = new_backend;  // the old one is gone
    CHECK(notified);

    REQUIRE(h.used_idx() == 4);
    for (uint16_t i = 0; i < 4; i++) {
        INFO("request " << i);
        CHECK(h.status(reqs[i]) == blk_status::kOk);
        CHECK(h.used(i).first == reqs[i].head);  // the old backend's first, then the new one's
        CHECK(h.used(i).second == 513u);
        CHECK(h.bytes(kData + 0x1000 * i, 512) == (i < 2 ? old_sectors[i] : new_sectors[i]));
    }
    REQUIRE(new_backend->log.size() == 2);
    CHECK(new_backend->log[0].offset == 2 * 512);
    CHECK(new_backend->log[1].offset == 3 * 512);

    // The driver is told about the new capacity.
    CHECK(h.irq.config == 1);
    CHECK(h.dev->capacity_sectors() == 2 * kSectors);
    CHECK(config_capacity(*h.dev) == 2 * kSectors);
    // Sectors past the old end are in range now; the new end is enforced.
    h.mem.fill(GuestAddress(kData + 0x8000), 512, 0);
    const Request grown = h.request(req::kIn, kSectors + 5, {W(kData + 0x8000, 512)});
    const Request past = h.request(req::kIn, 2 * kSectors, {W(kData + 0x9000, 512)});
    h.notify();
    CHECK(h.status(grown) == blk_status::kOk);
    CHECK(h.bytes(kData + 0x8000, 512) == new_backend->bytes((kSectors + 5) * 512, 512));
    CHECK(h.status(past) == blk_status::kIoErr);
    // Completions keep coming through the new backend's eventfd.
    new_backend->hold = true;
    const Request late = h.request(req::kIn, 9, {W(kData + 0xa000, 512)});
    h.notify();
    CHECK(h.status(late) == kPoison);
    h.complete_held();
    CHECK(h.status(late) == blk_status::kOk);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: replace_backend on a smaller disk and on a device that is not activated",
          "[virtio][block][block_device][replace_backend]") {
    Harness h;
    // Shrinking: a sector that was valid is out of range afterwards.
    auto small = other_disk(8);
    FakeBlockBackend* small_backend = small.get();
    CHECK(h.dev->replace_backend(std::move(small)));
    h.backend = small_backend;
    CHECK(h.irq.config == 1);
    CHECK(config_capacity(*h.dev) == 8);
    const Request gone = h.request(req::kIn, 8, {W(kData, 512)});
    const Request last = h.request(req::kIn, 7, {W(kData + 0x1000, 512)});
    h.notify();
    CHECK(h.status(gone) == blk_status::kIoErr);
    CHECK(h.status(last) == blk_status::kOk);
    CHECK(h.bytes(kData + 0x1000, 512) == small_backend->bytes(7 * 512, 512));

    // After a reset there is no driver to tell (the caller asks the transport instead): false,
    // no interrupt, but the capacity is the new one when the driver comes back.
    h.dev->reset();
    auto bigger = other_disk(3 * kSectors);
    FakeBlockBackend* bigger_backend = bigger.get();
    CHECK_FALSE(h.dev->replace_backend(std::move(bigger)));
    h.backend = bigger_backend;
    CHECK(h.irq.config == 1);
    CHECK(config_capacity(*h.dev) == 3 * kSectors);
    h.activate();
    const Request r = h.request(req::kIn, 3 * kSectors - 1, {W(kData + 0x2000, 512)});
    h.notify();
    CHECK(h.status(r) == blk_status::kOk);
    CHECK(h.bytes(kData + 0x2000, 512) == bigger_backend->bytes((3 * kSectors - 1) * 512, 512));
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: replace_backend refuses an image whose read-only flag differs",
          "[virtio][block][block_device][replace_backend]") {
    const bool drive_ro = GENERATE(false, true);
    INFO("read-only drive " << drive_ro);
    Harness h({"blk0", drive_ro, true});
    auto next = other_disk(2 * kSectors, !drive_ro);
    CHECK_THROWS_WITH(h.dev->replace_backend(std::move(next)),
                      Catch::Matchers::Contains(drive_ro ? "the new image is writable but the drive is read-only"
                                                         : "the new image is read-only but the drive is read-write"));
    // Nothing changed: same capacity, no interrupt, the old backend still serves the queue.
    CHECK(h.irq.config == 0);
    CHECK(h.dev->capacity_sectors() == kSectors);
    CHECK(config_capacity(*h.dev) == kSectors);
    const Request r = h.request(req::kIn, 3, {W(kData, 512)});
    h.notify();
    CHECK(h.status(r) == blk_status::kOk);
    CHECK(h.bytes(kData, 512) == h.backend->bytes(3 * 512, 512));
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: replace_backend behind the MMIO transport bumps the config generation and raises "
          "a config-change interrupt",
          "[virtio][block][block_device][replace_backend]") {
    GuestMemory mem{{{GuestAddress(0), kMemSize}}};
    auto irq = std::make_shared<CountingIrqLine>();
    auto dev = std::make_shared<BlockDevice>(std::make_unique<FakeBlockBackend>(kSectors * kSectorSize, false),
                                             BlockDeviceOptions{"cfg", false, true});
    MmioTransport t(mem, dev, irq);
    const auto r32 = [&](uint64_t offset) {
        std::array<uint8_t, 4> b{};
        t.read(offset, b);
        uint32_t v = 0;
        std::memcpy(&v, b.data(), 4);
        return v;
    };
    const auto w32 = [&](uint64_t offset, uint32_t v) {
        std::array<uint8_t, 4> b{};
        std::memcpy(b.data(), &v, 4);
        t.write(offset, b);
    };
    const auto capacity = [&] {
        std::array<uint8_t, 8> b{};
        t.read(mmio::kConfig, b);
        uint64_t v = 0;
        std::memcpy(&v, b.data(), 8);
        return v;
    };
    // Driver bring-up: every offered feature accepted, queue 0 set up, DRIVER_OK.
    w32(mmio::kStatus, status::kAcknowledge);
    w32(mmio::kStatus, status::kAcknowledge | status::kDriver);
    for (uint32_t sel = 0; sel < 2; sel++) {
        w32(mmio::kDeviceFeaturesSel, sel);
        const uint32_t offered = r32(mmio::kDeviceFeatures);
        w32(mmio::kDriverFeaturesSel, sel);
        w32(mmio::kDriverFeatures, offered);
    }
    w32(mmio::kStatus, status::kAcknowledge | status::kDriver | status::kFeaturesOk);
    w32(mmio::kQueueSel, 0);
    w32(mmio::kQueueNum, kRing);
    w32(mmio::kQueueDescLow, static_cast<uint32_t>(kRings));
    w32(mmio::kQueueDriverLow, static_cast<uint32_t>(kRings + 0x1000));
    w32(mmio::kQueueDeviceLow, static_cast<uint32_t>(kRings + 0x2000));
    w32(mmio::kQueueReady, 1);
    w32(mmio::kStatus, status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk);
    REQUIRE(t.is_activated());
    REQUIRE(capacity() == kSectors);
    const uint32_t generation = r32(mmio::kConfigGeneration);
    const int irqs = irq->count.load();
    REQUIRE((r32(mmio::kInterruptStatus) & interrupt::kConfigChange) == 0);

    REQUIRE(dev->replace_backend(other_disk(5 * kSectors)));
    CHECK(r32(mmio::kConfigGeneration) != generation);
    CHECK((r32(mmio::kInterruptStatus) & interrupt::kConfigChange) != 0);
    CHECK(irq->count.load() == irqs + 1);
    CHECK(capacity() == 5 * kSectors);
    CHECK_FALSE(t.needs_reset());
}

TEST_CASE("virtio-blk device: replacing real backends, on another image and on the same image resized",
          "[virtio][block][block_device][replace_backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO((engine == IoEngine::Sync ? "Sync" : "Async"));
    TempImage a(64 * 512), b(128 * 512);
    Harness h(open_block_backend(a.path(), false, engine), {"real", false, true});
    const auto open = [&](const TempImage& d) { return open_block_backend(d.path(), false, engine); };
    CHECK_THROWS_WITH(open(a), Catch::Matchers::Contains("is locked"));  // the device holds the image

    // Writes submitted and not waited for: replace_backend() completes them into the ring.
    for (uint64_t i = 0; i < 8; i++) {
        h.mem.fill(GuestAddress(kData + 0x1000 * i), 1024, static_cast<uint8_t>(0x30 + i));
        h.request(req::kOut, 2 * i, {R(kData + 0x1000 * i, 1024)});
    }
    h.dev->queue_notify(0);
    CHECK(h.dev->replace_backend(open(b)));
    CHECK(h.ring->used_idx() == 8);
    for (uint64_t i = 0; i < 8; i++) {
        CHECK(a.read(2 * i * 512, 1024) == std::vector<uint8_t>(1024, static_cast<uint8_t>(0x30 + i)));
    }
    CHECK(h.irq.config == 1);
    CHECK(h.dev->capacity_sectors() == 128);
    // The old image is closed and unlocked, the new one locked.
    CHECK_NOTHROW(open(a));
    CHECK_THROWS_WITH(open(b), Catch::Matchers::Contains("is locked"));
    // Reads come from the new image, completed through its eventfd.
    const Request r = h.request(req::kIn, 100, {W(kData + 0x10000, 512)});
    h.run_until_used(9);
    CHECK(h.status(r) == blk_status::kOk);
    CHECK(h.bytes(kData + 0x10000, 512) == b.original(100 * 512, 512));

    // The same image after it grew: replace_backend cannot open it (its own lock), reopen can.
    REQUIRE(::truncate(b.path().c_str(), 256 * 512) == 0);
    CHECK(h.dev->reopen_backend([&] { return open(b); }));
    CHECK(h.irq.config == 2);
    CHECK(h.dev->capacity_sectors() == 256);
    CHECK_THROWS_WITH(open(b), Catch::Matchers::Contains("is locked"));
    const Request grown = h.request(req::kIn, 200, {W(kData + 0x11000, 512)});
    h.mem.fill(GuestAddress(kData + 0x11000), 512, 0x77);
    h.run_until_used(10);
    CHECK(h.status(grown) == blk_status::kOk);
    CHECK(h.bytes(kData + 0x11000, 512) == std::vector<uint8_t>(512, 0));  // the new, zero-filled part

    // A reopen that fails (here: a read-only image for a writable drive) keeps the backend and
    // takes the lock back.
    CHECK_THROWS_WITH(h.dev->reopen_backend([&] { return open_block_backend(b.path(), true, engine); }),
                      Catch::Matchers::Contains("the new image is read-only"));
    CHECK_THROWS_WITH(open(b), Catch::Matchers::Contains("is locked"));
    CHECK(h.irq.config == 2);
    CHECK(h.dev->capacity_sectors() == 256);
    const Request still = h.request(req::kIn, 100, {W(kData + 0x12000, 512)});
    h.run_until_used(11);
    CHECK(h.status(still) == blk_status::kOk);
    CHECK(h.bytes(kData + 0x12000, 512) == b.original(100 * 512, 512));
    CHECK(h.irq.errors.empty());
}

}  // namespace unit_block_device_lifecycle_test
