// Test helpers for the virtio-blk suite (tests/unit/virtio/block/): the guest memory layout the
// tests share, the request header and segment layouts, RingHarness (guest memory, one queue and
// its driver side, building requests: for the parser's tests) and Harness (a BlockDevice on the
// fake backend, fake_block_backend.h, or on a real one, in front of that queue, subscribed to an
// event loop of its own as the transport activates it: the backend's completions reach the device
// only through the loop, as in the VMM).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "memory/guest_memory.h"
#include "tests/unit/virtio/fake_block_backend.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/block/backend.h"
#include "virtio/block/block_device.h"
#include "virtio/block/request.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"
#include "vmm/sys/event_loop.h"

namespace embervm::virtio::testing {

// Guest memory layout (1 MiB).
inline constexpr uint64_t kMemSize = 0x100000;
inline constexpr uint64_t kRings = 0x1000;     // descriptors; available ring +0x1000, used ring +0x2000
inline constexpr uint64_t kIndirect = 0x5000;  // indirect tables, 0x100 apart
inline constexpr uint64_t kHeaders = 0x8000;   // request headers, 16 apart
inline constexpr uint64_t kStatus = 0xa000;    // status bytes, 16 apart (kPoison until written)
inline constexpr uint64_t kData = 0x10000;     // data buffers up to the end of memory
inline constexpr uint8_t kPoison = 0xee;

inline constexpr uint64_t kSectors = 64;  // default fake disk: 32 KiB
inline constexpr uint16_t kRing = 64;     // queue size the driver picks

// struct virtio_blk_outhdr and struct virtio_blk_discard_write_zeroes, as the driver writes them.
struct RequestHeaderLayout {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};
static_assert(sizeof(RequestHeaderLayout) == 16);
struct SegmentLayout {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};
static_assert(sizeof(SegmentLayout) == 16);

// Request types virtio-blk does not know (or embervm does not implement): UNSUPP.
inline constexpr std::array<uint32_t, 13> kUnknownTypes{2, 3, 5, 6, 7, 9, 10, 12, 14, 15, 16, 0x80000000u, 0xffffffffu};

// A device-readable (R) or device-writable (W) buffer.
inline Buf R(uint64_t addr, uint32_t len) { return {addr, len, false}; }
inline Buf W(uint64_t addr, uint32_t len) { return {addr, len, true}; }

// A request made available: its head and the address of its status byte.
struct Request {
    uint16_t head;
    uint64_t status;
};

inline std::vector<uint8_t> concat(std::initializer_list<std::vector<uint8_t>> parts) {
    std::vector<uint8_t> out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

// Guest memory and one queue with its driver side; builds virtio-blk requests in it.
class RingHarness {
public:
    RingHarness() { set_up_ring(); }
    virtual ~RingHarness() = default;
    RingHarness(const RingHarness&) = delete;
    RingHarness& operator=(const RingHarness&) = delete;

    // A fresh queue and rings, as a driver sets them up (after a reset).
    void set_up_ring() {
        queue.reset();
        mem.fill(memory::GuestAddress(kRings), 0x3000, 0);
        ring.emplace(mem, queue, kRings, kRing);
    }

    // Writes a request header (its own 16 bytes) and returns its address.
    uint64_t header(uint32_t type, uint64_t sector, uint32_t reserved = 0) {
        const uint64_t a = kHeaders + 16ULL * (requests % 128);
        mem.write_obj(memory::GuestAddress(a), RequestHeaderLayout{type, reserved, sector});
        return a;
    }
    // A status byte holding kPoison; returns its address.
    uint64_t new_status() {
        const uint64_t a = kStatus + 16ULL * (requests % 128);
        mem.write_obj(memory::GuestAddress(a), kPoison);
        return a;
    }
    // header, `data`, status byte, in direct descriptors or one indirect table.
    Request request(uint32_t type, uint64_t sector, const std::vector<Buf>& data, bool indirect = false) {
        std::vector<Buf> bufs{R(header(type, sector), 16)};
        bufs.insert(bufs.end(), data.begin(), data.end());
        const uint64_t st = new_status();
        bufs.push_back(W(st, 1));
        requests++;
        const uint16_t head = indirect ? ring->add_indirect(kIndirect + 0x100ULL * (tables++ % 16), bufs) : ring->add(bufs);
        return {head, st};
    }
    // DISCARD / WRITE_ZEROES with the segments in one readable buffer at `at`.
    Request range_request(uint32_t type, uint64_t at, const std::vector<SegmentLayout>& segs) {
        for (size_t i = 0; i < segs.size(); i++) mem.write_obj(memory::GuestAddress(at + 16 * i), segs[i]);
        return request(type, 0, {R(at, static_cast<uint32_t>(16 * segs.size()))});
    }

    uint8_t status(const Request& r) const { return byte(r.status); }
    uint8_t byte(uint64_t addr) const { return mem.read_obj<uint8_t>(memory::GuestAddress(addr)); }
    std::vector<uint8_t> bytes(uint64_t addr, size_t n) const {
        std::vector<uint8_t> v(n);
        mem.read(memory::GuestAddress(addr), v);
        return v;
    }
    // Fills [addr, addr + n) with a pattern that depends on `seed`; returns it.
    std::vector<uint8_t> fill_pattern(uint64_t addr, size_t n, uint8_t seed) {
        std::vector<uint8_t> v(n);
        for (size_t i = 0; i < n; i++) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 8));
        mem.write(memory::GuestAddress(addr), v);
        return v;
    }
    uint16_t used_idx() const { return ring->used_idx(); }
    // {head, len} of used element n.
    std::pair<uint32_t, uint32_t> used(uint16_t n) const { return ring->used(n); }
    // The used length of the request with this head, which must have been used exactly once
    // (completions need not come in order: requests the device answers itself come before
    // those still at the backend).
    uint32_t used_len(const Request& r) const {
        std::optional<uint32_t> len;
        for (uint16_t i = 0; i < used_idx(); i++) {
            if (used(i).first == r.head) {
                CHECK_FALSE(len.has_value());
                len = used(i).second;
            }
        }
        REQUIRE(len.has_value());
        return *len;
    }

