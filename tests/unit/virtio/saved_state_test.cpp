// Tests for the snapshot of virtio devices (virtio/saved_state.h): pause, save, restore into a
// fresh device on a copy of guest memory, and the restored device going on exactly as the
// original does; corrupt and truncated states refused with one line, the fresh device left
// reset.
#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <deque>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "devices/irq.h"
#include "memory/guest_memory.h"
#include "tests/unit/temp_dir.h"
#include "tests/unit/virtio/fake_block_backend.h"
#include "tests/unit/virtio/mmio_driver.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/balloon/balloon_device.h"
#include "virtio/block/block_device.h"
#include "virtio/console/console_device.h"
#include "virtio/console/sink.h"
#include "virtio/mmio_transport.h"
#include "virtio/virtio_defs.h"
#include "virtio/vsock/vsock_device.h"
#include "vmm/sys/event_loop.h"
#include "vmm/sys/state_stream.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_saved_state_test {

using embervm::StateError;
using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using embervm::virtio::testing::Buf;
using embervm::virtio::testing::FakeBlockBackend;
using embervm::virtio::testing::RingDriver;

namespace {

constexpr uint64_t kMemBytes = 0x100000;
constexpr uint64_t kRings = 0x80000;  // high, so a smaller memory cannot hold them
constexpr uint16_t kRingSize = 16;
constexpr uint64_t kHeaders = 0x10000;
constexpr uint64_t kData = 0x20000;
constexpr uint64_t kDiskBytes = 64 * 512;

class CountingIrq : public embervm::devices::IrqLine {
public:
    void trigger() override { ++count; }
    std::atomic<int> count{0};
};

// Guest memory with the same bytes as `from` (the memory file a restore maps).
std::unique_ptr<GuestMemory> copy_memory(const GuestMemory& from, uint64_t size) {
    auto to = std::make_unique<GuestMemory>(std::vector<std::pair<GuestAddress, size_t>>{{GuestAddress(0), size}});
    std::vector<uint8_t> bytes(size);
    from.read(GuestAddress(0), bytes);
    to->write(GuestAddress(0), bytes);
    return to;
}

// One side of a snapshot: a virtio device behind virtio-mmio on an event loop of its own, and
// the driver's registers and ring.
struct Side {
    Side(const GuestMemory& m, std::shared_ptr<VirtioDevice> d) : mem(m), dev(std::move(d)) {
        transport = std::make_unique<MmioTransport>(mem, dev, irq, &loop);
    }
    // The device's reset (by the transport) drops its subscriptions on the loop, which must
    // run before the loop goes.
    ~Side() {
        transport.reset();
        run();
    }

    uint32_t r32(uint64_t offset) {
        std::array<uint8_t, 4> b{};
        transport->read(offset, b);
        return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
    }
    void w32(uint64_t offset, uint32_t v) {
        const std::array<uint8_t, 4> b{static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8),
                                       static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 24)};
        transport->write(offset, b);
    }
    // The driver's initialisation with every queue in `queues` set up at kRings + 0x4000 * i.
    void bring_up(uint64_t features, unsigned queues) {
        testing::mmio_accept_features([this](uint64_t offset, uint32_t v) { w32(offset, v); }, features);
        add_driver_rings(queues);
        for (unsigned i = 0; i < queues; i++) {
            const uint64_t base = kRings + 0x4000 * i;
            w32(mmio::kQueueSel, i);
            w32(mmio::kQueueNum, kRingSize);
            w32(mmio::kQueueDescLow, static_cast<uint32_t>(base));
            w32(mmio::kQueueDescHigh, 0);
            w32(mmio::kQueueDriverLow, static_cast<uint32_t>(base + 0x1000));
            w32(mmio::kQueueDriverHigh, 0);
            w32(mmio::kQueueDeviceLow, static_cast<uint32_t>(base + 0x2000));
            w32(mmio::kQueueDeviceHigh, 0);
            w32(mmio::kQueueReady, 1);
        }
        w32(mmio::kStatus, status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk);
    }
    // The driver's side of `queues` rings at kRings + 0x4000 * i (writes nothing yet). A
    // restored side gets them too, and the driver's earlier requests replayed (which writes
    // the bytes its memory copy already has).
    void add_driver_rings(unsigned queues) {
        for (unsigned i = 0; i < queues; i++) {
            shadows.emplace_back(kRingSize);  // RingDriver programs a Queue; the transport's are set by registers
            rings.push_back(std::make_unique<RingDriver>(mem, shadows.back(), kRings + 0x4000 * i, kRingSize));
        }
    }
    void run() {
        io.restart();
        io.poll();
    }
    // Every register a driver reads, and the first 64 bytes of config space.
    std::vector<uint32_t> registers() {
        std::vector<uint32_t> out;
        for (const uint64_t r : {mmio::kMagicValue, mmio::kVersionReg, mmio::kDeviceId, mmio::kVendorIdReg,
                                 mmio::kInterruptStatus, mmio::kStatus, mmio::kConfigGeneration}) {
            out.push_back(r32(r));
        }
        for (uint32_t sel = 0; sel < 3; sel++) {
            w32(mmio::kDeviceFeaturesSel, sel);
            out.push_back(r32(mmio::kDeviceFeatures));
        }
        for (uint32_t q = 0; q < transport->num_queues(); q++) {
            w32(mmio::kQueueSel, q);
            out.push_back(r32(mmio::kQueueNumMax));
            out.push_back(r32(mmio::kQueueReady));
        }
        for (uint64_t off = 0; off < 64; off += 4) out.push_back(r32(mmio::kConfig + off));
        return out;
    }

    const GuestMemory& mem;
    std::shared_ptr<VirtioDevice> dev;
    boost::asio::io_context io;
    embervm::vmm::EventLoop loop{io};
    std::shared_ptr<CountingIrq> irq = std::make_shared<CountingIrq>();
    std::unique_ptr<MmioTransport> transport;
    std::deque<Queue> shadows;
    std::vector<std::unique_ptr<RingDriver>> rings;
};

