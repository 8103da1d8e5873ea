// Tests for virtio/console/console_device: features and configuration space, transmit to a sink
// (gathering, indirect tables, output order), throttling (at most kTxBuffersPerPass chains and
// kTxBytesPerPass bytes a pass, other work served in between), a full sink (the device stops
// taking chains and goes on where it stopped once the sink drains), a broken sink (output
// dropped, the guest goes on), receive from the host (split over chains, back-pressure without
// buffers or before activation), malformed chains on both queues (NEEDS_RESET), reset. The
// device is driven as in the VMM: activated on an event loop, kicked through its queue
// eventfds, with the loop run until it has nothing left to do.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "memory/guest_memory.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/console/console_device.h"
#include "vmm/sys/event_loop.h"
#include "vmm/sys/eventfd.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_console_device_test {

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using namespace embervm::virtio::console;
using embervm::virtio::testing::Buf;
using embervm::virtio::testing::FakeInterrupt;
using embervm::virtio::testing::RingDriver;

namespace {

constexpr uint64_t kRxRing = 0x10000, kTxRing = 0x20000;
constexpr uint64_t kBufs = 0x100000;
constexpr uint64_t kMemSize = 0x800000;
constexpr uint16_t kRingSize = 128;

// A sink that takes `room` bytes (unbounded by default), then reports full (-EAGAIN), or
// fails every write with `error`.
class FakeSink : public ConsoleSink {
public:
    ssize_t write(std::span<const uint8_t> bytes) override {
        writes++;
        if (error != 0) return error;
        const size_t n = std::min(bytes.size(), room);
        if (n == 0) return -EAGAIN;
        room -= n;
        out.insert(out.end(), bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(n));
        return static_cast<ssize_t>(n);
    }
    void when_writable(std::function<void()> r) override {
        waits++;
        ready = std::move(r);
    }
    std::string name() const override { return "fake"; }

    // The reader took what waited: `n` more bytes fit, and a waiting device is told.
    void drain(size_t n) {
        room += n;
        if (auto r = std::move(ready)) {
            ready = nullptr;
            r();
        }
    }
    std::string text() const { return std::string(out.begin(), out.end()); }

    std::vector<uint8_t> out;
    size_t room = SIZE_MAX;
    ssize_t error = 0;
    int writes = 0;
    int waits = 0;
    std::function<void()> ready;
};

struct Harness {
    boost::asio::io_context io;
    embervm::vmm::EventLoop loop{io};
    GuestMemory mem{{{GuestAddress(0), kMemSize}}};
    std::vector<Queue> queues;
    std::vector<embervm::vmm::EventFd> kicks{2};
    std::unique_ptr<RingDriver> rx, tx;
    FakeInterrupt irq;
    FakeSink* sink;
    std::unique_ptr<ConsoleDevice> dev;
    int input_ready_calls = 0;

    explicit Harness(bool activate_now = true) {
        queues.emplace_back(kConsoleQueueSize);
        queues.emplace_back(kConsoleQueueSize);
        rings(0);
        auto s = std::make_unique<FakeSink>();
        sink = s.get();
        dev = std::make_unique<ConsoleDevice>(std::move(s));
        dev->set_input_ready_callback([this] { input_ready_calls++; });
        if (activate_now) activate();
    }
    // Fresh rings (after a reset the driver sets the queues up again).
    void rings(uint64_t offset) {
        for (auto& q : queues) q.reset();
        rx = std::make_unique<RingDriver>(mem, queues[0], kRxRing + offset, kRingSize);
        tx = std::make_unique<RingDriver>(mem, queues[1], kTxRing + offset, kRingSize);
        for (auto& q : queues) {
            q.set_event_idx_enabled(true);
            q.set_indirect_enabled(true);
        }
    }
    void activate() {
        const std::vector<int> fds{kicks[0].fd(), kicks[1].fd()};
        dev->activate(Activation{mem, queues, dev->available_features() | feature::kVersion1, irq, fds, &loop});
        run();
    }
    void run() {
        io.restart();
        io.poll();
    }
    void kick(uint16_t q) {
        kicks[q].signal();
        run();
    }
    // A transmit chain of one buffer holding `text` at `addr`.
    void transmit(uint64_t addr, const std::string& text) {
        mem.write(GuestAddress(addr), std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
        tx->add({{addr, static_cast<uint32_t>(text.size()), false}});
    }
    std::string guest_text(uint64_t addr, size_t n) const {
        std::string s(n, '\0');
        mem.read(GuestAddress(addr), std::span(reinterpret_cast<uint8_t*>(s.data()), n));
        return s;
    }
    size_t input(const std::string& text) {
        return dev->enqueue_input(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    }
};

std::string pattern(size_t n, char seed) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; i++) s[i] = static_cast<char>('a' + (seed + i) % 26);
    return s;
}

}  // namespace

