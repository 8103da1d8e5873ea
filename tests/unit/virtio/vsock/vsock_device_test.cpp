// Tests for virtio/vsock/vsock_device: the device driven as in the VMM (activated on an event
// loop, kicked through its queue eventfds) by a test driver in fake guest memory, against real
// Unix sockets on the host side: handshakes both ways, data both ways, credit (the device never
// sends beyond the guest's buf_alloc and resets a guest that sends beyond its own), RST and
// SHUTDOWN from either side, malformed packets, 100 connections at once, the connection limit,
// the CONNECT line's bounds and timeout, a device reset with open connections.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "memory/guest_memory.h"
#include "tests/unit/temp_dir.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/vsock/vsock_device.h"
#include "vmm/sys/error.h"
#include "vmm/sys/event_loop.h"
#include "vmm/sys/eventfd.h"
#include "vmm/sys/fd.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_vsock_device_test {

using embervm::FileDescriptor;
using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using namespace embervm::virtio::vsock;
using embervm::virtio::testing::FakeInterrupt;
using embervm::virtio::testing::RingDriver;

namespace {

constexpr uint64_t kCid = 42;
constexpr uint64_t kRxRing = 0x10000, kTxRing = 0x20000, kEvRing = 0x30000;
constexpr uint64_t kRxBufs = 0x100000;  // 128 heads x 0x1200
constexpr uint64_t kTxBufs = 0x200000;  // 4 slots x 0x20000
constexpr uint64_t kMemSize = 0x400000;
constexpr uint16_t kRingSize = 128;
constexpr uint32_t kRxData = 4096;
constexpr uint32_t kRxChains = 32;

struct Packet {
    PacketHeader h;
    std::string data;
};

FileDescriptor unix_socket() {
    FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd);
    return fd;
}

sockaddr_un address(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.data(), path.size());
    return a;
}

FileDescriptor listen_on(const std::string& path) {
    FileDescriptor fd = unix_socket();
    const sockaddr_un a = address(path);
    REQUIRE(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof(a)) == 0);
    REQUIRE(::listen(fd.get(), 256) == 0);
    return fd;
}

FileDescriptor connect_to(const std::string& path) {
    FileDescriptor fd = unix_socket();
    const sockaddr_un a = address(path);
    REQUIRE(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof(a)) == 0);
    return fd;
}

void write_str(int fd, const std::string& s) { REQUIRE(::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size())); }

// Reads what is there without waiting ("" at EOF or when nothing is there).
std::string read_now(int fd, size_t max = 1 << 20) {
    std::string s(max, '\0');
    const ssize_t n = ::recv(fd, s.data(), max, MSG_DONTWAIT);
    s.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return s;
}

// Closed by the device: EOF, or ECONNRESET when it closed with our bytes unread.
bool at_eof(int fd) {
    char c;
    const ssize_t n = ::recv(fd, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

std::string pattern(size_t n, unsigned seed) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; i++) s[i] = static_cast<char>((i * 7 + seed * 13) % 251);
    return s;
}

std::string all_data(const std::vector<Packet>& ps, uint32_t guest_port) {
    std::string s;
    for (const auto& p : ps) {
        if (p.h.op == op::kRw && p.h.dst_port == guest_port) s += p.data;
    }
    return s;
}

const Packet* find_op(const std::vector<Packet>& ps, uint16_t o, uint32_t guest_port) {
    for (const auto& p : ps) {
        if (p.h.op == o && p.h.dst_port == guest_port) return &p;
    }
    return nullptr;
}

struct Harness {
    embervm::test::TempDir dir;
    std::string uds;
    boost::asio::io_context io;
    embervm::vmm::EventLoop loop{io};
    GuestMemory mem{{{GuestAddress(0), kMemSize}}};
    std::vector<Queue> queues;
    std::vector<embervm::vmm::EventFd> kicks{3};
    std::unique_ptr<RingDriver> rx, tx, ev;
    FakeInterrupt irq;
    std::unique_ptr<VsockDevice> dev;
    uint16_t rx_seen = 0;
    uint32_t rx_posted = 0;
    unsigned tx_slot = 0;