// Set while the device is made, before Side is built (a member would be initialised after it).
struct BackendHolder {
    FakeBlockBackend* backend = nullptr;
};

struct BlockSide : BackendHolder, Side {
    BlockSide(const GuestMemory& m, uint64_t disk_bytes = kDiskBytes)
        : Side(m, make(disk_bytes, backend)) {}
    static std::shared_ptr<VirtioDevice> make(uint64_t disk_bytes, FakeBlockBackend*& out) {
        auto b = std::make_unique<FakeBlockBackend>(disk_bytes, false);
        out = b.get();
        return std::make_shared<block::BlockDevice>(std::move(b), block::BlockDeviceOptions{"rootfs", false, true});
    }
    ~BlockSide() {
        backend->release_held();
        run();
    }
    // A one-sector write of `seed` bytes at `sector`, made available (not kicked).
    void write_request(uint64_t sector, uint8_t seed) {
        log.emplace_back(sector, seed);
        const unsigned n = requests++;
        const uint64_t hdr = kHeaders + 32ULL * n;
        mem.write_obj(GuestAddress(hdr), block::req::kOut);
        mem.write_obj(GuestAddress(hdr + 4), uint32_t{0});
        mem.write_obj(GuestAddress(hdr + 8), sector);
        const uint64_t data = kData + 512ULL * n;
        std::vector<uint8_t> bytes(512, seed);
        mem.write(GuestAddress(data), bytes);
        rings[0]->add({Buf{hdr, 16, false}, Buf{data, 512, false}, Buf{hdr + 16, 1, true}});
    }
    void kick() { w32(mmio::kQueueNotify, 0); }
    // The driver's state of `original` (its requests so far), after a restore.
    void replay_driver(const BlockSide& original) {
        add_driver_rings(1);
        for (const auto& [sector, seed] : original.log) write_request(sector, seed);
    }

    unsigned requests = 0;
    std::vector<std::pair<uint64_t, uint8_t>> log;
};

}  // namespace