    memory::GuestMemory mem{{{memory::GuestAddress(0), kMemSize}}};
    Queue queue{block::kQueueSize};
    std::optional<RingDriver> ring;
    unsigned requests = 0;  // spreads headers and status bytes
    unsigned tables = 0;
};

// What the driver acks and what the fake disk is.
struct Options {
    uint64_t disk_bytes = kSectors * block::kSectorSize;
    bool ro_backend = false;
    uint64_t ack_mask = ~uint64_t{0};  // acked = offered & ack_mask | ack_force
    uint64_t ack_force = 0;
};

// A BlockDevice activated on RingHarness's queue.
class Harness : public RingHarness {
public:
    // On a FakeBlockBackend of o.disk_bytes (`backend`).
    explicit Harness(block::BlockDeviceOptions opts = {"blk0", false, true}, Options o = {}) {
        auto b = std::make_unique<FakeBlockBackend>(o.disk_bytes, o.ro_backend);
        backend = b.get();
        start(std::move(b), std::move(opts), o);
    }
    // On another backend (a real one: `backend` stays null).
    Harness(std::unique_ptr<block::BlockBackend> b, block::BlockDeviceOptions opts, Options o = {}) {
        start(std::move(b), std::move(opts), o);
    }
    ~Harness() override {
        // Never leave requests held: the device's destructor would wait for them.
        if (backend != nullptr) backend->release_held();
        dev.reset();
    }

    // Sets up the queue again and activates the device (after a reset).
    void activate() {
        set_up_ring();
        queue.set_event_idx_enabled((acked & feature::kRingEventIdx) != 0);
        queue.set_indirect_enabled((acked & feature::kRingIndirectDesc) != 0);
        dev->activate(Activation{mem, std::span<Queue>(&queue, 1), acked, irq, {}, &loop});
        run();  // the device subscribes on the loop thread
    }
    void notify() { dev->queue_notify(0); }
    // Runs what is ready on the loop (a readable completion fd, posted work) until nothing is.
    void run() {
        io.restart();
        io.poll();
    }
    // Completes what the fake backend holds; the loop hands the completions to the device.
    void complete_held() {
        backend->release_held();
        run();
    }
    // Kicks, then runs the loop (which waits for the backend's completion fd) until `want` used
    // elements are there.
    void run_until_used(uint16_t want) {
        notify();
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (used_idx() < want && std::chrono::steady_clock::now() < deadline) {
            io.restart();
            io.run_one_for(std::chrono::milliseconds(100));
        }
        REQUIRE(used_idx() == want);
    }