    uint32_t rx_chains;

    explicit Harness(Limits limits = {}, uint32_t rx_chains_ = kRxChains) : uds(dir.file("v.sock")), rx_chains(rx_chains_) {
        for (int i = 0; i < 3; i++) queues.emplace_back(kVsockQueueSize);
        dev = std::make_unique<VsockDevice>(kCid, uds, limits);
        activate();
    }
    void activate() {
        for (auto& q : queues) q.reset();
        rx = std::make_unique<RingDriver>(mem, queues[0], kRxRing, kRingSize);
        tx = std::make_unique<RingDriver>(mem, queues[1], kTxRing, kRingSize);
        ev = std::make_unique<RingDriver>(mem, queues[2], kEvRing, kRingSize);
        for (auto& q : queues) q.set_event_idx_enabled(true);
        rx_seen = 0;
        rx_posted = 0;
        for (uint32_t i = 0; i < rx_chains; i++) post_rx();
        const std::vector<int> fds{kicks[0].fd(), kicks[1].fd(), kicks[2].fd()};
        dev->activate(Activation{mem, queues, dev->available_features() | feature::kVersion1, irq, fds, &loop});
        run();
    }
    // A receive chain as Linux's driver makes it: a header buffer and a data buffer.
    void post_rx() {
        // RingDriver takes descriptors in order from 0, two per chain: the head is known.
        const auto head = static_cast<uint16_t>((2 * rx_posted++) % kRingSize);
        const uint64_t base = kRxBufs + 0x1200ULL * head;
        REQUIRE(rx->add({{base, sizeof(PacketHeader), true}, {base + 0x100, kRxData, true}}) == head);
    }
    void run() {
        for (int i = 0; i < 20; i++) {
            io.restart();
            if (io.poll() == 0 && i > 2) break;
        }
    }
    void send(PacketHeader h, const std::string& payload = "") {
        h.src_cid = h.src_cid ? h.src_cid : kCid;
        h.dst_cid = h.dst_cid ? h.dst_cid : kHostCid;
        h.type = h.type ? h.type : socket_type::kStream;
        const uint64_t slot = kTxBufs + 0x20000ULL * (tx_slot++ % 4);
        mem.write_obj(GuestAddress(slot), h);
        if (payload.empty()) {
            tx->add({{slot, sizeof(h), false}});
        } else {
            mem.write(GuestAddress(slot + 0x100), std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()));
            tx->add({{slot, sizeof(h), false}, {slot + 0x100, static_cast<uint32_t>(payload.size()), false}});
        }
        kicks[kTxQueue].signal();
        run();
    }
    PacketHeader hdr(uint16_t o, uint32_t guest_port, uint32_t host_port, uint32_t buf_alloc = 1 << 20, uint32_t fwd = 0) {
        PacketHeader h;
        h.op = o;
        h.src_port = guest_port;
        h.dst_port = host_port;
        h.buf_alloc = buf_alloc;
        h.fwd_cnt = fwd;
        return h;
    }
    // The packets the device put in receive buffers since the last call; their buffers are
    // given back to the device.
    std::vector<Packet> receive() {
        std::vector<Packet> out;
        for (;;) {
            run();
            if (rx_seen == rx->used_idx()) break;
            while (rx_seen != rx->used_idx()) {
            const auto [head, len] = rx->used(rx_seen++);
            const uint64_t base = kRxBufs + 0x1200ULL * head;
            Packet p;
            p.h = mem.read_obj<PacketHeader>(GuestAddress(base));
            REQUIRE(len == sizeof(PacketHeader) + p.h.len);
            p.data.resize(p.h.len);
            mem.read(GuestAddress(base + 0x100), std::span(reinterpret_cast<uint8_t*>(p.data.data()), p.h.len));
            out.push_back(p);
            post_rx();
            }
            kicks[kRxQueue].signal();
        }
        return out;
    }
};

}  // namespace