TEST_CASE("virtio-mmio and virtio-blk: a restored device goes on exactly as the original", "[virtio][snapshot]") {
    GuestMemory mem{{{GuestAddress(0), kMemBytes}}};
    BlockSide a(mem);
    a.bring_up(feature::kVersion1 | feature::kRingEventIdx | block::blk_feature::kFlush, 1);
    a.write_request(1, 0x11);
    a.write_request(2, 0x22);
    a.kick();
    a.run();
    REQUIRE(a.rings[0]->used_idx() == 2);
    // A request in flight at the backend when the snapshot starts: pause waits for it and puts
    // it on the used ring.
    a.backend->hold = true;
    a.write_request(3, 0x33);
    a.kick();
    REQUIRE(a.backend->held() == 1);
    const uint64_t seen = a.backend->in_flight_queries();
    std::thread completer([&] {
        a.backend->wait_for_in_flight_query(seen);
        a.backend->release_held();
    });
    a.transport->pause();
    completer.join();
    a.backend->hold = false;
    CHECK(a.rings[0]->used_idx() == 3);
    const std::vector<uint8_t> saved = a.transport->save_state();

    // Paused: a request and its kick are not served.
    a.write_request(4, 0x44);
    a.kick();
    a.run();
    CHECK(a.rings[0]->used_idx() == 3);

    // The restore: a copy of guest memory (with request 4 available), a fresh device.
    auto mem_b = copy_memory(mem, kMemBytes);
    BlockSide b(*mem_b);
    const int irqs_before = b.irq->count.load();
    b.replay_driver(a);
    b.transport->restore_state(saved);
    b.run();
    CHECK(b.transport->is_activated());
    CHECK(b.irq->count.load() > irqs_before);

    // Both serve request 4 (b at its restore, a at its resume) and 5 the same way.
    a.transport->resume();
    a.run();
    for (BlockSide* s : {&a, &b}) {
        INFO((s == &a ? "original" : "restored"));
        CHECK(s->rings[0]->used_idx() == 4);
        s->rings[0]->set_used_event(4);  // EVENT_IDX: interrupt for the next one
        const int irqs = s->irq->count.load();
        s->write_request(5, 0x55);
        s->kick();
        s->run();
        CHECK(s->rings[0]->used_idx() == 5);
        CHECK(s->irq->count.load() > irqs);
        CHECK(s->backend->bytes(5 * 512, 512) == std::vector<uint8_t>(512, 0x55));
        CHECK(s->backend->bytes(4 * 512, 512) == std::vector<uint8_t>(512, 0x44));
    }
    for (uint16_t i = 0; i < 5; i++) CHECK(a.rings[0]->used(i) == b.rings[0]->used(i));
    CHECK(a.registers() == b.registers());
}

TEST_CASE("virtio-mmio: a device that was never activated is saved and restored as it is", "[virtio][snapshot]") {
    GuestMemory mem{{{GuestAddress(0), kMemBytes}}};
    BlockSide a(mem);
    a.w32(mmio::kStatus, status::kAcknowledge | 0);
    a.w32(mmio::kStatus, status::kAcknowledge | status::kDriver);
    a.w32(mmio::kQueueSel, 0);
    a.transport->pause();
    const auto saved = a.transport->save_state();
    BlockSide b(mem);
    b.transport->restore_state(saved);
    CHECK_FALSE(b.transport->is_activated());
    CHECK(b.registers() == a.registers());
    CHECK(b.r32(mmio::kStatus) == (status::kAcknowledge | status::kDriver));
}

namespace {

// A saved state of an activated virtio-blk device with requests done.
std::vector<uint8_t> saved_block_state(GuestMemory& mem) {
    BlockSide a(mem);
    a.bring_up(feature::kVersion1 | feature::kRingEventIdx, 1);
    a.write_request(1, 0x11);
    a.kick();
    a.run();
    a.transport->pause();
    return a.transport->save_state();
}

// The restore into a fresh device failed as it must: one line naming the device, the device
// reset (status 0, not activated) and still answering its registers.
void check_refused(BlockSide& b, const std::string& what) {
    INFO(what);
    CHECK(what.find('\n') == std::string::npos);
    CHECK(what.find("virtio-blk rootfs") != std::string::npos);
    CHECK_FALSE(b.transport->is_activated());
    CHECK(b.r32(mmio::kStatus) == 0);
    CHECK(b.r32(mmio::kMagicValue) == mmio::kMagic);
}

// The message of a restore of `saved` into `b` that must be refused (checked by check_refused).
std::string refusal(BlockSide& b, std::span<const uint8_t> saved) {
    try {
        b.transport->restore_state(saved);
    } catch (const StateError& e) {
        check_refused(b, e.what());
        return e.what();
    }
    FAIL("the saved state was taken");
    return {};
}

}  // namespace

