// Tests for virtio/net/net_device: features and configuration, transmit (gathering, indirect
// tables, bad chains, backend errors, EVENT_IDX), receive into one buffer (bounced or zero copy)
// or several (MRG_RXBUF), receive back-pressure (no buffers: the frame stays in the backend and
// the backend is watched again once buffers come), drops, read errors, reset; against a fake
// backend that queues inbound frames and records outbound ones. The device is driven as in the
// VMM: activated on an event loop, kicked through its queue eventfds, receiving when the
// backend's fd is readable, with the loop run until it has nothing left to do.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <numeric>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "memory/guest_memory.h"
#include "tests/unit/virtio/fake_rate_limiter_clock.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/net/net_device.h"
#include "vmm/sys/event_loop.h"
#include "vmm/sys/eventfd.h"

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using namespace embervm::virtio::net;
using embervm::virtio::testing::Buf;
using embervm::virtio::testing::FakeInterrupt;
using embervm::virtio::testing::FakeRateLimiterClock;
using embervm::virtio::testing::FakeRateLimiterTimer;
using namespace std::chrono_literals;
using embervm::virtio::testing::RingDriver;

namespace {

constexpr uint64_t kRxRing = 0x10000, kTxRing = 0x20000;
constexpr uint64_t kBufs = 0x100000;  // receive / transmit buffers
constexpr uint64_t kMemSize = 0x400000;
constexpr uint16_t kRingSize = 32;

class FakeNetBackend : public NetBackend {
public:
    // Readable like a TAP: from a frame's arrival until a read finds none waiting.
    int fd() const override { return event.fd(); }
    // Like the kernel's TAP: a frame longer than the buffers is truncated, and its full length
    // is returned.
    ssize_t read_frame(std::span<const iovec> iov) override {
        reads++;
        if (read_error) return read_error;
        if (inbound.empty()) {
            event.consume();
            return -EAGAIN;
        }
        const auto f = inbound.front();
        inbound.pop_front();
        reads_iovecs.push_back(iov.size());
        size_t pos = 0;
        for (const iovec& v : iov) {
            const size_t n = std::min(v.iov_len, f.size() - pos);
            std::memcpy(v.iov_base, f.data() + pos, n);
            pos += n;
        }
        return static_cast<ssize_t>(f.size());
    }
    ssize_t write_frame(std::span<const iovec> iov) override {
        if (write_error) return write_error;
        std::vector<uint8_t> f;
        for (const iovec& v : iov) f.insert(f.end(), static_cast<uint8_t*>(v.iov_base), static_cast<uint8_t*>(v.iov_base) + v.iov_len);
        outbound.push_back(f);
        writes_iovecs.push_back(iov.size());
        return static_cast<ssize_t>(f.size());
    }
    uint64_t supported_offload_features() const override { return offloads; }
    void set_offloads(uint64_t acked) override { set_offloads_calls.push_back(acked); }
    std::string name() const override { return "fake0"; }

    // A frame arrives (header + packet).
    void push(std::vector<uint8_t> frame) {
        inbound.push_back(std::move(frame));
        event.signal();
    }
    // A frame as the TAP delivers it: a 12-byte vnet header (num_buffers left 0) + packet.
    void push_frame(size_t packet_len, uint8_t seed) {
        std::vector<uint8_t> f(kNetHdrSize + packet_len, 0);
        std::iota(f.begin() + kNetHdrSize, f.end(), seed);
        push(std::move(f));
    }

    embervm::vmm::EventFd event;
    std::deque<std::vector<uint8_t>> inbound;
    std::vector<std::vector<uint8_t>> outbound;
    std::vector<size_t> writes_iovecs;
    std::vector<size_t> reads_iovecs;
    std::vector<uint64_t> set_offloads_calls;
    uint64_t offloads = net_feature::kCsum | net_feature::kGuestCsum;
    ssize_t write_error = 0;
    ssize_t read_error = 0;
    int reads = 0;
};

struct Harness {
    boost::asio::io_context io;
    embervm::vmm::EventLoop loop{io};
    GuestMemory mem{{{GuestAddress(0), kMemSize}}};
    std::vector<Queue> queues;
    std::vector<embervm::vmm::EventFd> kicks{2};  // the queues' ioeventfds
    std::unique_ptr<RingDriver> rx, tx;
    FakeInterrupt irq;
    FakeNetBackend* backend;
    std::unique_ptr<NetDevice> dev;