TEST_CASE("console: device type, features and configuration space", "[virtio][console]") {
    Harness h(false);
    CHECK(h.dev->device_type() == device_id::kConsole);
    CHECK(h.dev->queue_max_sizes() == std::vector<uint16_t>{kConsoleQueueSize, kConsoleQueueSize});
    const uint64_t f = h.dev->available_features();
    CHECK(f == (feature::kRingEventIdx | feature::kRingIndirectDesc));  // no SIZE, MULTIPORT, EMERG_WRITE
    uint8_t cfg[16];
    std::fill(std::begin(cfg), std::end(cfg), 0xff);
    h.dev->read_config(0, cfg);
    CHECK(std::all_of(std::begin(cfg), std::end(cfg), [](uint8_t b) { return b == 0; }));
    const uint8_t junk[4] = {1, 2, 3, 4};
    h.dev->write_config(8, junk);  // emerg_wr without EMERG_WRITE: ignored
    h.dev->read_config(8, std::span<uint8_t>(cfg, 4));
    CHECK(cfg[0] == 0);
    CHECK(h.dev->metrics_json().contains("tx_throttled"));
}

TEST_CASE("console: the guest's output goes to the sink in order", "[virtio][console]") {
    Harness h;
    h.transmit(kBufs, "hello ");
    // Two buffers in one chain, then an indirect table.
    h.mem.write(GuestAddress(kBufs + 0x1000), std::span(reinterpret_cast<const uint8_t*>("wor"), 3));
    h.mem.write(GuestAddress(kBufs + 0x2000), std::span(reinterpret_cast<const uint8_t*>("ld"), 2));
    h.tx->add({{kBufs + 0x1000, 3, false}, {kBufs + 0x2000, 2, false}});
    h.mem.write(GuestAddress(kBufs + 0x3000), std::span(reinterpret_cast<const uint8_t*>("!\n"), 2));
    h.tx->add_indirect(kBufs + 0x4000, {{kBufs + 0x3000, 1, false}, {kBufs + 0x3001, 1, false}});
    h.kick(kTransmitQueue);
    CHECK(h.sink->text() == "hello world!\n");
    REQUIRE(h.tx->used_idx() == 3);
    for (uint16_t i = 0; i < 3; i++) CHECK(h.tx->used(i).second == 0);
    CHECK(h.irq.used == std::vector<uint16_t>{kTransmitQueue});
    const auto c = h.dev->counters();
    CHECK(c.tx_bytes == 13);
    CHECK(c.tx_buffers == 3);
    CHECK(c.tx_throttled == 0);
    CHECK(h.irq.errors.empty());

    // Output queued before DRIVER_OK goes out at activation.
    Harness early(false);
    early.transmit(kBufs, "early");
    early.activate();
    CHECK(early.sink->text() == "early");
}