TEST_CASE("virtio-mmio: truncated and corrupt saved states are refused, the fresh device reset", "[virtio][snapshot]") {
    GuestMemory mem{{{GuestAddress(0), kMemBytes}}};
    const std::vector<uint8_t> saved = saved_block_state(mem);
    REQUIRE(saved.size() > 40);

    SECTION("every truncation") {
        for (size_t n = 0; n < saved.size(); n++) {
            BlockSide b(mem);
            INFO("truncated to " << n << " bytes");
            refusal(b, std::span(saved).first(n));
        }
    }
    SECTION("trailing bytes") {
        auto longer = saved;
        longer.push_back(0);
        BlockSide b(mem);
        CHECK_THROWS_AS(b.transport->restore_state(longer), StateError);
        CHECK(b.r32(mmio::kStatus) == 0);
    }
    SECTION("every byte flipped: refused or taken, never out of bounds") {
        size_t refused = 0;
        for (size_t i = 0; i < saved.size(); i++) {
            auto bad = saved;
            bad[i] ^= 0xff;
            BlockSide b(mem);
            try {
                b.transport->restore_state(bad);
            } catch (const StateError& e) {
                check_refused(b, e.what());
                refused++;
            }
        }
        CHECK(refused > saved.size() / 2);
    }
    SECTION("a drive whose image changed size") {
        BlockSide b(mem, kDiskBytes * 2);
        CHECK(refusal(b, saved).find("capacity") != std::string::npos);
    }
    SECTION("rings outside the restored guest memory") {
        GuestMemory small{{{GuestAddress(0), kRings}}};
        BlockSide b(small);
        CHECK(refusal(b, saved).find("queue 0") != std::string::npos);
    }
    SECTION("into another device type") {
        auto balloon = std::make_shared<balloon::BalloonDevice>(balloon::BalloonOptions{});
        Side b(mem, balloon);
        CHECK_THROWS_WITH(b.transport->restore_state(saved), Catch::Contains("device type"));
        CHECK(b.r32(mmio::kStatus) == 0);
    }
    SECTION("into a transport the driver already uses") {
        BlockSide b(mem);
        b.w32(mmio::kStatus, status::kAcknowledge);
        CHECK_THROWS_AS(b.transport->restore_state(saved), StateError);
    }
}

TEST_CASE("virtio-balloon: the target, actual and statistics buffer survive a snapshot", "[virtio][snapshot]") {
    GuestMemory mem{{{GuestAddress(0), kMemBytes}}};
    auto dev_a = std::make_shared<balloon::BalloonDevice>(balloon::BalloonOptions{64, false, 1, false});
    Side a(mem, dev_a);
    a.bring_up(feature::kVersion1 | balloon::balloon_feature::kStatsVq, 3);
    dev_a->set_target_mib(96);
    const uint32_t actual = 1234;
    a.w32(mmio::kConfig + 4, actual);
    // The driver's statistics buffer, which the device holds until it wants statistics.
    a.rings[2]->add({Buf{kData, 64, false}});
    a.w32(mmio::kQueueNotify, 2);
    CHECK(a.rings[2]->used_idx() == 0);
    a.transport->pause();
    CHECK(a.rings[2]->used_idx() == 1);  // handed back by the pause
    const auto saved = a.transport->save_state();

    auto mem_b = copy_memory(mem, kMemBytes);
    auto dev_b = std::make_shared<balloon::BalloonDevice>(balloon::BalloonOptions{64, false, 1, false});
    Side b(*mem_b, dev_b);
    b.transport->restore_state(saved);
    CHECK(dev_b->target_mib() == 96);
    CHECK(dev_b->actual_pages() == actual);
    CHECK(b.registers() == a.registers());
    CHECK(b.transport->is_activated());
    // The driver refills the buffer: both devices hold it (nothing used) and hand it back at the
    // next statistics request.
    b.add_driver_rings(3);
    b.rings[2]->add({Buf{kData, 64, false}});  // the first buffer, replayed (same bytes)
    a.transport->resume();
    for (Side* s : {&a, &b}) {
        s->rings[2]->add({Buf{kData, 64, false}});
        s->w32(mmio::kQueueNotify, 2);
        CHECK(s->rings[2]->used_idx() == 1);
    }
    CHECK(dev_a->request_stats());
    CHECK(dev_b->request_stats());
    CHECK(a.rings[2]->used_idx() == 2);
    CHECK(b.rings[2]->used_idx() == 2);
}