    explicit Harness(bool mrg = false, std::optional<uint16_t> mtu = std::nullopt, uint64_t drop = 0,
                     uint64_t offloads = net_feature::kCsum | net_feature::kGuestCsum,
                     const std::function<void(NetDeviceOptions&)>& more_options = {}) {
        queues.emplace_back(kNetQueueSize);
        queues.emplace_back(kNetQueueSize);
        rx = std::make_unique<RingDriver>(mem, queues[0], kRxRing, kRingSize);
        tx = std::make_unique<RingDriver>(mem, queues[1], kTxRing, kRingSize);
        auto b = std::make_unique<FakeNetBackend>();
        backend = b.get();
        backend->offloads = offloads;
        NetDeviceOptions o;
        o.id = "eth0";
        o.mac = {0x06, 0x00, 0x0a, 0x00, 0x02, 0x0f};
        o.mtu = mtu;
        if (more_options) more_options(o);
        dev = std::make_unique<NetDevice>(std::move(b), o);
        uint64_t acked = (dev->available_features() | feature::kVersion1) & ~drop;
        if (!mrg) acked &= ~net_feature::kMrgRxbuf;
        for (auto& q : queues) {
            q.set_event_idx_enabled((acked & feature::kRingEventIdx) != 0);
            q.set_indirect_enabled((acked & feature::kRingIndirectDesc) != 0);
        }
        activate(acked);
    }
    // What the transport does at DRIVER_OK: the device subscribes to the loop.
    void activate(uint64_t acked) {
        const std::vector<int> fds{kicks[0].fd(), kicks[1].fd()};
        dev->activate(Activation{mem, queues, acked, irq, fds, &loop});
        run();
    }
    // Runs what is ready on the loop (a kick, a readable backend, posted work) until nothing is.
    void run() {
        io.restart();
        io.poll();
    }
    // The driver notifies queue `q` (KVM writes its ioeventfd); the loop runs.
    void kick(uint16_t q) {
        kicks[q].signal();
        run();
    }
    // The backend's fd becomes readable: the device receives what fits the guest's buffers.
    // Returns whether it still watches the backend (false: it waits for receive buffers).
    bool receive() {
        run();
        return backend_watched();
    }
    // Whether the device reads the backend when it is readable: a wake-up with no frame
    // (harmless: the read finds none).
    bool backend_watched() {
        const int before = backend->reads;
        backend->event.signal();
        run();
        return backend->reads > before;
    }
    std::vector<uint8_t> bytes(uint64_t addr, size_t n) const {
        std::vector<uint8_t> v(n);
        mem.read(GuestAddress(addr), v);
        return v;
    }
    uint16_t num_buffers(uint64_t hdr_addr) const { return mem.read_obj<uint16_t>(GuestAddress(hdr_addr + 10)); }
};

std::vector<uint8_t> packet(size_t len, uint8_t seed) {
    std::vector<uint8_t> v(len);
    std::iota(v.begin(), v.end(), seed);
    return v;
}

}  // namespace

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

namespace {

// A Harness whose device has these rate limiters on a fake clock (timers[0]: RX, [1]: TX).
std::unique_ptr<Harness> limited_harness(const RateLimiterConfig& rx, const RateLimiterConfig& tx,
                                         const std::shared_ptr<FakeRateLimiterClock>& clock) {
    return std::make_unique<Harness>(false, std::nullopt, 0, net_feature::kCsum | net_feature::kGuestCsum,
                                     [&](NetDeviceOptions& o) {
                                         o.rx_rate_limiter = rx;
                                         o.tx_rate_limiter = tx;
                                         o.clock = clock;
                                     });
}

}  // namespace