TEST_CASE("console: a chatty guest is served in passes of bounded size", "[virtio][console]") {
    SECTION("buffers per pass") {
        Harness h;
        const size_t chains = kTxBuffersPerPass + kTxBuffersPerPass / 2;
        std::string want;
        for (size_t i = 0; i < chains; i++) {
            const std::string line = pattern(100, static_cast<char>(i));
            h.transmit(kBufs + 0x100 * i, line);
            want += line;
        }
        h.kicks[kTransmitQueue].signal();
        h.io.restart();
        // One handler at a time until the first pass ran: it took exactly kTxBuffersPerPass.
        while (h.tx->used_idx() == 0) REQUIRE(h.io.run_one() == 1);
        CHECK(h.tx->used_idx() == kTxBuffersPerPass);
        CHECK(h.sink->out.size() == kTxBuffersPerPass * 100);
        // Work queued meanwhile on the loop runs before the device's next pass.
        size_t seen_at_marker = 0;
        boost::asio::post(h.io, [&] { seen_at_marker = h.sink->out.size(); });
        h.run();
        CHECK(seen_at_marker == kTxBuffersPerPass * 100);
        CHECK(h.tx->used_idx() == chains);
        CHECK(h.sink->text() == want);
        CHECK(h.dev->counters().tx_throttled == 1);
        CHECK(h.irq.errors.empty());
    }
    SECTION("bytes per pass, a chain cut where the budget ran out") {
        Harness h;
        const std::string big = pattern(kTxBytesPerPass * 2 + 123, 7);
        h.transmit(kBufs, big);
        h.transmit(kBufs + 0x40000, "tail");
        h.kicks[kTransmitQueue].signal();
        h.io.restart();
        while (h.sink->out.empty()) REQUIRE(h.io.run_one() == 1);
        CHECK(h.sink->out.size() == kTxBytesPerPass);
        CHECK(h.tx->used_idx() == 0);  // the chain is in hand, not returned yet
        h.run();
        CHECK(h.sink->text() == big + "tail");
        CHECK(h.tx->used_idx() == 2);
        CHECK(h.dev->counters().tx_throttled == 2);
        CHECK(h.dev->counters().tx_bytes == big.size() + 4);
    }
}