TEST_CASE("virtio-vsock: a restored device tells the guest its connections are gone (transport reset event)",
          "[virtio][snapshot]") {
    embervm::test::TempDir dir;
    GuestMemory mem{{{GuestAddress(0), kMemBytes}}};
    Side a(mem, std::make_shared<vsock::VsockDevice>(3, dir.file("a.sock")));
    a.bring_up(feature::kVersion1, 3);
    a.rings[vsock::kEventQueue]->add({Buf{kData, 8, true}});  // Linux fills the event queue at probe
    a.mem.write_obj<uint32_t>(GuestAddress(kData), 0xeeeeeeee);
    a.w32(mmio::kQueueNotify, vsock::kEventQueue);
    a.run();
    a.transport->pause();
    const auto saved = a.transport->save_state();
    a.transport->resume();
    a.run();
    CHECK(a.rings[vsock::kEventQueue]->used_idx() == 0);  // the original keeps its connections

    auto mem_b = copy_memory(mem, kMemBytes);
    SECTION("restored: the event is in the guest's buffer") {
        Side b(*mem_b, std::make_shared<vsock::VsockDevice>(3, dir.file("b.sock")));
        b.add_driver_rings(3);
        b.transport->restore_state(saved);
        b.run();
        REQUIRE(b.rings[vsock::kEventQueue]->used_idx() == 1);
        CHECK(b.rings[vsock::kEventQueue]->used(0) == std::pair<uint32_t, uint32_t>{0, 4});
        CHECK(mem_b->read_obj<uint32_t>(GuestAddress(kData)) == vsock::kEventTransportReset);
    }
    SECTION("another guest CID is refused") {
        Side b(*mem_b, std::make_shared<vsock::VsockDevice>(4, dir.file("b.sock")));
        CHECK_THROWS_WITH(b.transport->restore_state(saved), Catch::Contains("guest CID"));
        CHECK(b.r32(mmio::kStatus) == 0);
    }
}

namespace {

// Takes at most `room` bytes, then reports EAGAIN; keeps what it took.
class ShortSink : public console::ConsoleSink {
public:
    explicit ShortSink(std::string& out) : out_(out) {}
    ssize_t write(std::span<const uint8_t> bytes) override {
        const size_t n = std::min(bytes.size(), room);
        if (n == 0) return -EAGAIN;
        out_.append(bytes.begin(), bytes.begin() + static_cast<long>(n));
        room -= n;
        return static_cast<ssize_t>(n);
    }
    void when_writable(std::function<void()>) override {}
    std::string name() const override { return "short sink"; }
    size_t room = 0;

private:
    std::string& out_;
};

}  // namespace

TEST_CASE("virtio-console: output cut by a full sink goes on after the restore where it stopped, nothing twice",
          "[virtio][snapshot]") {
    GuestMemory mem{{{GuestAddress(0), kMemBytes}}};
    std::string out_a, out_b;
    auto sink_a = std::make_unique<ShortSink>(out_a);
    ShortSink* sa = sink_a.get();
    sa->room = 5;
    Side a(mem, std::make_shared<console::ConsoleDevice>(std::move(sink_a)));
    a.bring_up(feature::kVersion1, 2);
    const std::string text = "hello, snapshot";
    mem.write(GuestAddress(kData), std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    a.rings[1]->add({Buf{kData, static_cast<uint32_t>(text.size()), false}});
    a.w32(mmio::kQueueNotify, 1);
    CHECK(out_a == "hello");
    a.transport->pause();
    CHECK(a.rings[1]->used_idx() == 0);
    const auto saved = a.transport->save_state();

    auto mem_b = copy_memory(mem, kMemBytes);
    auto sink_b = std::make_unique<ShortSink>(out_b);
    sink_b->room = 1000;
    Side b(*mem_b, std::make_shared<console::ConsoleDevice>(std::move(sink_b)));
    b.add_driver_rings(2);
    b.transport->restore_state(saved);
    b.run();
    CHECK(out_b == ", snapshot");
    CHECK(b.rings[1]->used_idx() == 1);
}

TEST_CASE("snapshot: a device that cannot be saved is refused by name", "[virtio][snapshot]") {
    // DeviceBase's default: a device without the snapshot hooks.
    struct Unsaveable : DeviceBase {
        uint32_t device_type() const override { return device_id::kBlock; }
        uint64_t available_features() const override { return 0; }
        std::vector<uint16_t> queue_max_sizes() const override { return {16}; }
        void read_config(uint64_t, std::span<uint8_t>) const override {}
        void write_config(uint64_t, std::span<const uint8_t>) override {}
        std::string name() const override { return "test device 'x'"; }
        DeviceProgress progress() const override { return {}; }
        nlohmann::json metrics_json() const override { return {}; }
        void log_counters() const override {}
        void on_activate_locked(const Activation&) override {}
        void on_queue_locked(uint16_t) override {}
        void on_reset_locked() override {}
    };
    GuestMemory mem{{{GuestAddress(0), kMemBytes}}};
    Side a(mem, std::make_shared<Unsaveable>());
    CHECK_THROWS_WITH(a.transport->save_state(), "snapshot: test device 'x' cannot be saved");
}

}  // namespace unit_saved_state_test