TEST_CASE("net rate limiter: TX frames wait in the queue until the timer", "[virtio][net][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    auto hp = limited_harness({}, {std::nullopt, TokenBucketConfig{1, 0, 1000}}, clock);  // one frame per second
    Harness& h = *hp;
    REQUIRE(clock->timers.size() == 2);
    FakeRateLimiterTimer& timer = *clock->timers[1];
    for (int i = 0; i < 3; i++) h.tx->add({{kBufs + 0x1000ULL * i, kNetHdrSize + 100, false}});
    h.kick(1);
    CHECK(h.backend->outbound.size() == 1);
    CHECK(h.tx->used_idx() == 1);
    CHECK(timer.armed_for == 1s);
    CHECK(h.dev->counters().tx_throttled);
    h.kick(1);  // a kick while throttled sends nothing
    CHECK(h.backend->outbound.size() == 1);
    clock->run_timer(timer);
    h.run();
    CHECK(h.backend->outbound.size() == 2);
    clock->run_timer(timer);
    h.run();
    CHECK(h.backend->outbound.size() == 3);
    CHECK(h.tx->used_idx() == 3);
    const auto c = h.dev->counters();
    CHECK_FALSE(c.tx_throttled);
    CHECK(c.tx_rate_limiter_throttled == 2);
    CHECK(c.tx_frames == 3);
    CHECK(h.dev->metrics_json()["tx_rate_limiter_throttled"] == 2);
    // A run-time update lifts the limit at once.
    clock->advance(1s);
    for (int i = 0; i < 3; i++) h.tx->add({{kBufs + 0x1000ULL * i, kNetHdrSize + 100, false}});
    h.kick(1);
    CHECK(h.backend->outbound.size() == 4);
    h.dev->update_rate_limiters(std::nullopt, RateLimiterConfig{});
    h.run();
    CHECK(h.backend->outbound.size() == 6);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("net rate limiter: RX stops reading the TAP while throttled and resumes on the timer",
          "[virtio][net][rate_limiter]") {
    auto clock = std::make_shared<FakeRateLimiterClock>();
    auto hp = limited_harness({TokenBucketConfig{1000, 0, 1000}, std::nullopt}, {}, clock);  // 1000 bytes per second
    Harness& h = *hp;
    FakeRateLimiterTimer& timer = *clock->timers[0];
    for (int i = 0; i < 6; i++) h.rx->add({{kBufs + 0x1000ULL * i, 1526, true}});
    for (int i = 0; i < 3; i++) h.backend->push_frame(600, static_cast<uint8_t>(i));
    CHECK_FALSE(h.receive());  // two frames (the second into debt), then the watch pauses
    CHECK(h.rx->used_idx() == 2);
    CHECK(h.backend->inbound.size() == 1);  // waits in the TAP
    CHECK(timer.armed_for == 201ms);        // 200 bytes of debt, then one token
    CHECK(h.dev->counters().rx_throttled);
    CHECK_FALSE(h.backend_watched());
    h.kick(0);  // a receive kick does not resume a throttled RX
    CHECK(h.rx->used_idx() == 2);
    clock->run_timer(timer);
    h.run();
    CHECK(h.rx->used_idx() == 3);
    CHECK(h.bytes(kBufs + 0x2000 + kNetHdrSize, 600) == packet(600, 2));
    CHECK(h.backend->inbound.empty());
    // That frame put the bucket in debt again: throttled until the next expiry.
    CHECK(h.dev->counters().rx_throttled);
    CHECK(h.dev->counters().rx_rate_limiter_throttled == 2);
    h.backend->push_frame(100, 9);
    CHECK_FALSE(h.receive());
    CHECK(h.rx->used_idx() == 3);
    clock->advance(10s);  // the bucket refills to full
    timer.fire();
    h.run();
    CHECK(h.rx->used_idx() == 4);
    CHECK(h.backend_watched());  // drained with tokens left: watching the TAP again
    CHECK_FALSE(h.dev->counters().rx_throttled);
    h.backend->push_frame(1400, 1);  // more than the 900 tokens left: into debt, throttled
    h.backend->push_frame(100, 2);
    CHECK_FALSE(h.receive());
    REQUIRE(h.dev->counters().rx_throttled);
    // A reset clears the throttled state and the timer.
    h.dev->reset();
    h.run();
    CHECK_FALSE(timer.armed());
    CHECK_FALSE(h.dev->counters().rx_throttled);
}
