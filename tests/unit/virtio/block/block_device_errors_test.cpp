// Tests for virtio/block/block_device: backend errors, malformed and hostile chains, DEVICE_NEEDS_RESET.
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tests/unit/virtio/block/block_harness.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_block_device_errors_test {

using embervm::memory::GuestAddress;
using namespace embervm::virtio;
using namespace embervm::virtio::block;
using namespace embervm::virtio::testing;

TEST_CASE("virtio-blk device: backend errors complete with IOERR and the full used length",
          "[virtio][block][block_device]") {
    Harness h;
    h.backend->fail_with = -EIO;
    const Request r = h.request(req::kIn, 0, {W(kData, 1024)});
    const Request w = h.request(req::kOut, 0, {R(kData + 0x1000, 512)});
    h.notify();
    CHECK(h.status(r) == blk_status::kIoErr);
    CHECK(h.status(w) == blk_status::kIoErr);
    CHECK(h.used(0).second == 1025);
    CHECK(h.used(1).second == 1);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: malformed chains", "[virtio][block][block_device]") {
    Harness h;
    SECTION("short header: IOERR into the status byte, no device error") {
        const uint32_t len = GENERATE(0u, 1u, 8u, 15u);
        const uint64_t st = h.new_status();
        std::vector<Buf> bufs;
        if (len) bufs.push_back(R(h.header(req::kIn, 0), len));
        bufs.push_back(W(kData, 512));
        bufs.push_back(W(st, 1));
        const uint16_t head = h.ring->add(bufs);
        h.notify();
        CHECK(h.byte(st) == blk_status::kIoErr);
        CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{head, 1});
        CHECK(h.irq.errors.empty());
        CHECK(h.backend->log.empty());
    }
    SECTION("no writable descriptor: device error, nothing used") {
        h.ring->add({R(h.header(req::kIn, 0), 16), R(kData, 512)});
        h.notify();
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.irq.errors[0].find("status") != std::string::npos);
        CHECK(h.used_idx() == 0);
    }
    SECTION("only zero-length writable descriptors: device error") {
        const uint64_t st = h.new_status();
        h.ring->add({R(h.header(req::kIn, 0), 16), W(st, 0)});
        h.notify();
        CHECK(h.irq.errors.size() == 1);
        CHECK(h.used_idx() == 0);
        CHECK(h.byte(st) == kPoison);
    }
    SECTION("the status descriptor is device-readable: device error, data untouched") {
        h.mem.fill(GuestAddress(kData), 513, 0x5a);
        const uint64_t st = h.new_status();
        h.ring->add({R(h.header(req::kIn, 0), 16), W(kData, 512), R(st, 1)});
        h.notify();
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.used_idx() == 0);
        CHECK(h.bytes(kData, 513) == std::vector<uint8_t>(513, 0x5a));
        CHECK(h.byte(st) == kPoison);
        CHECK(h.backend->log.empty());
    }
    SECTION("a writable descriptor before the header: device error") {
        const uint64_t st = h.new_status();
        h.ring->add({W(kData, 512), R(h.header(req::kOut, 0), 16), W(st, 1)});
        h.notify();
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.byte(st) == kPoison);
    }
    SECTION("a buffer outside guest memory: device error") {
        const uint64_t st = h.new_status();
        h.ring->add({R(h.header(req::kIn, 0), 16), W(kMemSize - 100, 512), W(st, 1)});
        h.notify();
        CHECK(h.irq.errors.size() == 1);
        CHECK(h.used_idx() == 0);
        CHECK(h.byte(st) == kPoison);
        CHECK(h.backend->log.empty());
    }
    SECTION("INDIRECT without the feature: device error") {
        Harness n({"n", false, true}, Options{.ack_mask = ~feature::kRingIndirectDesc});
        const Request r = n.request(req::kIn, 0, {W(kData, 512)}, /*indirect=*/true);
        n.notify();
        CHECK(n.irq.errors.size() == 1);
        CHECK(n.status(r) == kPoison);
    }
}

TEST_CASE("virtio-blk device: after a device error the queue is left alone until reset", "[virtio][block][block_device]") {
    Harness h;
    // A good request, then a broken one, then another good one, in one kick.
    const Request good = h.request(req::kGetId, 0, {W(kData, 20)});
    h.ring->add({R(h.header(req::kIn, 0), 16), R(kData + 0x100, 512)});  // no status byte
    const Request after = h.request(req::kIn, 0, {W(kData + 0x1000, 512)});
    h.notify();
    REQUIRE(h.irq.errors.size() == 1);
    CHECK(h.status(good) == blk_status::kOk);  // completed before the error
    CHECK(h.status(after) == kPoison);          // never looked at
    const uint16_t used = h.used_idx();
    CHECK(used == 1);
    // Further kicks and completions do nothing.
    const Request more = h.request(req::kIn, 0, {W(kData + 0x2000, 512)});
    h.notify();
    h.run();
    CHECK(h.status(more) == kPoison);
    CHECK(h.used_idx() == used);
    CHECK(h.irq.errors.size() == 1);
    CHECK(h.backend->log.empty());

    // Reset and a fresh activation: requests work again, and the first kick on an empty
    // queue raises no interrupt left over from before the reset.
    h.dev->reset();
    h.irq.broken = false;  // what the transport does on reset
    h.irq.used.clear();
    h.activate();
    h.notify();
    CHECK(h.irq.used.empty());
    const Request again = h.request(req::kIn, 1, {W(kData + 0x3000, 512)});
    h.notify();
    CHECK(h.status(again) == blk_status::kOk);
    CHECK(h.used_idx() == 1);
    CHECK(h.irq.used.size() == 1);
    CHECK(h.irq.errors.size() == 1);
}

TEST_CASE("virtio-blk device: data buffers in the wrong direction", "[virtio][block][block_device]") {
    Harness h;
    SECTION("IN with a device-readable data buffer: nothing to read into, OK without I/O") {
        h.mem.fill(GuestAddress(kData), 512, 0x61);
        const Request r = h.request(req::kIn, 0, {R(kData, 512)});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
        CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{r.head, 1});
        CHECK(h.bytes(kData, 512) == std::vector<uint8_t>(512, 0x61));
        CHECK(h.backend->log.empty());
    }
    SECTION("OUT with a device-writable data buffer: nothing to write, OK without I/O") {
        h.mem.fill(GuestAddress(kData), 512, 0x62);
        const auto before = h.backend->disk;
        const Request r = h.request(req::kOut, 0, {W(kData, 512)});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
        CHECK(h.used(0).second == 1);
        CHECK(h.bytes(kData, 512) == std::vector<uint8_t>(512, 0x62));
        CHECK(h.backend->disk == before);
        CHECK(h.backend->log.empty());
    }
    CHECK(h.irq.errors.empty());
}

}  // namespace unit_block_device_errors_test