TEST_CASE("vsock: device type, features, queues and the guest CID in the configuration space", "[virtio][vsock]") {
    Harness h;
    CHECK(h.dev->device_type() == device_id::kVsock);
    CHECK(h.dev->queue_max_sizes().size() == 3);
    CHECK(h.dev->available_features() == (feature::kRingEventIdx | feature::kRingIndirectDesc));
    uint8_t cfg[12];
    std::memset(cfg, 0xff, sizeof(cfg));
    h.dev->read_config(0, cfg);
    CHECK(cfg[0] == kCid);
    for (int i = 1; i < 12; i++) CHECK(cfg[i] == 0);
    const uint8_t junk[8] = {9, 9, 9, 9, 9, 9, 9, 9};
    h.dev->write_config(0, junk);  // read-only
    h.dev->read_config(0, std::span<uint8_t>(cfg, 8));
    CHECK(cfg[0] == kCid);
    const auto m = h.dev->metrics_json();
    for (const char* k : {"connections_open", "rx_packets", "tx_bytes", "rst_sent", "rst_received", "bad_packets"}) {
        CHECK(m.contains(k));
    }
    struct stat st {};
    CHECK(::stat(h.uds.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
}

TEST_CASE("vsock: uds_path and guest_cid are checked", "[virtio][vsock]") {
    embervm::test::TempDir dir;
    CHECK_THROWS_WITH(VsockDevice(2, dir.file("a")), Catch::Contains("guest_cid 2"));
    const std::string file = dir.write("plain", "x");
    CHECK_THROWS_WITH(VsockDevice(3, file), Catch::Contains("not a socket"));
    // A live socket is refused, a stale one replaced.
    const std::string live = dir.file("live");
    FileDescriptor l = listen_on(live);
    CHECK_THROWS_WITH(VsockDevice(3, live), Catch::Contains("another process"));
    l.reset();
    CHECK_NOTHROW(VsockDevice(3, live));
    CHECK_THROWS_WITH(VsockDevice(3, dir.file(std::string(100, 'x'))), Catch::Contains("longer than"));
}

TEST_CASE("vsock: a guest connection reaches uds_path_PORT, data goes both ways, RST from the guest", "[virtio][vsock]") {
    Harness h;
    FileDescriptor server = listen_on(h.uds + "_52");
    h.send(h.hdr(op::kRequest, 1000, 52));
    auto ps = h.receive();
    REQUIRE(ps.size() == 1);
    CHECK(ps[0].h.op == op::kResponse);
    CHECK(ps[0].h.src_cid == kHostCid);
    CHECK(ps[0].h.dst_cid == kCid);
    CHECK(ps[0].h.src_port == 52);
    CHECK(ps[0].h.dst_port == 1000);
    CHECK(ps[0].h.buf_alloc == kConnectionBuffer);
    FileDescriptor peer(::accept(server.get(), nullptr, nullptr));
    REQUIRE(peer);

    const std::string up = pattern(3000, 1);
    auto rw = h.hdr(op::kRw, 1000, 52);
    rw.len = static_cast<uint32_t>(up.size());
    h.send(rw, up);
    CHECK(read_now(peer.get()) == up);

    const std::string down = pattern(10000, 2);  // more than one receive buffer holds
    write_str(peer.get(), down);
    ps = h.receive();
    CHECK(all_data(ps, 1000) == down);
    for (const auto& p : ps) CHECK(p.h.len <= kRxData);
    const auto c = h.dev->counters();
    CHECK(c.guest_connections == 1);
    CHECK(c.tx_bytes == up.size());
    CHECK(c.rx_bytes == down.size());
    CHECK(c.connections_open == 1);

    h.send(h.hdr(op::kRst, 1000, 52));
    CHECK(at_eof(peer.get()));
    CHECK(h.dev->counters().connections_open == 0);
    CHECK(h.dev->counters().rst_received == 1);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("vsock: a guest connection to a port nobody serves gets RST", "[virtio][vsock]") {
    Harness h;
    h.send(h.hdr(op::kRequest, 1000, 53));
    auto ps = h.receive();
    REQUIRE(ps.size() == 1);
    CHECK(ps[0].h.op == op::kRst);
    CHECK(ps[0].h.src_port == 53);
    CHECK(ps[0].h.dst_port == 1000);
    CHECK(h.dev->counters().connect_failures == 1);
    CHECK(h.dev->counters().connections_open == 0);
}

TEST_CASE("vsock: a host connection with CONNECT reaches the guest's port; OK, data, shutdown both ways", "[virtio][vsock]") {
    Harness h;
    FileDescriptor client = connect_to(h.uds);
    write_str(client.get(), "CONNECT 80\nearly");  // data after the line belongs to the connection
    auto ps = h.receive();
    REQUIRE(ps.size() == 1);
    CHECK(ps[0].h.op == op::kRequest);
    CHECK(ps[0].h.dst_port == 80);
    const uint32_t host_port = ps[0].h.src_port;
    CHECK(host_port >= (1U << 30));
    CHECK(read_now(client.get()).empty());  // no OK before the guest answers

    h.send(h.hdr(op::kResponse, 80, host_port));
    CHECK(read_now(client.get()) == "OK " + std::to_string(host_port) + "\n");
    ps = h.receive();
    CHECK(all_data(ps, 80) == "early");
    CHECK(h.dev->counters().host_connections == 1);

    const std::string up = pattern(5000, 3);
    auto rw = h.hdr(op::kRw, 80, host_port);
    rw.len = static_cast<uint32_t>(up.size());
    h.send(rw, up);
    CHECK(read_now(client.get()) == up);

    // The host closes its sending side: the guest gets SHUTDOWN(SEND) and may still send.
    ::shutdown(client.get(), SHUT_WR);
    ps = h.receive();
    const Packet* sd = find_op(ps, op::kShutdown, 80);
    REQUIRE(sd != nullptr);
    CHECK(sd->h.flags == shutdown_flag::kSend);
    rw.len = 2;
    h.send(rw, "hi");
    CHECK(read_now(client.get()) == "hi");
    // The guest shuts both directions: RST, the host sees EOF.
    auto shut = h.hdr(op::kShutdown, 80, host_port);
    shut.flags = shutdown_flag::kRcv | shutdown_flag::kSend;
    h.send(shut);
    ps = h.receive();
    REQUIRE(find_op(ps, op::kRst, 80) != nullptr);
    CHECK(at_eof(client.get()));
    CHECK(h.dev->counters().connections_open == 0);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("vsock: the guest refuses a host connection, a bad or late CONNECT line closes it", "[virtio][vsock]") {
    Limits limits;
    limits.connect_timeout = std::chrono::milliseconds(100);
    Harness h(limits);
    SECTION("guest RST") {
        FileDescriptor client = connect_to(h.uds);
        write_str(client.get(), "CONNECT 81\n");
        auto ps = h.receive();
        REQUIRE(ps.size() == 1);
        h.send(h.hdr(op::kRst, 81, ps[0].h.src_port));
        CHECK(at_eof(client.get()));
    }
    SECTION("not a CONNECT line") {
        FileDescriptor client = connect_to(h.uds);
        write_str(client.get(), "CONNECT x81\n");
        h.run();
        CHECK(at_eof(client.get()));
        CHECK(h.receive().empty());
    }
    SECTION("too long") {
        FileDescriptor client = connect_to(h.uds);
        write_str(client.get(), "CONNECT " + std::string(40, '1'));  // no newline ever
        h.run();
        CHECK(at_eof(client.get()));
        CHECK(h.dev->counters().connect_failures == 1);
    }
    SECTION("never completed, or never answered by the guest") {
        FileDescriptor silent = connect_to(h.uds);
        write_str(silent.get(), "CONN");
        FileDescriptor unanswered = connect_to(h.uds);
        write_str(unanswered.get(), "CONNECT 82\n");
        auto ps = h.receive();
        REQUIRE(ps.size() == 1);
        h.run();
        CHECK_FALSE(at_eof(silent.get()));
        h.io.restart();
        h.io.run_for(std::chrono::milliseconds(600));
        CHECK(at_eof(silent.get()));
        CHECK(at_eof(unanswered.get()));
        ps = h.receive();
        REQUIRE(find_op(ps, op::kRst, 82) != nullptr);
        CHECK(h.dev->counters().connect_failures == 2);
        CHECK(h.dev->counters().connections_open == 0);
    }
}

TEST_CASE("vsock: credit: the device sends no more than the guest's buf_alloc and asks for more", "[virtio][vsock]") {
    Harness h;
    FileDescriptor server = listen_on(h.uds + "_60");
    h.send(h.hdr(op::kRequest, 2000, 60, /*buf_alloc=*/6000));
    REQUIRE(h.receive().size() == 1);
    FileDescriptor peer(::accept(server.get(), nullptr, nullptr));
    const std::string down = pattern(20000, 4);
    write_str(peer.get(), down);
    auto ps = h.receive();
    std::string got = all_data(ps, 2000);
    CHECK(got.size() == 6000);
    CHECK(find_op(ps, op::kCreditRequest, 2000) != nullptr);
    CHECK(h.dev->counters().credit_requests_sent == 1);
    // Nothing more until the guest frees its buffer.
    CHECK(h.receive().empty());
    uint32_t fwd = 0;
    while (got.size() < down.size()) {
        fwd = static_cast<uint32_t>(got.size());
        h.send(h.hdr(op::kCreditUpdate, 2000, 60, 6000, fwd));
        const std::string more = all_data(h.receive(), 2000);
        REQUIRE(!more.empty());
        CHECK(got.size() + more.size() - fwd <= 6000);
        got += more;
    }
    CHECK(got == down);
}

TEST_CASE("vsock: credit: guest data the host does not take waits within the credit; beyond it, RST", "[virtio][vsock]") {
    Harness h;
    FileDescriptor server = listen_on(h.uds + "_61");
    h.send(h.hdr(op::kRequest, 2001, 61));
    REQUIRE(h.receive().size() == 1);
    FileDescriptor peer(::accept(server.get(), nullptr, nullptr));
    // A small receive buffer on the host, which does not read: the device's buffer fills.
    const int small = 4096;
    ::setsockopt(peer.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    std::string sent;
    auto rw = h.hdr(op::kRw, 2001, 61);
    // Exactly the credit, 256 KiB in 64 KiB packets: no RST.
    for (unsigned i = 0; i < kConnectionBuffer / kMaxPacketPayload; i++) {
        const std::string chunk = pattern(kMaxPacketPayload, i);
        rw.len = kMaxPacketPayload;
        h.send(rw, chunk);
        sent += chunk;
    }
    auto ps = h.receive();
    CHECK(find_op(ps, op::kRst, 2001) == nullptr);
    // The host reads: the device writes the rest and gives the credit back.
    std::string got;
    uint32_t last_fwd = 0;
    for (int i = 0; i < 1000 && got.size() < sent.size(); i++) {
        got += read_now(peer.get());
        for (const auto& p : h.receive()) {
            if (p.h.dst_port == 2001) last_fwd = p.h.fwd_cnt;
        }
    }
    CHECK(got == sent);
    CHECK(last_fwd >= kConnectionBuffer * 3 / 4);
    CHECK(h.dev->counters().credit_updates_sent >= 1);

    // A guest that ignores the credit while the host reads nothing is reset.
    bool reset = false;
    for (unsigned i = 0; i < 40 && !reset; i++) {
        rw.len = kMaxPacketPayload;
        h.send(rw, pattern(kMaxPacketPayload, i));
        reset = find_op(h.receive(), op::kRst, 2001) != nullptr;
    }
    CHECK(reset);
    CHECK(h.dev->counters().bad_packets >= 1);
    CHECK(h.dev->counters().connections_open == 0);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("vsock: the host side closing or failing resets the connection", "[virtio][vsock]") {
    Harness h;
    FileDescriptor server = listen_on(h.uds + "_62");
    h.send(h.hdr(op::kRequest, 2002, 62));
    REQUIRE(h.receive().size() == 1);
    FileDescriptor peer(::accept(server.get(), nullptr, nullptr));
    peer.reset();  // gone altogether
    auto ps = h.receive();
    REQUIRE(find_op(ps, op::kShutdown, 2002) != nullptr);
    // The guest still sends: the socket is gone (EPIPE), RST.
    auto rw = h.hdr(op::kRw, 2002, 62);
    rw.len = 3;
    h.send(rw, "abc");
    ps = h.receive();
    CHECK(find_op(ps, op::kRst, 2002) != nullptr);
    CHECK(h.dev->counters().connections_open == 0);
}

TEST_CASE("vsock: malformed packets are answered with RST or dropped; the device goes on", "[virtio][vsock]") {
    Harness h;
    FileDescriptor server = listen_on(h.uds + "_63");
    struct Case {
        const char* what;
        PacketHeader h;
        bool rst;
    };
    auto base = h.hdr(op::kRequest, 3000, 63);
    const auto with = [&base](auto change) {
        PacketHeader x = base;
        change(x);
        return x;
    };
    const std::vector<Case> cases{
        {"another src_cid", with([](PacketHeader& x) { x.src_cid = 77; }), false},
        {"dst_cid not the host", with([](PacketHeader& x) { x.dst_cid = 5; }), true},
        {"seqpacket", with([](PacketHeader& x) { x.type = socket_type::kSeqpacket; }), true},
        {"unknown op", with([](PacketHeader& x) { x.op = 99; }), true},
        {"RW without a connection", with([](PacketHeader& x) { x.op = op::kRw; }), true},
        {"RESPONSE without a connection", with([](PacketHeader& x) { x.op = op::kResponse; }), true},
        {"len beyond the chain", with([](PacketHeader& x) { x.len = 5000; }), true},  // no payload buffer
        {"RST without a connection", with([](PacketHeader& x) { x.op = op::kRst; }), false},
    };
    for (const auto& c : cases) {
        INFO(c.what);
        h.send(c.h);
        const auto ps = h.receive();
        if (c.rst) {
            REQUIRE(ps.size() == 1);
            CHECK(ps[0].h.op == op::kRst);
            CHECK(ps[0].h.dst_port == 3000);
        } else {
            CHECK(ps.empty());
        }
    }
    // A chain too short for a header, and one with a device-writable buffer: dropped.
    h.tx->add({{kTxBufs, 20, false}});
    h.tx->add({{kTxBufs, sizeof(PacketHeader), false}, {kTxBufs + 0x100, 16, true}});
    h.kicks[kTxQueue].signal();
    CHECK(h.receive().empty());
    CHECK(h.dev->counters().bad_packets == 7);  // 5 headers, 2 chains; the others are stray packets
    CHECK(h.irq.errors.empty());
    // The device still works.
    h.send(base);
    auto ps = h.receive();
    REQUIRE(ps.size() == 1);
    CHECK(ps[0].h.op == op::kResponse);

}

TEST_CASE("vsock: a bad receive buffer puts the device in NEEDS_RESET, nothing else", "[virtio][vsock]") {
    Harness h({}, 0);
    SECTION("device-readable") { h.rx->add({{kRxBufs, 64, false}}); }
    SECTION("shorter than a header") { h.rx->add({{kRxBufs, 40, true}}); }
    h.send(h.hdr(op::kRequest, 1000, 99));  // no such port: an RST to deliver
    REQUIRE(h.irq.errors.size() == 1);
    CHECK(h.dev->device_errors() == 1);
}

TEST_CASE("vsock: 100 connections each way at once", "[virtio][vsock]") {
    Harness h;
    constexpr uint32_t kN = 100;
    FileDescriptor server = listen_on(h.uds + "_7");
    // Guest -> host.
    for (uint32_t i = 0; i < kN; i++) h.send(h.hdr(op::kRequest, 5000 + i, 7));
    auto ps = h.receive();
    uint32_t responses = 0;
    for (const auto& p : ps) responses += p.h.op == op::kResponse;
    CHECK(responses == kN);
    std::vector<FileDescriptor> peers;
    for (uint32_t i = 0; i < kN; i++) {
        peers.emplace_back(::accept(server.get(), nullptr, nullptr));
        REQUIRE(peers.back());
    }
    // Host -> guest.
    std::vector<FileDescriptor> clients;
    for (uint32_t i = 0; i < kN; i++) {
        clients.push_back(connect_to(h.uds));
        write_str(clients.back().get(), "CONNECT 9\n");
    }
    std::vector<uint32_t> host_ports;
    for (int round = 0; round < 20 && host_ports.size() < kN; round++) {
        for (const auto& p : h.receive()) {
            if (p.h.op == op::kRequest && p.h.dst_port == 9) host_ports.push_back(p.h.src_port);
        }
    }
    REQUIRE(host_ports.size() == kN);
    for (uint32_t port : host_ports) h.send(h.hdr(op::kResponse, 9, port));
    for (auto& c : clients) CHECK(read_now(c.get()).starts_with("OK "));
    CHECK(h.dev->counters().connections_open == 2 * kN);

    // Data on every connection, guest to host: which peer is which is learnt from the data.
    for (uint32_t i = 0; i < kN; i++) {
        auto rw = h.hdr(op::kRw, 5000 + i, 7);
        const std::string msg = "conn " + std::to_string(i) + " " + pattern(100, i);
        rw.len = static_cast<uint32_t>(msg.size());
        h.send(rw, msg);
    }
    std::vector<bool> seen(kN);
    for (auto& p : peers) {
        const std::string got = read_now(p.get());
        const uint32_t i = static_cast<uint32_t>(std::stoul(got.substr(5)));
        REQUIRE(i < kN);
        CHECK(got == "conn " + std::to_string(i) + " " + pattern(100, i));
        seen[i] = true;
        write_str(p.get(), "back " + std::to_string(i));
    }
    CHECK(std::count(seen.begin(), seen.end(), true) == kN);
    for (size_t i = 0; i < clients.size(); i++) write_str(clients[i].get(), "from client " + std::to_string(i));
    std::vector<Packet> all;
    for (int round = 0; round < 30; round++) {
        auto more = h.receive();
        all.insert(all.end(), more.begin(), more.end());
    }
    for (uint32_t i = 0; i < kN; i++) CHECK(all_data(all, 5000 + i) == "back " + std::to_string(i));
    std::string to_port9;
    size_t rw9 = 0;
    for (const auto& p : all) {
        if (p.h.op == op::kRw && p.h.dst_port == 9) rw9++;
    }
    CHECK(rw9 == kN);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("vsock: the connection limit turns newcomers away", "[virtio][vsock]") {
    Limits limits;
    limits.max_connections = 2;
    Harness h(limits);
    FileDescriptor server = listen_on(h.uds + "_8");
    h.send(h.hdr(op::kRequest, 1, 8));
    h.send(h.hdr(op::kRequest, 2, 8));
    h.send(h.hdr(op::kRequest, 3, 8));
    auto ps = h.receive();
    REQUIRE(ps.size() == 3);
    CHECK(find_op(ps, op::kRst, 3) != nullptr);
    CHECK(h.dev->counters().connection_limit_refusals >= 1);
    // A host client waits in the backlog until a connection goes.
    FileDescriptor client = connect_to(h.uds);
    write_str(client.get(), "CONNECT 10\n");
    CHECK(h.receive().empty());
    h.send(h.hdr(op::kRst, 1, 8));
    ps = h.receive();
    REQUIRE(find_op(ps, op::kRequest, 10) != nullptr);
}

TEST_CASE("vsock: a device reset closes every connection; the device works again after", "[virtio][vsock]") {
    Harness h;
    FileDescriptor server = listen_on(h.uds + "_64");
    h.send(h.hdr(op::kRequest, 4000, 64));
    FileDescriptor client = connect_to(h.uds);
    write_str(client.get(), "CONNECT 90\n");
    FileDescriptor pending = connect_to(h.uds);
    auto ps = h.receive();
    REQUIRE(ps.size() == 2);
    FileDescriptor peer(::accept(server.get(), nullptr, nullptr));
    CHECK(h.dev->counters().connections_open == 3);
    h.dev->reset();
    h.run();
    CHECK(at_eof(peer.get()));
    CHECK(at_eof(client.get()));
    CHECK(h.dev->counters().connections_open == 0);
    h.activate();
    h.send(h.hdr(op::kRequest, 4000, 64));
    ps = h.receive();
    REQUIRE(ps.size() == 1);
    CHECK(ps[0].h.op == op::kResponse);
}

}  // namespace unit_vsock_device_test