    boost::asio::io_context io;
    vmm::EventLoop loop{io};
    FakeInterrupt irq;
    FakeBlockBackend* backend = nullptr;
    std::unique_ptr<block::BlockDevice> dev;
    uint64_t acked = 0;

private:
    void start(std::unique_ptr<block::BlockBackend> b, block::BlockDeviceOptions opts, const Options& o) {
        dev = std::make_unique<block::BlockDevice>(std::move(b), std::move(opts));
        acked = ((dev->available_features() | feature::kVersion1) & o.ack_mask) | o.ack_force;
        activate();
    }
};

// GET_ID: a drive id, the writable buffers before the status byte, and what lands in them.
struct GetIdCase {
    const char* what;
    std::string id;
    bool read_only;
    std::vector<uint32_t> buffers;  // lengths
    std::string want;               // the bytes written, over the buffers in order
};
inline std::vector<GetIdCase> get_id_cases() {
    return {
        {"short id: NUL-padded to 20 bytes", "vda", false, {32}, std::string("vda") + std::string(17, '\0')},
        {"empty id: 20 NULs", "", false, {20}, std::string(20, '\0')},
        {"exactly 20 bytes: no terminator", "0123456789abcdefghij", false, {32}, "0123456789abcdefghij"},
        {"a longer id is truncated", "serial-number-that-is-far-too-long", false, {64}, "serial-number-that-i"},
        {"a shorter buffer gets a prefix", "abcdefgh", false, {5}, "abcde"},
        {"split over two buffers", "ABCDEFGHIJKLMNOPQRST", false, {7, 13}, "ABCDEFGHIJKLMNOPQRST"},
        {"no buffer at all", "abc", false, {}, ""},
        {"a read-only drive", "ro-id", true, {20}, std::string("ro-id") + std::string(15, '\0')},
    };
}
// The case's buffers in guest memory, 0x100 apart from kData on, each poisoned with 0xaa (and
// the 8 bytes after it).
inline std::vector<Buf> get_id_buffers(RingHarness& h, const GetIdCase& c) {
    std::vector<Buf> bufs;
    for (const uint32_t len : c.buffers) {
        bufs.push_back(W(kData + 0x100 * bufs.size(), len));
        h.mem.fill(memory::GuestAddress(bufs.back().addr), len + 8, 0xaa);
    }
    return bufs;
}
// Each buffer holds its part of c.want and nothing after it (the poison stays).
inline void check_get_id_buffers(const RingHarness& h, const std::vector<Buf>& bufs, const GetIdCase& c) {
    size_t off = 0;
    for (const Buf& b : bufs) {
        const size_t n = std::min<size_t>(b.len, c.want.size() - off);
        const auto got = h.bytes(b.addr, b.len + 8);
        CHECK(std::string(got.begin(), got.begin() + static_cast<long>(n)) == c.want.substr(off, n));
        CHECK(std::all_of(got.begin() + static_cast<long>(n), got.end(), [](uint8_t v) { return v == 0xaa; }));
        off += n;
    }
    CHECK(off == c.want.size());
}

// A fake disk of `sectors` sectors whose bytes differ from the default fake's.
inline std::unique_ptr<FakeBlockBackend> other_disk(uint64_t sectors, bool ro = false) {
    auto b = std::make_unique<FakeBlockBackend>(sectors * block::kSectorSize, ro);
    for (size_t i = 0; i < b->disk.size(); i++) b->disk[i] = static_cast<uint8_t>(0xa5 ^ (i * 7 + (i >> 9)));
    return b;
}

// The capacity field of the device's configuration space.
inline uint64_t config_capacity(const block::BlockDevice& dev) {
    uint64_t v = 0;
    dev.read_config(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), sizeof v));
    return v;
}

// Runs `op` (reset, swap or destruction of a device with requests held by `fake`) while
// another thread waits until the device asks the fake how many requests are in flight, and
// only then completes them. True if `op` returned after that: it waited for its requests.
inline bool op_waits_for_held_requests(FakeBlockBackend& fake, const std::function<void()>& op) {
    std::atomic<bool> released{false};
    std::atomic<bool> asked{false};
    const uint64_t seen = fake.in_flight_queries();
    std::thread worker([&] {
        asked = fake.wait_for_in_flight_query(seen);
        released = true;
        fake.release_held();
    });
    op();
    const bool waited = released.load();
    worker.join();
    CHECK(asked.load());
    return waited;
}

}  // namespace embervm::virtio::testing
