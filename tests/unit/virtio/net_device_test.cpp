// Tests for virtio/net/net_device: features and configuration, transmit (gathering, indirect
// tables, bad chains, backend errors, EVENT_IDX), receive into one buffer (bounced or zero copy)
// or several (MRG_RXBUF), receive back-pressure (no buffers: the frame stays in the backend and
// the backend is watched again once buffers come), drops, read errors, reset; against a fake
// backend that queues inbound frames and records outbound ones. The device is driven as in the
// VMM: activated on an event loop, kicked through its queue eventfds, receiving when the
// backend's fd is readable, with the loop run until it has nothing left to do.

#include "tests/unit/virtio/net_harness.h"

#include <catch2/catch.hpp>

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_net_device_test {

using namespace std::chrono_literals;
using namespace embervm::virtio::net::net_test;

TEST_CASE("net: features and configuration space", "[virtio][net]") {
    Harness h(false, uint16_t{1400});
    const uint64_t f = h.dev->available_features();
    CHECK((f & net_feature::kMac) != 0);
    CHECK((f & net_feature::kStatus) != 0);
    CHECK((f & net_feature::kMrgRxbuf) != 0);
    CHECK((f & net_feature::kMtu) != 0);
    CHECK((f & net_feature::kCsum) != 0);
    CHECK((f & net_feature::kGuestCsum) != 0);
    CHECK((f & net_feature::kGuestTso4) == 0);  // the backend cannot: not offered
    uint8_t cfg[12];
    h.dev->read_config(0, cfg);
    CHECK(std::vector<uint8_t>(cfg, cfg + 6) == std::vector<uint8_t>{0x06, 0x00, 0x0a, 0x00, 0x02, 0x0f});
    uint16_t status, pairs, mtu;
    std::memcpy(&status, cfg + 6, 2);
    std::memcpy(&pairs, cfg + 8, 2);
    std::memcpy(&mtu, cfg + 10, 2);
    CHECK(status == kLinkUp);
    CHECK(pairs == 1);
    CHECK(mtu == 1400);
    // Writes are ignored; offloads were set from the accepted features at activation.
    const uint8_t junk[6] = {1, 2, 3, 4, 5, 6};
    h.dev->write_config(0, junk);
    h.dev->read_config(0, std::span<uint8_t>(cfg, 6));
    CHECK(cfg[0] == 0x06);
    REQUIRE(h.backend->set_offloads_calls.size() == 1);
    CHECK((h.backend->set_offloads_calls[0] & net_feature::kGuestCsum) != 0);

    Harness no_mtu;
    CHECK((no_mtu.dev->available_features() & net_feature::kMtu) == 0);
}

TEST_CASE("net: transmit gathers a chain into one frame", "[virtio][net]") {
    Harness h;
    const auto hdr = std::vector<uint8_t>(kNetHdrSize, 0);
    const auto p = packet(1000, 3);
    h.mem.write(GuestAddress(kBufs), hdr);
    h.mem.write(GuestAddress(kBufs + 0x1000), std::span<const uint8_t>(p).first(10));
    h.mem.write(GuestAddress(kBufs + 0x2000), std::span<const uint8_t>(p).subspan(10));
    h.tx->add({{kBufs, kNetHdrSize, false}, {kBufs + 0x1000, 10, false}, {kBufs + 0x2000, 990, false}});
    h.kick(1);
    REQUIRE(h.backend->outbound.size() == 1);
    std::vector<uint8_t> want = hdr;
    want.insert(want.end(), p.begin(), p.end());
    CHECK(h.backend->outbound[0] == want);
    CHECK(h.backend->writes_iovecs[0] == 3);  // one writev of the guest's buffers
    CHECK(h.tx->used_idx() == 1);
    CHECK(h.tx->used(0).second == 0);
    CHECK(h.irq.used == std::vector<uint16_t>{1});
    const auto c = h.dev->counters();
    CHECK(c.tx_frames == 1);
    CHECK(c.tx_bytes == 1000);

    // The backend refusing a frame drops it; the chain still comes back.
    h.backend->write_error = -ENOBUFS;
    h.tx->add({{kBufs, kNetHdrSize + 64, false}});
    h.kick(1);
    CHECK(h.tx->used_idx() == 2);
    CHECK(h.dev->counters().tx_dropped == 1);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("net: malformed transmit chains put the device into NEEDS_RESET", "[virtio][net]") {
    SECTION("a device-writable descriptor") {
        Harness h;
        h.tx->add({{kBufs, kNetHdrSize, false}, {kBufs + 0x1000, 64, true}});
        h.kick(1);
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.irq.errors[0].find("device-writable") != std::string::npos);
    }
    SECTION("shorter than the header") {
        Harness h;
        h.tx->add({{kBufs, kNetHdrSize - 1, false}});
        h.kick(1);
        REQUIRE(h.irq.errors.size() == 1);
    }
    SECTION("longer than the largest frame") {
        Harness h;
        h.tx->add({{kBufs, static_cast<uint32_t>(kNetHdrSize + kMaxFrameBytes + 1), false}});
        h.kick(1);
        REQUIRE(h.irq.errors.size() == 1);
    }
    SECTION("a buffer outside guest memory") {
        Harness h;
        h.tx->add({{kMemSize - 16, 64, false}});
        h.kick(1);
        REQUIRE(h.irq.errors.size() == 1);
        // Broken: further kicks do nothing until reset.
        h.tx->add({{kBufs, 64, false}});
        h.kick(1);
        CHECK(h.backend->outbound.empty());
        CHECK(h.irq.errors.size() == 1);
    }
    SECTION("a receive buffer that is device-readable") {
        Harness h;
        h.backend->push_frame(60, 1);
        h.rx->add({{kBufs, 2048, false}});
        CHECK_FALSE(h.receive());
        REQUIRE(h.irq.errors.size() == 1);
    }
}

TEST_CASE("net: receive into one big buffer", "[virtio][net]") {
    Harness h;
    h.rx->add({{kBufs, 1526, true}});
    h.rx->add({{kBufs + 0x1000, 100, true}, {kBufs + 0x2000, 1426, true}});
    h.backend->push_frame(1000, 9);
    h.backend->push_frame(300, 77);
    CHECK_FALSE(h.receive());  // both buffers used: wait for more
    REQUIRE(h.rx->used_idx() == 2);
    CHECK(h.rx->used(0).second == kNetHdrSize + 1000);
    CHECK(h.bytes(kBufs + kNetHdrSize, 1000) == packet(1000, 9));
    CHECK(h.num_buffers(kBufs) == 1);
    // The second frame spans the two descriptors of its chain.
    CHECK(h.rx->used(1).second == kNetHdrSize + 300);
    std::vector<uint8_t> got = h.bytes(kBufs + 0x1000 + kNetHdrSize, 100 - kNetHdrSize);
    const auto tail = h.bytes(kBufs + 0x2000, 300 - (100 - kNetHdrSize));
    got.insert(got.end(), tail.begin(), tail.end());
    CHECK(got == packet(300, 77));
    CHECK(h.irq.used == std::vector<uint16_t>{0});
    CHECK(h.dev->counters().rx_frames == 2);
    CHECK(h.dev->counters().rx_bytes == 1300);
}

TEST_CASE("net: receive across several buffers with MRG_RXBUF", "[virtio][net]") {
    Harness h(true);
    for (int i = 0; i < 8; i++) h.rx->add({{kBufs + 0x1000ULL * i, 256, true}});
    h.backend->push_frame(1500, 5);  // 1512 bytes: 6 buffers of 256
    CHECK(h.receive());  // backend drained, buffers left
    REQUIRE(h.rx->used_idx() == 6);
    CHECK(h.num_buffers(kBufs) == 6);
    std::vector<uint8_t> got;
    for (uint16_t i = 0; i < 6; i++) {
        const auto [id, len] = h.rx->used(i);
        CHECK(len == (i < 5 ? 256u : 1512u - 5 * 256));
        const auto part = h.bytes(kBufs + 0x1000ULL * i, len);
        got.insert(got.end(), part.begin(), part.end());
    }
    CHECK(std::vector<uint8_t>(got.begin() + kNetHdrSize, got.end()) == packet(1500, 5));
}

TEST_CASE("net: no receive buffers: the frame waits and RX resumes on the kick", "[virtio][net]") {
    SECTION("without MRG_RXBUF") {
        Harness h;
        h.backend->push_frame(200, 1);
        CHECK_FALSE(h.receive());                 // watching paused
        CHECK(h.backend->inbound.size() == 1);    // not read: nothing dropped
        h.rx->add({{kBufs, 1526, true}});
        h.kick(0);                                // delivered, but no buffer left: still paused
        CHECK(h.rx->used_idx() == 1);
        CHECK_FALSE(h.backend_watched());
        h.rx->add({{kBufs + 0x1000, 1526, true}});
        h.kick(0);                                // buffers to spare: the watch resumes
        CHECK(h.backend_watched());
        CHECK(h.backend->inbound.empty());
        CHECK(h.bytes(kBufs + kNetHdrSize, 200) == packet(200, 1));
        CHECK(h.dev->counters().rx_dropped == 0);
    }
    SECTION("with MRG_RXBUF, buffers running out in the middle of a frame") {
        Harness h(true);
        h.rx->add({{kBufs, 256, true}});
        h.backend->push_frame(600, 2);            // needs 3 buffers of 256
        CHECK_FALSE(h.receive());
        CHECK(h.rx->used_idx() == 0);             // nothing delivered half
        h.rx->add({{kBufs + 0x1000, 256, true}});
        h.kick(0);
        CHECK(h.rx->used_idx() == 0);
        CHECK_FALSE(h.backend_watched());         // still short of buffers
        h.rx->add({{kBufs + 0x2000, 256, true}});
        h.rx->add({{kBufs + 0x3000, 256, true}});
        h.kick(0);
        CHECK(h.rx->used_idx() == 3);
        CHECK(h.num_buffers(kBufs) == 3);
        CHECK(h.backend_watched());
        CHECK(h.dev->counters().rx_dropped == 0);
    }
}

TEST_CASE("net: a frame too big for the buffer is dropped without MRG_RXBUF", "[virtio][net]") {
    Harness h;
    h.rx->add({{kBufs, 128, true}});
    h.backend->push_frame(1000, 1);
    h.backend->push_frame(50, 2);
    CHECK_FALSE(h.receive());  // the one buffer went to the small frame
    CHECK(h.dev->counters().rx_dropped == 1);
    REQUIRE(h.rx->used_idx() == 1);  // the buffer was kept for the small frame
    CHECK(h.bytes(kBufs + kNetHdrSize, 50) == packet(50, 2));
    CHECK(h.irq.errors.empty());
}

TEST_CASE("net: EVENT_IDX suppresses receive interrupts", "[virtio][net]") {
    Harness h;
    for (int i = 0; i < 4; i++) h.rx->add({{kBufs + 0x1000ULL * i, 1526, true}});
    h.rx->set_used_event(2);  // interrupt once the used index passes 2
    h.backend->push_frame(60, 1);
    CHECK(h.receive());
    CHECK(h.irq.used.size() == 1);  // the first signal is always sent
    h.backend->push_frame(60, 2);
    CHECK(h.receive());
    CHECK(h.irq.used.size() == 1);  // used idx 2: not past 2
    h.backend->push_frame(60, 3);
    CHECK(h.receive());
    CHECK(h.irq.used.size() == 2);
}

TEST_CASE("net: before activation and after reset RX does nothing", "[virtio][net]") {
    Harness h;
    h.dev->reset();
    h.backend->push_frame(60, 1);
    CHECK_FALSE(h.receive());
    CHECK(h.backend->inbound.size() == 1);
    CHECK(h.backend->reads == 0);
    h.dev->queue_notify(1);  // the transport's path: ignored
    // Activation again watches the backend: the frame that waited is received.
    h.rx = std::make_unique<RingDriver>(h.mem, h.queues[0], kRxRing + 0x4000, kRingSize);
    h.rx->add({{kBufs, 1526, true}});
    h.activate(h.dev->available_features() | feature::kVersion1);
    CHECK(h.backend->inbound.empty());
    REQUIRE(h.rx->used_idx() == 1);
    CHECK(h.bytes(kBufs + kNetHdrSize, 60) == packet(60, 1));
}

TEST_CASE("net: offloads are offered only when the backend carries them", "[virtio][net]") {
    const uint64_t all = net_feature::kCsum | net_feature::kGuestCsum | net_feature::kGuestTso4 |
                         net_feature::kGuestTso6 | net_feature::kGuestEcn | net_feature::kGuestUfo |
                         net_feature::kHostTso4 | net_feature::kHostTso6 | net_feature::kHostEcn |
                         net_feature::kHostUfo;
    Harness full(false, std::nullopt, 0, all);
    const uint64_t f = full.dev->available_features();
    CHECK((f & all) == all);
    CHECK((f & feature::kRingEventIdx) != 0);
    CHECK((f & feature::kRingIndirectDesc) != 0);
    CHECK((f & feature::kVersion1) == 0);  // the transport adds it
    // The driver's choice reaches the backend.
    REQUIRE(full.backend->set_offloads_calls.size() == 1);
    CHECK((full.backend->set_offloads_calls[0] & all) == all);

    Harness none(false, std::nullopt, 0, 0);
    CHECK((none.dev->available_features() & all) == 0);
    CHECK((none.dev->available_features() & (net_feature::kMac | net_feature::kStatus | net_feature::kMrgRxbuf)) ==
          (net_feature::kMac | net_feature::kStatus | net_feature::kMrgRxbuf));
    // Reads past the 12-byte config space are zeros.
    uint8_t past[4] = {1, 1, 1, 1};
    none.dev->read_config(12, past);
    CHECK(std::vector<uint8_t>(past, past + 4) == std::vector<uint8_t>(4, 0));
}

TEST_CASE("net: transmit through an indirect descriptor table", "[virtio][net]") {
    Harness h;
    const uint64_t table = kBufs + 0x10000;
    const auto p = packet(300, 11);
    std::vector<uint8_t> hdr(kNetHdrSize, 0);
    hdr[0] = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM: passed through untouched
    h.mem.write(GuestAddress(kBufs), hdr);
    h.mem.write(GuestAddress(kBufs + 0x1000), p);
    h.mem.write_obj(GuestAddress(table), Descriptor{kBufs, static_cast<uint32_t>(kNetHdrSize), desc_flags::kNext, 1});
    h.mem.write_obj(GuestAddress(table + 16), Descriptor{kBufs + 0x1000, 300, 0, 0});
    const uint16_t head = h.tx->add({{table, 32, false}});
    // Turn the head into an INDIRECT descriptor (flags at offset 12).
    h.mem.write_obj<uint16_t>(GuestAddress(kTxRing + 16ULL * head + 12), desc_flags::kIndirect);
    h.kick(1);
    REQUIRE(h.irq.errors.empty());
    REQUIRE(h.backend->outbound.size() == 1);
    std::vector<uint8_t> want = hdr;
    want.insert(want.end(), p.begin(), p.end());
    CHECK(h.backend->outbound[0] == want);
    CHECK(h.backend->writes_iovecs[0] == 2);
    CHECK(h.tx->used_idx() == 1);
    CHECK(h.tx->used(0) == std::pair<uint32_t, uint32_t>{head, 0});
}

TEST_CASE("net: transmit errors other than a full backend are counted apart", "[virtio][net]") {
    Harness h;
    h.backend->write_error = -EIO;  // the host interface is down
    h.tx->add({{kBufs, kNetHdrSize + 60, false}});
    h.tx->add({{kBufs, kNetHdrSize + 60, false}});
    h.kick(1);
    CHECK(h.tx->used_idx() == 2);  // both chains returned
    const auto c = h.dev->counters();
    CHECK(c.tx_errors == 2);
    CHECK(c.tx_dropped == 0);
    CHECK(c.tx_frames == 0);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("net: EVENT_IDX on the transmit queue", "[virtio][net]") {
    Harness h;
    const uint64_t avail_event = kTxRing + 0x2000 + 4 + 8 * kRingSize;  // used ring, after the entries
    h.tx->set_used_event(0);
    h.tx->add({{kBufs, kNetHdrSize + 60, false}});
    h.tx->add({{kBufs, kNetHdrSize + 60, false}});
    h.kick(1);
    CHECK(h.backend->outbound.size() == 2);
    // Kicks are asked for again from the next entry on, and the interrupt was wanted (used
    // index passed 0).
    CHECK(h.mem.read_obj<uint16_t>(GuestAddress(avail_event)) == 2);
    CHECK(h.irq.used == std::vector<uint16_t>{1});
    // The driver wants no interrupt before entry 10: the next frame is sent silently.
    h.tx->set_used_event(10);
    h.tx->add({{kBufs, kNetHdrSize + 60, false}});
    h.kick(1);
    CHECK(h.backend->outbound.size() == 3);
    CHECK(h.irq.used.size() == 1);
    CHECK(h.mem.read_obj<uint16_t>(GuestAddress(avail_event)) == 3);
}

TEST_CASE("net: receive straight into a chain that holds any frame", "[virtio][net]") {
    Harness h;
    // The driver's "big packets" buffer: a header page and 17 more pages, as Linux posts them.
    std::vector<Buf> bufs;
    for (uint64_t i = 0; i < 18; i++) bufs.push_back({kBufs + 0x1000 * i, 0x1000, true});
    h.rx->add(bufs);
    std::vector<uint8_t> f(kNetHdrSize + 5000);
    std::iota(f.begin() + kNetHdrSize, f.end(), uint8_t{4});
    f[10] = f[11] = 0xff;  // the TAP leaves num_buffers alone: the device must set it
    h.backend->push(f);
    CHECK_FALSE(h.receive());  // the only buffer is used
    REQUIRE(h.rx->used_idx() == 1);
    CHECK(h.rx->used(0).second == kNetHdrSize + 5000);
    // Read with one iovec per guest buffer: no bounce buffer.
    REQUIRE(h.backend->reads_iovecs.size() == 1);
    CHECK(h.backend->reads_iovecs[0] == 18);
    CHECK(h.num_buffers(kBufs) == 1);
    CHECK(h.bytes(kBufs + kNetHdrSize, 5000) == packet(5000, 4));
    CHECK(h.dev->counters().rx_frames == 1);
    CHECK(h.dev->counters().rx_bytes == 5000);

    // A frame longer than even that chain (the kernel truncated it) is dropped; the buffer stays.
    h.backend->push_frame(18 * 0x1000, 1);
    h.backend->push_frame(100, 2);
    CHECK_FALSE(h.receive());  // no buffer: the frames wait
    CHECK(h.backend->inbound.size() == 2);
    h.rx->add(bufs);
    h.kick(0);
    CHECK_FALSE(h.backend_watched());  // the buffer went to the second frame
    CHECK(h.dev->counters().rx_dropped == 1);
    REQUIRE(h.rx->used_idx() == 2);
    CHECK(h.rx->used(1).second == kNetHdrSize + 100);
    CHECK(h.bytes(kBufs + kNetHdrSize, 100) == packet(100, 2));
}

TEST_CASE("net: receive edge cases", "[virtio][net]") {
    SECTION("a frame larger than the largest frame is dropped with MRG_RXBUF") {
        Harness h(true);
        for (int i = 0; i < 4; i++) h.rx->add({{kBufs + 0x1000ULL * i, 256, true}});
        h.backend->push_frame(kMaxFrameBytes + 1, 1);
        h.backend->push_frame(100, 2);
        CHECK(h.receive());
        CHECK(h.dev->counters().rx_dropped == 1);
        REQUIRE(h.rx->used_idx() == 1);
        CHECK(h.num_buffers(kBufs) == 1);
        CHECK(h.bytes(kBufs + kNetHdrSize, 100) == packet(100, 2));
    }
    SECTION("a runt (no more than a header) is dropped") {
        Harness h;
        h.rx->add({{kBufs, 1526, true}});
        h.backend->push(std::vector<uint8_t>(kNetHdrSize, 0));
        CHECK(h.receive());
        CHECK(h.dev->counters().rx_dropped == 1);
        CHECK(h.rx->used_idx() == 0);
    }
    SECTION("with MRG_RXBUF a first buffer smaller than the header is a driver error") {
        Harness h(true);
        h.rx->add({{kBufs, kNetHdrSize - 1, true}});
        h.backend->push_frame(60, 1);
        CHECK_FALSE(h.receive());
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.irq.errors[0].find("header") != std::string::npos);
        CHECK(h.backend->inbound.size() == 1);  // not read
        CHECK(h.dev->counters().device_errors == 1);
    }
    SECTION("a read error stops RX until the next receive kick") {
        Harness h;
        h.rx->add({{kBufs, 1526, true}});
        h.backend->push_frame(60, 1);
        h.backend->read_error = -EBADFD;
        CHECK_FALSE(h.receive());  // the caller stops watching: no busy loop
        CHECK(h.dev->counters().rx_errors == 1);
        CHECK(h.rx->used_idx() == 0);
        CHECK(h.irq.errors.empty());  // a host problem, not the guest's
        h.backend->read_error = 0;
        h.rx->add({{kBufs + 0x1000, 1526, true}});
        h.kick(0);
        CHECK(h.rx->used_idx() == 1);
        CHECK(h.backend_watched());
    }
    SECTION("a receive kick while RX is not waiting does nothing") {
        Harness h;
        h.backend->push_frame(60, 1);
        h.rx->add({{kBufs, 1526, true}});
        h.dev->queue_notify(0);  // the kick alone, without the loop seeing the backend readable
        CHECK(h.backend->reads == 0);
        CHECK(h.rx->used_idx() == 0);
        h.run();  // the readable backend delivers it
        CHECK(h.rx->used_idx() == 1);
    }
}

TEST_CASE("net: reset while a frame waits for buffers", "[virtio][net]") {
    Harness h(true);
    h.rx->add({{kBufs, 256, true}});
    h.backend->push_frame(600, 1);  // needs 3 buffers: read, then waits inside the device
    h.backend->push_frame(60, 2);
    CHECK_FALSE(h.receive());
    CHECK(h.backend->inbound.size() == 1);
    h.dev->reset();
    CHECK(h.dev->counters().rx_dropped == 1);  // the half-received frame is gone
    CHECK_FALSE(h.receive());            // not active: nothing read
    CHECK(h.backend->inbound.size() == 1);

    // The driver sets the device up again (fresh rings); the TAP is reused.
    for (auto& q : h.queues) q.reset();
    h.rx = std::make_unique<RingDriver>(h.mem, h.queues[0], kRxRing + 0x4000, kRingSize);
    h.tx = std::make_unique<RingDriver>(h.mem, h.queues[1], kTxRing + 0x4000, kRingSize);
    h.rx->add({{kBufs + 0x8000, 256, true}});
    h.rx->add({{kBufs + 0x9000, 256, true}});
    // The backend is watched afresh: the frame that waited is received at once.
    h.activate(h.dev->available_features() | feature::kVersion1);
    CHECK(h.backend->inbound.empty());
    CHECK(h.backend_watched());  // drained, one buffer to spare
    REQUIRE(h.rx->used_idx() == 1);
    CHECK(h.num_buffers(kBufs + 0x8000) == 1);
    CHECK(h.bytes(kBufs + 0x8000 + kNetHdrSize, 60) == packet(60, 2));
    CHECK(h.irq.errors.empty());
}

}  // namespace unit_net_device_test