TEST_CASE("console: a full sink stops the transmit queue until it drains", "[virtio][console]") {
    Harness h;
    h.sink->room = 10;
    const std::string first = pattern(30, 1);
    h.transmit(kBufs, first);
    h.transmit(kBufs + 0x1000, "second");
    h.kick(kTransmitQueue);
    CHECK(h.sink->out.size() == 10);
    CHECK(h.tx->used_idx() == 0);
    CHECK(h.sink->waits == 1);
    const auto p = h.dev->progress();
    REQUIRE(p.queues.size() == 2);
    CHECK(p.queues[1].next_avail == 1);  // the second chain was not taken
    // Kicks meanwhile take nothing more.
    h.transmit(kBufs + 0x2000, "third");
    h.kick(kTransmitQueue);
    CHECK(h.sink->out.size() == 10);
    CHECK(h.dev->counters().tx_sink_full == 1);
    // Some room: the device goes on where it stopped, and waits again.
    h.sink->drain(5);
    h.run();
    CHECK(h.sink->out.size() == 15);
    CHECK(h.sink->waits == 2);
    h.sink->drain(SIZE_MAX / 2);
    h.run();
    CHECK(h.sink->text() == first + "second" + "third");
    CHECK(h.tx->used_idx() == 3);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("console: a broken sink drops the output, the guest goes on", "[virtio][console]") {
    Harness h;
    h.sink->error = -EPIPE;
    h.transmit(kBufs, "lost");
    h.transmit(kBufs + 0x1000, "lost too");
    h.kick(kTransmitQueue);
    CHECK(h.tx->used_idx() == 2);
    CHECK(h.dev->counters().tx_dropped_bytes == 12);
    CHECK(h.dev->counters().tx_bytes == 0);
    CHECK(h.irq.errors.empty());
    h.sink->error = 0;
    h.transmit(kBufs + 0x2000, "back");
    h.kick(kTransmitQueue);
    CHECK(h.sink->text() == "back");
}

TEST_CASE("console: host input fills the guest's receive buffers", "[virtio][console]") {
    Harness h;
    h.rx->add({{kBufs, 8, true}});
    h.rx->add({{kBufs + 0x1000, 2, true}, {kBufs + 0x2000, 6, true}});
    CHECK(h.input("hello world!") == 12);
    REQUIRE(h.rx->used_idx() == 2);
    CHECK(h.rx->used(0).second == 8);
    CHECK(h.rx->used(1).second == 4);
    CHECK(h.guest_text(kBufs, 8) == "hello wo");
    CHECK(h.guest_text(kBufs + 0x1000, 2) == "rl");
    CHECK(h.guest_text(kBufs + 0x2000, 2) == "d!");
    CHECK(h.irq.used == std::vector<uint16_t>{kReceiveQueue});
    const auto c = h.dev->counters();
    CHECK(c.rx_bytes == 12);
    CHECK(c.rx_buffers == 2);
    CHECK(h.input_ready_calls == 0);
}

TEST_CASE("console: input waits for receive buffers without polling", "[virtio][console]") {
    SECTION("the driver adds buffers") {
        Harness h;
        h.rx->add({{kBufs, 4, true}});
        CHECK(h.input("abcdefgh") == 4);  // one buffer: the rest is turned away
        CHECK(h.dev->counters().rx_waits == 1);
        CHECK(h.input_ready_calls == 0);
        h.kick(kReceiveQueue);  // a kick without new buffers: still nothing
        CHECK(h.input_ready_calls == 1);  // (the callback only says "try again")
        CHECK(h.input("efgh") == 0);
        h.rx->add({{kBufs + 0x1000, 16, true}});
        h.kick(kReceiveQueue);
        CHECK(h.input_ready_calls == 2);
        CHECK(h.input("efgh") == 4);
        CHECK(h.guest_text(kBufs + 0x1000, 4) == "efgh");
        h.kick(kReceiveQueue);  // nothing was turned away since: no call
        CHECK(h.input_ready_calls == 2);
    }
    SECTION("input before the driver activated the device") {
        Harness h(false);
        CHECK(h.input("early") == 0);
        h.rx->add({{kBufs, 16, true}});
        h.activate();
        CHECK(h.input_ready_calls == 1);
        CHECK(h.input("early") == 5);
        CHECK(h.guest_text(kBufs, 5) == "early");
    }
}

TEST_CASE("console: malformed chains put the device into NEEDS_RESET", "[virtio][console]") {
    SECTION("a device-writable descriptor on the transmit queue") {
        Harness h;
        h.tx->add({{kBufs, 4, false}, {kBufs + 0x1000, 4, true}});
        h.kick(kTransmitQueue);
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.irq.errors[0].find("device-writable") != std::string::npos);
        CHECK(h.sink->writes == 0);
        // Broken: kicks and input do nothing until reset.
        h.transmit(kBufs + 0x2000, "x");
        h.kick(kTransmitQueue);
        CHECK(h.sink->writes == 0);
        h.rx->add({{kBufs + 0x3000, 4, true}});
        CHECK(h.input("ab") == 0);
        CHECK(h.dev->device_errors() == 1);
    }
    SECTION("a device-readable descriptor on the receive queue") {
        Harness h;
        h.rx->add({{kBufs, 4, false}, {kBufs + 0x1000, 4, true}});
        CHECK(h.input("ab") == 0);
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.irq.errors[0].find("device-readable") != std::string::npos);
    }
    SECTION("an empty receive buffer") {
        Harness h;
        h.rx->add({{kBufs, 0, true}});
        CHECK(h.input("ab") == 0);
        REQUIRE(h.irq.errors.size() == 1);
    }
    SECTION("a receive buffer outside guest memory") {
        Harness h;
        h.rx->add({{kMemSize - 2, 4, true}});
        CHECK(h.input("ab") == 0);
        REQUIRE(h.irq.errors.size() == 1);
    }
    SECTION("a transmit head index beyond the queue") {
        Harness h;
        h.mem.write_obj<uint16_t>(GuestAddress(kTxRing + 0x1000 + 4), kRingSize + 5);
        h.mem.write_obj<uint16_t>(GuestAddress(kTxRing + 0x1000 + 2), 1);
        h.kick(kTransmitQueue);
        REQUIRE(h.irq.errors.size() == 1);
    }
    SECTION("a transmit buffer outside guest memory") {
        Harness h;
        h.tx->add({{kMemSize - 2, 4, false}});
        h.kick(kTransmitQueue);
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.sink->writes == 0);
    }
}

TEST_CASE("console: reset drops the chain in hand; the device works again afterwards", "[virtio][console]") {
    Harness h;
    h.sink->room = 3;
    h.transmit(kBufs, "abcdef");
    h.kick(kTransmitQueue);
    CHECK(h.sink->text() == "abc");
    h.dev->reset();
    h.irq.broken = false;
    // The sink drains after the reset: its wake-up finds no activation.
    h.sink->drain(SIZE_MAX / 2);
    h.run();
    CHECK(h.sink->text() == "abc");
    h.rings(0x8000);
    h.transmit(kBufs + 0x1000, "new");
    h.rx->add({{kBufs + 0x2000, 8, true}});
    h.activate();
    CHECK(h.sink->text() == "abcnew");
    CHECK(h.tx->used_idx() == 1);
    CHECK(h.input("in") == 2);
    CHECK(h.guest_text(kBufs + 0x2000, 2) == "in");
    CHECK(h.irq.errors.empty());
}

}  // namespace unit_console_device_test
