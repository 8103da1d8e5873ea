// Tests for virtio/block/block_device (BlockDevice): requests hand-built in a test guest memory
// (direct and indirect descriptors), a fake in-memory BlockBackend that can hold requests "in
// flight", refuse them (full) or fail them, and a few cases with the real backends on a
// temporary file. Every check looks at the bytes in guest memory (status bytes, data buffers,
// used ring) or at what reached the backend.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "devices/irq.h"
#include "memory/guest_memory.h"
#include "tests/unit/virtio/temp_image.h"
#include "virtio/block/backend.h"
#include "virtio/block/block_device.h"
#include "virtio/mmio_transport.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"
#include "vmm/sys/eventfd.h"

#include "fake_block_backend.h"
#include "ring_driver.h"

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using namespace embervm::virtio::block;
using embervm::virtio::testing::FakeBlockBackend;
using embervm::virtio::testing::Submitted;

namespace {

// Guest memory layout (1 MiB).
constexpr uint64_t kMemSize = 0x100000;
constexpr uint64_t kDesc = 0x1000, kAvail = 0x2000, kUsed = 0x3000;  // split ring
constexpr uint64_t kIndirect = 0x5000;  // indirect tables, 0x100 apart
constexpr uint64_t kHeaders = 0x8000;   // request headers, 16 apart
constexpr uint64_t kStatus = 0xa000;    // status bytes, 16 apart (0xee until written)
constexpr uint64_t kData = 0x10000;     // data buffers up to the end of memory
constexpr uint8_t kPoison = 0xee;

constexpr uint64_t kSectors = 64;  // default fake disk: 32 KiB
constexpr uint16_t kRing = 64;     // queue size the driver picks

// ---------------------------------------------------------------------------------------------
// The driver side of the split ring (like ring_driver.h's RingDriver, plus INDIRECT chains and
// the ring's flag / event fields).

struct D {
    uint64_t addr;
    uint32_t len;
    bool device_writes;
};
D R(uint64_t addr, uint32_t len) { return {addr, len, false}; }
D W(uint64_t addr, uint32_t len) { return {addr, len, true}; }

struct Request {
    uint16_t head;
    uint64_t status;  // address of the status byte
};

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

struct Options {
    uint64_t disk_bytes = kSectors * kSectorSize;
    bool ro_backend = false;
    uint64_t ack_mask = ~uint64_t{0};  // acked = offered & ack_mask | ack_force
    uint64_t ack_force = 0;
};

struct Harness {
    GuestMemory mem{{{GuestAddress(0), kMemSize}}};
    Queue queue{kQueueSize};
    testing::FakeInterrupt irq;
    FakeBlockBackend* backend = nullptr;
    std::unique_ptr<BlockDevice> dev;
    uint64_t acked = 0;
    uint16_t next_desc = 0;
    uint16_t avail = 0;
    unsigned requests = 0;  // spreads headers and status bytes
    unsigned tables = 0;

    explicit Harness(BlockDeviceOptions opts = {"blk0", false, true}, Options o = {}) {
        auto b = std::make_unique<FakeBlockBackend>(o.disk_bytes, o.ro_backend);
        backend = b.get();
        dev = std::make_unique<BlockDevice>(std::move(b), std::move(opts));
        acked = ((dev->available_features() | feature::kVersion1) & o.ack_mask) | o.ack_force;
        activate();
    }
    ~Harness() {
        // Never leave requests held: the device's destructor would wait for them.
        backend->release_held();
    }

    void activate() {
        queue.reset();
        queue.set_size(kRing);
        queue.set_desc_table(GuestAddress(kDesc));
        queue.set_avail_ring(GuestAddress(kAvail));
        queue.set_used_ring(GuestAddress(kUsed));
        queue.set_event_idx_enabled((acked & feature::kRingEventIdx) != 0);
        queue.set_indirect_enabled((acked & feature::kRingIndirectDesc) != 0);
        queue.set_ready(true);
        mem.fill(GuestAddress(kDesc), 0x3000, 0);
        next_desc = 0;
        avail = 0;
        dev->activate(mem, std::span<Queue>(&queue, 1), acked, irq);
    }

    void write_desc(uint64_t table, uint16_t idx, const D& d, bool more, uint16_t next) {
        uint16_t flags = d.device_writes ? desc_flags::kWrite : 0;
        if (more) flags |= desc_flags::kNext;
        mem.write_obj(GuestAddress(table + 16ULL * idx), Descriptor{d.addr, d.len, flags, next});
    }
    void publish(uint16_t head) {
        mem.write_obj<uint16_t>(GuestAddress(kAvail + 4 + 2ULL * (avail % kRing)), head);
        avail++;
        mem.write_obj<uint16_t>(GuestAddress(kAvail + 2), avail);
    }
    // A chain of direct descriptors, made available; returns its head.
    uint16_t add_chain(const std::vector<D>& bufs) {
        const uint16_t head = next_desc;
        for (size_t i = 0; i < bufs.size(); i++) {
            const auto idx = static_cast<uint16_t>((head + i) % kRing);
            write_desc(kDesc, idx, bufs[i], i + 1 < bufs.size(), static_cast<uint16_t>((idx + 1) % kRing));
        }
        next_desc = static_cast<uint16_t>((head + bufs.size()) % kRing);
        publish(head);
        return head;
    }
    // One INDIRECT descriptor pointing at a table holding `bufs`.
    uint16_t add_indirect(const std::vector<D>& bufs) {
        const uint64_t table = kIndirect + 0x100ULL * (tables++ % 16);
        for (size_t i = 0; i < bufs.size(); i++) {
            write_desc(table, static_cast<uint16_t>(i), bufs[i], i + 1 < bufs.size(), static_cast<uint16_t>(i + 1));
        }
        const uint16_t head = next_desc;
        mem.write_obj(GuestAddress(kDesc + 16ULL * head),
                      Descriptor{table, static_cast<uint32_t>(16 * bufs.size()), desc_flags::kIndirect, 0});
        next_desc = static_cast<uint16_t>((head + 1) % kRing);
        publish(head);
        return head;
    }

    uint64_t header(uint32_t type, uint64_t sector, uint32_t reserved = 0) {
        const uint64_t a = kHeaders + 16ULL * (requests % 128);
        mem.write_obj(GuestAddress(a), RequestHeaderLayout{type, reserved, sector});
        return a;
    }
    uint64_t new_status() {
        const uint64_t a = kStatus + 16ULL * (requests % 128);
        mem.write_obj(GuestAddress(a), kPoison);
        return a;
    }
    // header, data, status byte.
    Request request(uint32_t type, uint64_t sector, const std::vector<D>& data, bool indirect = false) {
        std::vector<D> bufs{R(header(type, sector), 16)};
        bufs.insert(bufs.end(), data.begin(), data.end());
        const uint64_t st = new_status();
        bufs.push_back(W(st, 1));
        requests++;
        return {indirect ? add_indirect(bufs) : add_chain(bufs), st};
    }
    // DISCARD / WRITE_ZEROES with the segments in one readable buffer at `at`.
    Request range_request(uint32_t type, uint64_t at, const std::vector<SegmentLayout>& segs) {
        for (size_t i = 0; i < segs.size(); i++) mem.write_obj(GuestAddress(at + 16 * i), segs[i]);
        return request(type, 0, {R(at, static_cast<uint32_t>(16 * segs.size()))});
    }

    void notify() { dev->queue_notify(0); }
    void complete_held() {
        backend->release_held();
        dev->process_completions();
    }

    uint8_t status(const Request& r) const { return mem.read_obj<uint8_t>(GuestAddress(r.status)); }
    uint16_t used_idx() const { return mem.read_obj<uint16_t>(GuestAddress(kUsed + 2)); }
    uint16_t used_flags() const { return mem.read_obj<uint16_t>(GuestAddress(kUsed)); }
    uint16_t avail_event() const { return mem.read_obj<uint16_t>(GuestAddress(kUsed + 4 + 8ULL * kRing)); }
    void set_used_event(uint16_t v) { mem.write_obj<uint16_t>(GuestAddress(kAvail + 4 + 2ULL * kRing), v); }
    void set_avail_flags(uint16_t v) { mem.write_obj<uint16_t>(GuestAddress(kAvail), v); }
    // {id, len} of used element n.
    std::pair<uint32_t, uint32_t> used(uint16_t n) const {
        const uint64_t e = kUsed + 4 + 8ULL * (n % kRing);
        return {mem.read_obj<uint32_t>(GuestAddress(e)), mem.read_obj<uint32_t>(GuestAddress(e + 4))};
    }
    std::vector<uint8_t> bytes(uint64_t addr, size_t n) const {
        std::vector<uint8_t> v(n);
        mem.read(GuestAddress(addr), v);
        return v;
    }
    std::vector<uint8_t> fill_pattern(uint64_t addr, size_t n, uint8_t seed) {
        std::vector<uint8_t> v(n);
        for (size_t i = 0; i < n; i++) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 8));
        mem.write(GuestAddress(addr), v);
        return v;
    }
};

std::vector<uint8_t> concat(std::initializer_list<std::vector<uint8_t>> parts) {
    std::vector<uint8_t> out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

}  // namespace

// =============================================================================================
// Features and configuration space

TEST_CASE("virtio-blk device: identity and features follow the options", "[virtio][blk][block_device]") {
    struct Case {
        bool ro_option, ro_backend, flush;
    };
    const Case c = GENERATE(Case{false, false, false}, Case{false, false, true}, Case{true, false, false},
                            Case{true, false, true}, Case{false, true, true});
    INFO("ro_option " << c.ro_option << " ro_backend " << c.ro_backend << " flush " << c.flush);
    Harness h({"disk7", c.ro_option, c.flush}, Options{.ro_backend = c.ro_backend});
    CHECK(h.dev->device_type() == 2);
    CHECK(h.dev->queue_max_sizes() == std::vector<uint16_t>{256});
    CHECK(h.dev->name().find("disk7") != std::string::npos);

    const uint64_t f = h.dev->available_features();
    const bool ro = c.ro_option || c.ro_backend;
    // Always: SEG_MAX, BLK_SIZE, EVENT_IDX, INDIRECT_DESC.
    CHECK((f & feature_bit(2)) != 0);
    CHECK((f & feature_bit(6)) != 0);
    CHECK((f & feature_bit(28)) != 0);
    CHECK((f & feature_bit(29)) != 0);
    CHECK(((f & feature_bit(5)) != 0) == ro);             // RO
    CHECK(((f & feature_bit(9)) != 0) == c.flush);        // FLUSH only with options.flush
    CHECK(((f & feature_bit(13)) != 0) == !ro);           // DISCARD
    CHECK(((f & feature_bit(14)) != 0) == !ro);           // WRITE_ZEROES
    // Nothing else: no SIZE_MAX, GEOMETRY, TOPOLOGY, MQ, CONFIG_WCE, packed ring, ...
    const uint64_t known = feature_bit(2) | feature_bit(5) | feature_bit(6) | feature_bit(9) | feature_bit(13) |
                           feature_bit(14) | feature_bit(28) | feature_bit(29);
    CHECK((f & ~known) == 0);
}

TEST_CASE("virtio-blk device: configuration space, byte by byte and at every width", "[virtio][blk][block_device]") {
    // 1000 sectors and a partial one: capacity rounds down.
    const bool ro = GENERATE(false, true);
    Harness h({"cfg", ro, true}, Options{.disk_bytes = 1000 * 512 + 300});
    CHECK(h.dev->capacity_sectors() == 1000);

    std::array<uint8_t, 60> want{};
    const auto put = [&](size_t off, uint64_t v, size_t n) {
        for (size_t i = 0; i < n; i++) want[off + i] = static_cast<uint8_t>(v >> (8 * i));
    };
    put(0, 1000, 8);               // capacity
    put(12, 254, 4);               // seg_max: queue size 256 minus header and status
    put(20, 512, 4);               // blk_size
    put(34, 1, 2);                 // num_queues
    put(36, kMaxDiscardSectors, 4);  // max_discard_sectors
    put(40, 1, 4);                 // max_discard_seg
    put(44, 1, 4);                 // discard_sector_alignment
    put(48, kMaxDiscardSectors, 4);  // max_write_zeroes_sectors
    put(52, 1, 4);                 // max_write_zeroes_seg
    put(56, 1, 1);                 // write_zeroes_may_unmap

    for (size_t off = 0; off < 64 + 8; off++) {
        INFO("offset " << off);
        uint8_t b = 0xaa;
        h.dev->read_config(off, std::span<uint8_t>(&b, 1));
        CHECK(b == (off < want.size() ? want[off] : 0));
    }
    for (const size_t width : {2u, 4u, 8u}) {
        for (size_t off = 0; off + width <= 72; off += width) {
            INFO("offset " << off << " width " << width);
            std::array<uint8_t, 8> got{};
            got.fill(0xaa);
            h.dev->read_config(off, std::span<uint8_t>(got.data(), width));
            for (size_t i = 0; i < width; i++) CHECK(got[i] == (off + i < want.size() ? want[off + i] : 0));
        }
    }
    // Far beyond the end: zeros.
    uint64_t far = ~uint64_t{0};
    h.dev->read_config(0x1000, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&far), 8));
    CHECK(far == 0);

    // Writes are ignored everywhere (writeback needs CONFIG_WCE, not offered).
    std::array<uint8_t, 8> junk;
    junk.fill(0x5c);
    for (size_t off = 0; off < 64; off += 4) h.dev->write_config(off, std::span<const uint8_t>(junk.data(), 4));
    std::array<uint8_t, 60> after{};
    h.dev->read_config(0, after);
    CHECK(after == want);
}

// =============================================================================================
// IN / OUT

TEST_CASE("virtio-blk device: OUT then IN round trip over odd-sized descriptors", "[virtio][blk][block_device]") {
    Harness h;
    // OUT sectors 5..8 (2048 bytes) from five pieces, one of them empty.
    const auto data = h.fill_pattern(kData, 2048, 0x21);
    const Request w = h.request(req::kOut, 5,
                                {R(kData, 1), R(kData + 1, 510), R(kData + 511, 0), R(kData + 511, 1000),
                                 R(kData + 1511, 537)});
    h.notify();
    CHECK(h.status(w) == blk_status::kOk);
    REQUIRE(h.used_idx() == 1);
    CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{w.head, 1});  // OUT: only the status byte
    REQUIRE(h.backend->log.size() == 1);
    CHECK(h.backend->log[0].op == IoRequest::Op::Write);
    CHECK(h.backend->log[0].offset == 5 * 512);
    CHECK(h.backend->log[0].length == 2048);
    CHECK(h.backend->log[0].iov_bytes == 2048);
    CHECK(h.backend->bytes(5 * 512, 2048) == data);
    // Sectors around it are untouched.
    FakeBlockBackend pristine(kSectors * 512, false);
    CHECK(h.backend->bytes(4 * 512, 512) == pristine.bytes(4 * 512, 512));
    CHECK(h.backend->bytes(9 * 512, 512) == pristine.bytes(9 * 512, 512));

    // IN sectors 4..9 (3072 bytes) into three buffers; the last also holds the status byte.
    h.mem.fill(GuestAddress(kData + 0x10000), 0x4000, 0x77);
    const uint64_t hdr = h.header(req::kIn, 4);
    const uint16_t head = h.add_chain({R(hdr, 16), W(kData + 0x10000, 700), W(kData + 0x11000, 1300),
                                       W(kData + 0x12000, 1072 + 1)});
    h.notify();
    REQUIRE(h.used_idx() == 2);
    CHECK(h.used(1) == std::pair<uint32_t, uint32_t>{head, 3072 + 1});  // data + status
    CHECK(h.mem.read_obj<uint8_t>(GuestAddress(kData + 0x12000 + 1072)) == blk_status::kOk);
    const auto got = concat({h.bytes(kData + 0x10000, 700), h.bytes(kData + 0x11000, 1300),
                             h.bytes(kData + 0x12000, 1072)});
    CHECK(got == concat({pristine.bytes(4 * 512, 512), data, pristine.bytes(9 * 512, 512)}));
    // Bytes after each buffer are untouched.
    CHECK(h.mem.read_obj<uint8_t>(GuestAddress(kData + 0x10000 + 700)) == 0x77);
    CHECK(h.mem.read_obj<uint8_t>(GuestAddress(kData + 0x11000 + 1300)) == 0x77);
    CHECK(h.mem.read_obj<uint8_t>(GuestAddress(kData + 0x12000 + 1073)) == 0x77);
    CHECK(h.backend->log[1].op == IoRequest::Op::Read);
    CHECK(h.backend->log[1].offset == 4 * 512);
    CHECK(h.backend->log[1].iov_bytes == 3072);
    CHECK(h.irq.errors.empty());
    CHECK_FALSE(h.irq.used.empty());
}

TEST_CASE("virtio-blk device: header and data sharing a descriptor, header split over two", "[virtio][blk][block_device]") {
    Harness h;
    // OUT: header split 3 + 13 bytes, second piece continues with one sector of data.
    const uint64_t buf = kData + 0x3000;
    h.mem.write_obj(GuestAddress(buf), RequestHeaderLayout{req::kOut, 0, 9});
    std::vector<uint8_t> sector(512);
    std::iota(sector.begin(), sector.end(), uint8_t{3});
    h.mem.write(GuestAddress(buf + 16), sector);
    const uint64_t st = h.new_status();
    h.add_chain({R(buf, 3), R(buf + 3, 13 + 512), W(st, 1)});
    h.notify();
    CHECK(h.mem.read_obj<uint8_t>(GuestAddress(st)) == blk_status::kOk);
    CHECK(h.backend->bytes(9 * 512, 512) == sector);
}

TEST_CASE("virtio-blk device: requests through INDIRECT descriptors", "[virtio][blk][block_device]") {
    Harness h;
    const auto data = h.fill_pattern(kData, 1024, 0x90);
    const Request w = h.request(req::kOut, 10, {R(kData, 300), R(kData + 300, 724)}, /*indirect=*/true);
    const Request r = h.request(req::kIn, 10, {W(kData + 0x8000, 1024)}, /*indirect=*/true);
    h.notify();
    CHECK(h.status(w) == blk_status::kOk);
    CHECK(h.status(r) == blk_status::kOk);
    REQUIRE(h.used_idx() == 2);
    CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{w.head, 1});
    CHECK(h.used(1) == std::pair<uint32_t, uint32_t>{r.head, 1025});
    CHECK(h.bytes(kData + 0x8000, 1024) == data);
}

TEST_CASE("virtio-blk device: several requests in one kick complete in order with their heads",
          "[virtio][blk][block_device]") {
    Harness h;
    std::vector<Request> reqs;
    for (uint64_t i = 0; i < 5; i++) reqs.push_back(h.request(req::kIn, i * 3, {W(kData + 0x1000 * i, 512 * (i + 1))}));
    h.notify();
    REQUIRE(h.used_idx() == 5);
    FakeBlockBackend pristine(kSectors * 512, false);
    std::set<uint64_t> tags;
    for (uint16_t i = 0; i < 5; i++) {
        INFO("request " << i);
        CHECK(h.status(reqs[i]) == blk_status::kOk);
        CHECK(h.used(i) == std::pair<uint32_t, uint32_t>{reqs[i].head, 512u * (i + 1) + 1});
        CHECK(h.bytes(kData + 0x1000ULL * i, 512ULL * (i + 1)) == pristine.bytes(i * 3 * 512ULL, 512ULL * (i + 1)));
        tags.insert(h.backend->log[i].user_data);
    }
    CHECK(tags.size() == 5);  // every request got its own tag
    CHECK(h.irq.used == std::vector<uint16_t>{0});  // one interrupt for the batch
}

TEST_CASE("virtio-blk device: backend errors complete with IOERR and the full used length",
          "[virtio][blk][block_device]") {
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

// =============================================================================================
// Sector ranges

TEST_CASE("virtio-blk device: sector ranges against the capacity", "[virtio][blk][block_device]") {
    Harness h;
    const auto before = h.backend->disk;
    SECTION("the last sector") {
        const Request r = h.request(req::kIn, kSectors - 1, {W(kData, 512)});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
        CHECK(h.backend->log.size() == 1);
    }
    SECTION("a read crossing the end: IOERR, no I/O, used length 1") {
        h.mem.fill(GuestAddress(kData), 1024, 0x33);
        const Request r = h.request(req::kIn, kSectors - 1, {W(kData, 1024)});
        h.notify();
        CHECK(h.status(r) == blk_status::kIoErr);
        CHECK(h.used(0).second == 1);
        CHECK(h.bytes(kData, 1024) == std::vector<uint8_t>(1024, 0x33));
        CHECK(h.backend->log.empty());
    }
    SECTION("a write starting at the capacity") {
        const Request r = h.request(req::kOut, kSectors, {R(kData, 512)});
        h.notify();
        CHECK(h.status(r) == blk_status::kIoErr);
    }
    SECTION("sector far beyond, and sector * 512 overflowing 64 bits") {
        const Request a = h.request(req::kOut, ~uint64_t{0}, {R(kData, 512)});
        const Request b = h.request(req::kIn, (~uint64_t{0} / 512) + 1, {W(kData, 512)});
        const Request c = h.request(req::kIn, ~uint64_t{0} - 1, {W(kData, 1024)});
        h.notify();
        CHECK(h.status(a) == blk_status::kIoErr);
        CHECK(h.status(b) == blk_status::kIoErr);
        CHECK(h.status(c) == blk_status::kIoErr);
        CHECK(h.backend->log.empty());
    }
    SECTION("a data length that is not a multiple of 512") {
        const Request a = h.request(req::kOut, 0, {R(kData, 511)});
        const Request b = h.request(req::kIn, 0, {W(kData, 513)});
        h.notify();
        CHECK(h.status(a) == blk_status::kIoErr);
        CHECK(h.status(b) == blk_status::kIoErr);
        CHECK(h.backend->log.empty());
    }
    SECTION("no data at the capacity (or below): OK without I/O") {
        const Request a = h.request(req::kIn, kSectors, {});
        const Request b = h.request(req::kOut, 0, {});
        h.notify();
        CHECK(h.status(a) == blk_status::kOk);
        CHECK(h.status(b) == blk_status::kOk);
        CHECK(h.used(0).second == 1);
        CHECK(h.backend->log.empty());
    }
    for (const Submitted& s : h.backend->log) CHECK(s.offset + s.length <= kSectors * 512);
    CHECK(h.backend->disk == before);  // nothing out of range was written
    CHECK(h.irq.errors.empty());
}

// =============================================================================================
// FLUSH, GET_ID, unknown types

TEST_CASE("virtio-blk device: FLUSH", "[virtio][blk][block_device]") {
    SECTION("negotiated: reaches the backend, OK, used length 1") {
        Harness h({"f", false, true});
        REQUIRE((h.acked & blk_feature::kFlush) != 0);
        const Request r = h.request(req::kFlush, 0, {});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
        REQUIRE(h.backend->log.size() == 1);
        CHECK(h.backend->log[0].op == IoRequest::Op::Flush);
        CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{r.head, 1});
    }
    SECTION("offered but not acked by the driver: UNSUPP") {
        Harness h({"f", false, true}, Options{.ack_mask = ~blk_feature::kFlush});
        const Request r = h.request(req::kFlush, 0, {});
        h.notify();
        CHECK(h.status(r) == blk_status::kUnsupp);
        CHECK(h.backend->log.empty());
    }
    SECTION("not offered (options.flush false): UNSUPP") {
        Harness h({"f", false, false});
        REQUIRE((h.acked & blk_feature::kFlush) == 0);
        const Request r = h.request(req::kFlush, 0, {});
        h.notify();
        CHECK(h.status(r) == blk_status::kUnsupp);
        CHECK(h.backend->log.empty());
        CHECK(h.used(0).second == 1);
    }
    SECTION("on a read-only drive: still OK") {
        Harness h({"f", true, true});
        const Request r = h.request(req::kFlush, 0, {});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
    }
    SECTION("the backend fails the flush: IOERR") {
        Harness h({"f", false, true});
        h.backend->fail_with = -EIO;
        const Request r = h.request(req::kFlush, 0, {});
        h.notify();
        CHECK(h.status(r) == blk_status::kIoErr);
    }
}

TEST_CASE("virtio-blk device: GET_ID", "[virtio][blk][block_device]") {
    // Poisons the buffers (and 8 bytes after each), sends GET_ID, returns the request.
    const auto get_id = [](Harness& h, const std::vector<D>& data) {
        for (const D& d : data) h.mem.fill(GuestAddress(d.addr), d.len + 8, 0xaa);
        const Request r = h.request(req::kGetId, 0, data);
        h.notify();
        CHECK(h.backend->log.empty());
        CHECK(h.irq.errors.empty());
        return r;
    };
    SECTION("short id: NUL-padded to 20 bytes, used length 21") {
        Harness h({"vda", false, true});
        const Request r = get_id(h, {W(kData, 20)});
        CHECK(h.status(r) == blk_status::kOk);
        std::vector<uint8_t> want(20, 0);
        std::memcpy(want.data(), "vda", 3);
        CHECK(h.bytes(kData, 20) == want);
        CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{r.head, 21});
    }
    SECTION("exactly 20 bytes: no terminator, nothing written past 20 bytes") {
        Harness h({"0123456789abcdefghij", false, true});
        const Request r = get_id(h, {W(kData, 32)});
        CHECK(h.status(r) == blk_status::kOk);
        const auto got = h.bytes(kData, 21);
        CHECK(std::string(got.begin(), got.begin() + 20) == "0123456789abcdefghij");
        CHECK(got[20] == 0xaa);
        CHECK(h.used(0).second == 21);
    }
    SECTION("a longer id is truncated to 20 bytes") {
        Harness h({"serial-number-that-is-far-too-long", false, true});
        const Request r = get_id(h, {W(kData, 64)});
        CHECK(h.status(r) == blk_status::kOk);
        const auto got = h.bytes(kData, 21);
        CHECK(std::string(got.begin(), got.begin() + 20) == "serial-number-that-i");
        CHECK(got[20] == 0xaa);
        CHECK(h.used(0).second == 21);
    }
    SECTION("a shorter buffer gets a prefix") {
        Harness h({"abcdefgh", false, true});
        const Request r = get_id(h, {W(kData, 5)});
        CHECK(h.status(r) == blk_status::kOk);
        CHECK(h.bytes(kData, 6) == std::vector<uint8_t>{'a', 'b', 'c', 'd', 'e', 0xaa});
        CHECK(h.used(0).second == 6);
    }
    SECTION("the id split over two buffers") {
        Harness h({"ABCDEFGHIJKLMNOPQRST", false, true});
        const Request r = get_id(h, {W(kData, 7), W(kData + 0x100, 13)});
        CHECK(h.status(r) == blk_status::kOk);
        const auto got = concat({h.bytes(kData, 7), h.bytes(kData + 0x100, 13)});
        CHECK(std::string(got.begin(), got.end()) == "ABCDEFGHIJKLMNOPQRST");
        CHECK(h.used(0).second == 21);
    }
    SECTION("no buffer at all: OK, used length 1") {
        Harness h({"abc", false, true});
        const Request r = get_id(h, {});
        CHECK(h.status(r) == blk_status::kOk);
        CHECK(h.used(0).second == 1);
    }
    SECTION("works on a read-only drive") {
        Harness h({"ro-id", true, false});
        const Request r = get_id(h, {W(kData, 20)});
        CHECK(h.status(r) == blk_status::kOk);
        const auto got = h.bytes(kData, 6);
        CHECK(std::string(got.begin(), got.end()) == std::string("ro-id\0", 6));
    }
}

TEST_CASE("virtio-blk device: unknown request types are UNSUPP", "[virtio][blk][block_device]") {
    Harness h;
    const uint32_t type = GENERATE(2u, 3u, 5u, 6u, 7u, 9u, 10u, 12u, 14u, 15u, 16u, 0x80000000u, 0xffffffffu);
    INFO("type " << type);
    h.mem.fill(GuestAddress(kData), 512, 0x44);
    const Request r = h.request(type, 0, {W(kData, 512)});
    h.notify();
    CHECK(h.status(r) == blk_status::kUnsupp);
    CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{r.head, 1});
    CHECK(h.bytes(kData, 512) == std::vector<uint8_t>(512, 0x44));
    CHECK(h.backend->log.empty());
    CHECK(h.irq.errors.empty());
}

// =============================================================================================
// DISCARD and WRITE_ZEROES

TEST_CASE("virtio-blk device: DISCARD and WRITE_ZEROES segments", "[virtio][blk][block_device]") {
    Harness h;
    FakeBlockBackend pristine(kSectors * 512, false);
    constexpr uint64_t kSeg = kData + 0x20000;

    SECTION("WRITE_ZEROES: range zeroed, unmap flag passed through") {
        const uint32_t flags = GENERATE(0u, 1u);
        const Request r = h.range_request(req::kWriteZeroes, kSeg, {{3, 5, flags}});  // odd start: alignment is 1
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
        CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{r.head, 1});
        REQUIRE(h.backend->log.size() == 1);
        CHECK(h.backend->log[0].op == IoRequest::Op::WriteZeroes);
        CHECK(h.backend->log[0].offset == 3 * 512);
        CHECK(h.backend->log[0].length == 5 * 512);
        CHECK(h.backend->log[0].unmap == (flags == 1));
        CHECK(h.backend->bytes(3 * 512, 5 * 512) == std::vector<uint8_t>(5 * 512, 0));
        CHECK(h.backend->bytes(2 * 512, 512) == pristine.bytes(2 * 512, 512));
        CHECK(h.backend->bytes(8 * 512, 512) == pristine.bytes(8 * 512, 512));
    }
    SECTION("DISCARD") {
        const Request r = h.range_request(req::kDiscard, kSeg, {{kSectors - 2, 2, 0}});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
        REQUIRE(h.backend->log.size() == 1);
        CHECK(h.backend->log[0].op == IoRequest::Op::Discard);
        CHECK(h.backend->log[0].offset == (kSectors - 2) * 512);
        CHECK(h.backend->log[0].length == 1024);
        CHECK_FALSE(h.backend->log[0].unmap);
    }
    SECTION("a segment split over two descriptors") {
        h.mem.write_obj(GuestAddress(kSeg), SegmentLayout{7, 2, 1});
        const uint64_t st = h.new_status();
        h.add_chain({R(h.header(req::kWriteZeroes, 0), 16), R(kSeg, 5), R(kSeg + 5, 11), W(st, 1)});
        h.notify();
        CHECK(h.mem.read_obj<uint8_t>(GuestAddress(st)) == blk_status::kOk);
        REQUIRE(h.backend->log.size() == 1);
        CHECK(h.backend->log[0].offset == 7 * 512);
        CHECK(h.backend->log[0].length == 1024);
        CHECK(h.backend->log[0].unmap);
    }
    SECTION("the header's sector field is ignored") {
        h.mem.write_obj(GuestAddress(kSeg), SegmentLayout{1, 1, 0});
        const Request r = h.request(req::kDiscard, 1000000, {R(kSeg, 16)});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
        REQUIRE(h.backend->log.size() == 1);
        CHECK(h.backend->log[0].offset == 512);
    }
    SECTION("DISCARD with the unmap flag: UNSUPP") {
        const Request r = h.range_request(req::kDiscard, kSeg, {{0, 1, 1}});
        h.notify();
        CHECK(h.status(r) == blk_status::kUnsupp);
    }
    SECTION("unknown flags: UNSUPP") {
        const uint32_t type = GENERATE(req::kDiscard, req::kWriteZeroes);
        const uint32_t flags = GENERATE(2u, 3u, 0x80000000u);
        const Request r = h.range_request(type, kSeg, {{0, 1, flags}});
        h.notify();
        CHECK(h.status(r) == blk_status::kUnsupp);
    }
    SECTION("more segments than max_discard_seg / max_write_zeroes_seg (1): UNSUPP") {
        const uint32_t type = GENERATE(req::kDiscard, req::kWriteZeroes);
        const Request r = h.range_request(type, kSeg, {{0, 1, 0}, {4, 1, 0}});
        h.notify();
        CHECK(h.status(r) == blk_status::kUnsupp);
    }
    SECTION("a segment with trailing bytes (not a multiple of 16): UNSUPP") {
        h.mem.write_obj(GuestAddress(kSeg), SegmentLayout{0, 1, 0});
        const Request r = h.request(req::kDiscard, 0, {R(kSeg, 20)});
        h.notify();
        CHECK(h.status(r) == blk_status::kUnsupp);
    }
    SECTION("a short or missing segment: IOERR") {
        const uint32_t len = GENERATE(0u, 1u, 8u, 15u);
        h.mem.write_obj(GuestAddress(kSeg), SegmentLayout{0, 1, 0});
        const Request r = h.request(req::kWriteZeroes, 0, len ? std::vector<D>{R(kSeg, len)} : std::vector<D>{});
        h.notify();
        CHECK(h.status(r) == blk_status::kIoErr);
    }
    SECTION("out of range, or sector + count overflowing: IOERR") {
        const uint32_t type = GENERATE(req::kDiscard, req::kWriteZeroes);
        const Request a = h.range_request(type, kSeg, {{kSectors - 1, 2, 0}});
        const Request b = h.range_request(type, kSeg + 0x100, {{kSectors, 1, 0}});
        const Request c = h.range_request(type, kSeg + 0x200, {{~uint64_t{0} - 1, 4, 0}});
        h.notify();
        CHECK(h.status(a) == blk_status::kIoErr);
        CHECK(h.status(b) == blk_status::kIoErr);
        CHECK(h.status(c) == blk_status::kIoErr);
    }
    SECTION("zero sectors: OK without I/O") {
        const Request r = h.range_request(req::kWriteZeroes, kSeg, {{5, 0, 0}});
        h.notify();
        CHECK(h.status(r) == blk_status::kOk);
    }
    if (h.backend->log.empty()) CHECK(h.backend->disk == pristine.disk);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: DISCARD and WRITE_ZEROES size limits", "[virtio][blk][block_device]") {
    // A disk larger than the limit (the fake only stores its first 4 MiB).
    Harness h({"big", false, true}, Options{.disk_bytes = (uint64_t{kMaxDiscardSectors} + 64) * 512});
    const uint32_t type = GENERATE(req::kDiscard, req::kWriteZeroes);
    const Request ok = h.range_request(type, kData, {{8, kMaxDiscardSectors, 0}});
    const Request big = h.range_request(type, kData + 0x100, {{0, kMaxDiscardSectors + 1, 0}});
    h.notify();
    CHECK(h.status(ok) == blk_status::kOk);
    CHECK(h.status(big) == blk_status::kIoErr);
    REQUIRE(h.backend->log.size() == 1);
    CHECK(h.backend->log[0].offset == 8 * 512);
    CHECK(h.backend->log[0].length == uint64_t{kMaxDiscardSectors} * 512);
}

TEST_CASE("virtio-blk device: DISCARD and WRITE_ZEROES without the feature are UNSUPP", "[virtio][blk][block_device]") {
    Harness h({"n", false, true}, Options{.ack_mask = ~(blk_feature::kDiscard | blk_feature::kWriteZeroes)});
    const Request d = h.range_request(req::kDiscard, kData, {{0, 1, 0}});
    const Request z = h.range_request(req::kWriteZeroes, kData + 0x100, {{0, 1, 0}});
    h.notify();
    CHECK(h.status(d) == blk_status::kUnsupp);
    CHECK(h.status(z) == blk_status::kUnsupp);
    CHECK(h.backend->log.empty());
}

// =============================================================================================
// Read-only drives

TEST_CASE("virtio-blk device: a read-only drive", "[virtio][blk][block_device]") {
    const bool via_backend = GENERATE(false, true);
    INFO((via_backend ? "read-only backend" : "read_only option"));
    // The driver acks DISCARD / WRITE_ZEROES although they were not offered (a transport
    // would refuse; the device must still refuse the requests).
    const bool force = GENERATE(false, true);
    INFO("acked regardless: " << force);
    Harness h({"ro", !via_backend, true},
              Options{.ro_backend = via_backend, .ack_force = force ? blk_feature::kDiscard | blk_feature::kWriteZeroes : 0});
    const uint64_t f = h.dev->available_features();
    CHECK((f & blk_feature::kRo) != 0);
    CHECK((f & (blk_feature::kDiscard | blk_feature::kWriteZeroes)) == 0);

    const auto before = h.backend->disk;
    h.fill_pattern(kData, 1024, 1);
    const Request w = h.request(req::kOut, 0, {R(kData, 1024)});
    const Request d = h.range_request(req::kDiscard, kData + 0x1000, {{0, 1, 0}});
    const Request z = h.range_request(req::kWriteZeroes, kData + 0x1100, {{0, 1, 1}});
    const Request r = h.request(req::kIn, 2, {W(kData + 0x2000, 512)});
    h.notify();
    CHECK(h.status(w) == blk_status::kIoErr);
    const uint8_t range_status = force ? blk_status::kIoErr : blk_status::kUnsupp;
    CHECK(h.status(d) == range_status);
    CHECK(h.status(z) == range_status);
    CHECK(h.status(r) == blk_status::kOk);
    REQUIRE(h.used_idx() == 4);
    for (uint16_t i = 0; i < 3; i++) CHECK(h.used(i).second == 1);
    CHECK(h.used(3).second == 513);
    CHECK(h.bytes(kData + 0x2000, 512) == h.backend->bytes(1024, 512));
    // Only the read reached the backend; the disk is unchanged.
    REQUIRE(h.backend->log.size() == 1);
    CHECK(h.backend->log[0].op == IoRequest::Op::Read);
    CHECK(h.backend->disk == before);
}

// =============================================================================================
// Malformed chains

TEST_CASE("virtio-blk device: malformed chains", "[virtio][blk][block_device]") {
    Harness h;
    SECTION("short header: IOERR into the status byte, no device error") {
        const uint32_t len = GENERATE(0u, 1u, 8u, 15u);
        const uint64_t st = h.new_status();
        std::vector<D> bufs;
        if (len) bufs.push_back(R(h.header(req::kIn, 0), len));
        bufs.push_back(W(kData, 512));
        bufs.push_back(W(st, 1));
        const uint16_t head = h.add_chain(bufs);
        h.notify();
        CHECK(h.mem.read_obj<uint8_t>(GuestAddress(st)) == blk_status::kIoErr);
        CHECK(h.used(0) == std::pair<uint32_t, uint32_t>{head, 1});
        CHECK(h.irq.errors.empty());
        CHECK(h.backend->log.empty());
    }
    SECTION("no writable descriptor: device error, nothing used") {
        h.add_chain({R(h.header(req::kIn, 0), 16), R(kData, 512)});
        h.notify();
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.irq.errors[0].find("status") != std::string::npos);
        CHECK(h.used_idx() == 0);
    }
    SECTION("only zero-length writable descriptors: device error") {
        const uint64_t st = h.new_status();
        h.add_chain({R(h.header(req::kIn, 0), 16), W(st, 0)});
        h.notify();
        CHECK(h.irq.errors.size() == 1);
        CHECK(h.used_idx() == 0);
        CHECK(h.mem.read_obj<uint8_t>(GuestAddress(st)) == kPoison);
    }
    SECTION("the status descriptor is device-readable: device error, data untouched") {
        h.mem.fill(GuestAddress(kData), 513, 0x5a);
        const uint64_t st = h.new_status();
        h.add_chain({R(h.header(req::kIn, 0), 16), W(kData, 512), R(st, 1)});
        h.notify();
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.used_idx() == 0);
        CHECK(h.bytes(kData, 513) == std::vector<uint8_t>(513, 0x5a));
        CHECK(h.mem.read_obj<uint8_t>(GuestAddress(st)) == kPoison);
        CHECK(h.backend->log.empty());
    }
    SECTION("a writable descriptor before the header: device error") {
        const uint64_t st = h.new_status();
        h.add_chain({W(kData, 512), R(h.header(req::kOut, 0), 16), W(st, 1)});
        h.notify();
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.mem.read_obj<uint8_t>(GuestAddress(st)) == kPoison);
    }
    SECTION("a buffer outside guest memory: device error") {
        const uint64_t st = h.new_status();
        h.add_chain({R(h.header(req::kIn, 0), 16), W(kMemSize - 100, 512), W(st, 1)});
        h.notify();
        CHECK(h.irq.errors.size() == 1);
        CHECK(h.used_idx() == 0);
        CHECK(h.mem.read_obj<uint8_t>(GuestAddress(st)) == kPoison);
    }
    SECTION("INDIRECT without the feature: device error") {
        Harness n({"n", false, true}, Options{.ack_mask = ~feature::kRingIndirectDesc});
        const Request r = n.request(req::kIn, 0, {W(kData, 512)}, /*indirect=*/true);
        n.notify();
        CHECK(n.irq.errors.size() == 1);
        CHECK(n.status(r) == kPoison);
    }
}

TEST_CASE("virtio-blk device: after a device error the queue is left alone until reset", "[virtio][blk][block_device]") {
    Harness h;
    // A good request, then a broken one, then another good one, in one kick.
    const Request good = h.request(req::kGetId, 0, {W(kData, 20)});
    h.add_chain({R(h.header(req::kIn, 0), 16), R(kData + 0x100, 512)});  // no status byte
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
    h.dev->process_completions();
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

TEST_CASE("virtio-blk device: data buffers in the wrong direction", "[virtio][blk][block_device]") {
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

// =============================================================================================
// Back-pressure, reset, destruction

TEST_CASE("virtio-blk device: a full backend is retried after completions, in order", "[virtio][blk][block_device]") {
    Harness h;
    h.backend->hold = true;
    h.backend->depth = 2;
    std::vector<Request> reqs;
    std::vector<std::vector<uint8_t>> written(6);
    for (uint64_t i = 0; i < 6; i++) {
        if (i % 2 == 0) {
            written[i] = h.fill_pattern(kData + 0x1000 * i, 512, static_cast<uint8_t>(i));
            reqs.push_back(h.request(req::kOut, 10 + i, {R(kData + 0x1000 * i, 512)}));
        } else {
            reqs.push_back(h.request(req::kIn, 10 + i - 1, {W(kData + 0x1000 * i, 512)}));  // reads the write before
        }
    }
    h.notify();
    CHECK(h.backend->held() == 2);
    CHECK(h.backend->refused >= 1);
    CHECK(h.used_idx() == 0);
    // A kick while full neither duplicates nor loses requests.
    h.notify();
    CHECK(h.backend->held() == 2);
    CHECK(h.backend->log.size() == 2);

    for (int round = 0; round < 10 && h.used_idx() < 6; round++) h.complete_held();
    REQUIRE(h.used_idx() == 6);
    REQUIRE(h.backend->log.size() == 6);
    std::set<uint64_t> tags;
    for (uint16_t i = 0; i < 6; i++) {
        INFO("request " << i);
        CHECK(h.status(reqs[i]) == blk_status::kOk);
        CHECK(h.used(i).first == reqs[i].head);  // completed in submission order
        CHECK(h.used(i).second == (i % 2 == 0 ? 1u : 513u));
        CHECK(h.backend->log[i].offset == (10 + i - i % 2) * 512ULL);
        tags.insert(h.backend->log[i].user_data);
    }
    CHECK(tags.size() == 6);
    for (uint64_t i = 1; i < 6; i += 2) CHECK(h.bytes(kData + 0x1000 * i, 512) == written[i - 1]);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: a full backend that completes inline drains the queue in one kick",
          "[virtio][blk][block_device]") {
    // Completions are ready at submit() but not reaped: the device reaps them itself and
    // goes round again instead of waiting for an event that was already consumed.
    Harness h;
    h.backend->depth = 1;
    std::vector<Request> reqs;
    for (uint64_t i = 0; i < 7; i++) reqs.push_back(h.request(req::kIn, i, {W(kData + 0x1000 * i, 512)}));
    h.notify();
    CHECK(h.used_idx() == 7);
    for (const Request& r : reqs) CHECK(h.status(r) == blk_status::kOk);
    CHECK(h.backend->refused >= 1);
    CHECK(h.backend->in_flight() == 0);
}

TEST_CASE("virtio-blk device: reset with requests in flight waits for them, then writes nothing",
          "[virtio][blk][block_device]") {
    Harness h;
    h.backend->hold = true;
    h.mem.fill(GuestAddress(kData), 0x3000, 0x11);
    std::vector<Request> reqs;
    for (uint64_t i = 0; i < 3; i++) reqs.push_back(h.request(req::kIn, i, {W(kData + 0x1000 * i, 512)}));
    h.notify();
    REQUIRE(h.backend->held() == 3);
    const size_t irqs = h.irq.used.size();

    // The backend finishes while reset() is already waiting.
    std::atomic<bool> released{false};
    const uint64_t asked = h.backend->in_flight_queries();
    std::thread worker([&, asked] {
        h.backend->wait_for_in_flight_query(asked);
        released = true;
        h.backend->release_held();
    });
    h.dev->reset();
    const bool waited = released.load();
    worker.join();
    CHECK(waited);  // reset() did not return before the requests were done
    CHECK(h.backend->in_flight() == 0);
    // Nothing was completed into the old queue: no status, no used element, no interrupt.
    for (const Request& r : reqs) CHECK(h.status(r) == kPoison);
    CHECK(h.used_idx() == 0);
    CHECK(h.irq.used.size() == irqs);
    // Late wake-ups and kicks after reset are harmless.
    h.dev->process_completions();
    h.notify();
    CHECK(h.used_idx() == 0);
    h.dev->reset();  // idempotent
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: reset drops completions the backend has ready but the device has not taken",
          "[virtio][blk][block_device]") {
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
    h.dev->process_completions();  // a late wake-up after reset is harmless
    CHECK(h.used_idx() == 0);
    h.dev->reset();  // idempotent
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: after reset the old guest memory is never touched", "[virtio][blk][block_device]") {
    auto backend = std::make_unique<FakeBlockBackend>(kSectors * 512, false);
    FakeBlockBackend* fake = backend.get();
    BlockDevice dev(std::move(backend), {"gone", false, true});
    testing::FakeInterrupt irq;
    {
        auto mem = std::make_unique<GuestMemory>(std::vector<std::pair<GuestAddress, size_t>>{{GuestAddress(0), kMemSize}});
        Queue q(kQueueSize);
        testing::RingDriver ring(*mem, q, kDesc, kRing);
        dev.activate(*mem, std::span<Queue>(&q, 1), dev.available_features() | feature::kVersion1, irq);
        fake->hold = true;
        mem->write_obj(GuestAddress(kHeaders), RequestHeaderLayout{req::kIn, 0, 0});
        ring.add({{kHeaders, 16, false}, {kData, 512, true}, {kStatus, 1, true}});
        dev.queue_notify(0);
        REQUIRE(fake->held() == 1);
        const uint64_t asked = fake->in_flight_queries();
        std::thread worker([&, asked] {
            fake->wait_for_in_flight_query(asked);
            fake->release_held();
        });
        dev.reset();
        worker.join();
        CHECK(ring.used_idx() == 0);
        // The memory and queue go away (munmap: any later access would fault).
    }
    // A stray completion and notification after that must not touch them.
    fake->hold = false;
    fake->release_held();
    dev.process_completions();
    dev.queue_notify(0);
    CHECK(fake->in_flight() == 0);
    CHECK(irq.errors.empty());
}

TEST_CASE("virtio-blk device: destruction waits for requests in flight", "[virtio][blk][block_device]") {
    GuestMemory mem({{GuestAddress(0), kMemSize}});
    Queue q(kQueueSize);
    testing::RingDriver ring(mem, q, kDesc, kRing);
    testing::FakeInterrupt irq;
    auto backend = std::make_unique<FakeBlockBackend>(kSectors * 512, false);
    FakeBlockBackend* fake = backend.get();
    fake->hold = true;
    auto dev = std::make_unique<BlockDevice>(std::move(backend), BlockDeviceOptions{"d", false, true});
    dev->activate(mem, std::span<Queue>(&q, 1), dev->available_features() | feature::kVersion1, irq);
    mem.write_obj(GuestAddress(kHeaders), RequestHeaderLayout{req::kIn, 0, 0});
    mem.write_obj(GuestAddress(kStatus), kPoison);
    ring.add({{kHeaders, 16, false}, {kData, 512, true}, {kStatus, 1, true}});
    dev->queue_notify(0);
    REQUIRE(fake->held() == 1);
    std::atomic<bool> released{false};
    const uint64_t asked = fake->in_flight_queries();
    std::thread worker([&, asked] {
        fake->wait_for_in_flight_query(asked);
        released = true;
        fake->release_held();
    });
    dev.reset();  // ~BlockDevice
    const bool waited = released.load();
    worker.join();
    CHECK(waited);
    CHECK(mem.read_obj<uint8_t>(GuestAddress(kStatus)) == kPoison);
    CHECK(ring.used_idx() == 0);
}

// =============================================================================================
// Notifications

TEST_CASE("virtio-blk device: EVENT_IDX: interrupts only when the used index passes used_event",
          "[virtio][blk][block_device]") {
    Harness h;
    REQUIRE(h.queue.event_idx_enabled());
    h.set_used_event(0);
    h.request(req::kIn, 0, {W(kData, 512)});
    h.notify();
    CHECK(h.used_idx() == 1);
    CHECK(h.irq.used.size() == 1);  // 0 in (0, 1]
    // The device asks for the next kick at the next avail index it has not seen.
    CHECK(h.avail_event() == 1);

    h.set_used_event(3);  // interrupt when used.idx goes past 3
    h.request(req::kIn, 0, {W(kData, 512)});
    h.request(req::kIn, 1, {W(kData, 512)});
    h.notify();
    CHECK(h.used_idx() == 3);
    CHECK(h.irq.used.size() == 1);  // 3 not in (1, 3]
    CHECK(h.avail_event() == 3);
    h.request(req::kIn, 2, {W(kData, 512)});
    h.notify();
    CHECK(h.used_idx() == 4);
    CHECK(h.irq.used.size() == 2);  // 3 in (3, 4]

    // With held requests the interrupt comes from process_completions().
    h.backend->hold = true;
    h.set_used_event(4);
    h.request(req::kIn, 0, {W(kData, 512)});
    h.notify();
    CHECK(h.irq.used.size() == 2);
    h.complete_held();
    CHECK(h.used_idx() == 5);
    CHECK(h.irq.used.size() == 3);
    h.set_used_event(100);
    h.request(req::kIn, 0, {W(kData, 512)});
    h.notify();
    h.complete_held();
    CHECK(h.used_idx() == 6);
    CHECK(h.irq.used.size() == 3);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: without EVENT_IDX: NO_INTERRUPT and NO_NOTIFY flags", "[virtio][blk][block_device]") {
    Harness h({"n", false, true}, Options{.ack_mask = ~feature::kRingEventIdx});
    REQUIRE_FALSE(h.queue.event_idx_enabled());
    h.set_avail_flags(kAvailFlagNoInterrupt);
    h.request(req::kIn, 0, {W(kData, 512)});
    h.notify();
    CHECK(h.used_idx() == 1);
    CHECK(h.irq.used.empty());
    CHECK((h.used_flags() & kUsedFlagNoNotify) == 0);  // kicks re-enabled after the pass
    h.set_avail_flags(0);
    h.request(req::kIn, 0, {W(kData, 512)});
    h.notify();
    CHECK(h.used_idx() == 2);
    CHECK(h.irq.used == std::vector<uint16_t>{0});

    // While the backend is full the device does not want kicks (it resumes on completions).
    h.backend->hold = true;
    h.backend->depth = 1;
    h.request(req::kIn, 0, {W(kData, 512)});
    h.request(req::kIn, 1, {W(kData + 0x1000, 512)});
    h.notify();
    CHECK((h.used_flags() & kUsedFlagNoNotify) != 0);
    for (int i = 0; i < 4 && h.used_idx() < 4; i++) h.complete_held();
    CHECK(h.used_idx() == 4);
    CHECK((h.used_flags() & kUsedFlagNoNotify) == 0);
}

// =============================================================================================
// The real backends behind the device

namespace {

using TempDisk = embervm::test::TempImage;

// Harness with a real backend: same rings, status bytes and helpers.
struct RealHarness {
    GuestMemory mem{{{GuestAddress(0), kMemSize}}};
    Queue queue{kQueueSize};
    testing::FakeInterrupt irq;
    std::unique_ptr<BlockDevice> dev;
    std::unique_ptr<testing::RingDriver> ring;
    unsigned n = 0;

    RealHarness(const std::string& path, bool ro, IoEngine engine, unsigned depth = 128) {
        dev = std::make_unique<BlockDevice>(open_block_backend(path, ro, engine, depth),
                                            BlockDeviceOptions{"real", false, true});
        ring = std::make_unique<testing::RingDriver>(mem, queue, kDesc, kRing);
        queue.set_event_idx_enabled(true);
        queue.set_indirect_enabled(true);
        dev->activate(mem, std::span<Queue>(&queue, 1), dev->available_features() | feature::kVersion1, irq);
    }
    ~RealHarness() { dev.reset(); }

    Request request(uint32_t type, uint64_t sector, std::vector<testing::Buf> data) {
        const uint64_t hdr = kHeaders + 16ULL * n;
        const uint64_t st = kStatus + 16ULL * n;
        n++;
        mem.write_obj(GuestAddress(hdr), RequestHeaderLayout{type, 0, sector});
        mem.write_obj(GuestAddress(st), kPoison);
        std::vector<testing::Buf> bufs{{hdr, 16, false}};
        bufs.insert(bufs.end(), data.begin(), data.end());
        bufs.push_back({st, 1, true});
        return {ring->add(bufs), st};
    }
    // The used length of the request with this head (completions need not be in order:
    // requests the device answers itself come before those still at the backend).
    uint32_t used_len(const Request& r) const {
        std::optional<uint32_t> len;
        for (uint16_t i = 0; i < ring->used_idx(); i++) {
            if (ring->used(i).first == r.head) {
                CHECK_FALSE(len.has_value());  // used once only
                len = ring->used(i).second;
            }
        }
        REQUIRE(len.has_value());
        return *len;
    }
    // Kicks, then waits (on the completion fd, like the event loop) until `n` used elements.
    void run(uint16_t want) {
        dev->queue_notify(0);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (ring->used_idx() < want && std::chrono::steady_clock::now() < deadline) {
            pollfd p{dev->backend_completion_fd(), POLLIN, 0};
            ::poll(&p, 1, 100);
            dev->process_completions();
        }
        REQUIRE(ring->used_idx() == want);
    }
    uint8_t status(const Request& r) const { return mem.read_obj<uint8_t>(GuestAddress(r.status)); }
    std::vector<uint8_t> bytes(uint64_t addr, size_t len) const {
        std::vector<uint8_t> v(len);
        mem.read(GuestAddress(addr), v);
        return v;
    }
};

}  // namespace

TEST_CASE("virtio-blk device: real backends on a temporary image", "[virtio][blk][block_device]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO((engine == IoEngine::Sync ? "Sync" : "Async"));
    TempDisk disk(64 * 512 + 100);  // a partial last sector is invisible
    std::vector<uint8_t> data(1536);
    std::iota(data.begin(), data.end(), uint8_t{0x40});
    {
        RealHarness h(disk.path(), false, engine);
        CHECK(h.dev->capacity_sectors() == 64);
        h.mem.write(GuestAddress(kData), data);
        const Request w = h.request(req::kOut, 7, {{kData, 100, false}, {kData + 100, 1436, false}});
        const Request f = h.request(req::kFlush, 0, {});
        h.run(2);
        CHECK(h.status(w) == blk_status::kOk);
        CHECK(h.status(f) == blk_status::kOk);

        h.mem.write_obj(GuestAddress(kData + 0x4000), SegmentLayout{20, 3, 0});
        h.mem.write_obj(GuestAddress(kData + 0x4010), SegmentLayout{30, 2, 1});
        h.mem.write_obj(GuestAddress(kData + 0x4020), SegmentLayout{40, 1, 0});
        const Request z1 = h.request(req::kWriteZeroes, 0, {{kData + 0x4000, 16, false}});
        const Request z2 = h.request(req::kWriteZeroes, 0, {{kData + 0x4010, 16, false}});
        const Request d = h.request(req::kDiscard, 0, {{kData + 0x4020, 16, false}});
        const Request r = h.request(req::kIn, 6, {{kData + 0x8000, 1000, true}, {kData + 0x9000, 1048, true}});
        const Request past = h.request(req::kIn, 63, {{kData + 0xa000, 1024, true}});
        const Request id = h.request(req::kGetId, 0, {{kData + 0xb000, 20, true}});
        h.run(8);
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
        RealHarness h(disk.path(), true, engine);
        CHECK((h.dev->available_features() & blk_feature::kRo) != 0);
        h.mem.fill(GuestAddress(kData), 512, 0x99);
        const Request w = h.request(req::kOut, 0, {{kData, 512, false}});
        const Request r = h.request(req::kIn, 7, {{kData + 0x1000, 512, true}});
        h.run(2);
        CHECK(h.status(w) == blk_status::kIoErr);
        CHECK(h.status(r) == blk_status::kOk);
        CHECK(h.bytes(kData + 0x1000, 512) == std::vector<uint8_t>(data.begin(), data.begin() + 512));
    }
    CHECK(disk.read(0, 512) == disk.original(0, 512));
}

TEST_CASE("virtio-blk device: real backends with a tiny queue depth", "[virtio][blk][block_device]") {
    // io_uring at depth 2: the device keeps running into a full backend and must resume from
    // completions (process_completions), never losing or repeating a request.
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO((engine == IoEngine::Sync ? "Sync" : "Async"));
    TempDisk disk(64 * 512);
    RealHarness h(disk.path(), false, engine, 2);
    std::vector<Request> writes, reads;
    for (uint64_t i = 0; i < 10; i++) {
        h.mem.fill(GuestAddress(kData + 0x1000 * i), 1024, static_cast<uint8_t>(0x80 + i));
        writes.push_back(h.request(req::kOut, 2 * i + 1, {{kData + 0x1000 * i, 1024, false}}));
    }
    h.run(10);
    for (uint64_t i = 0; i < 10; i++) {
        h.mem.fill(GuestAddress(kData + 0x20000 + 0x1000 * i), 1536, 0);
        reads.push_back(h.request(req::kIn, 2 * i, {{kData + 0x20000 + 0x1000 * i, 1536, true}}));
    }
    h.run(20);
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

// =============================================================================================
// Run-time backend replacement (drive update: PATCH /drives/{id} with path_on_host)

namespace {

// A fake disk of `sectors` sectors whose bytes differ from the default fake's.
std::unique_ptr<FakeBlockBackend> other_disk(uint64_t sectors, bool ro = false) {
    auto b = std::make_unique<FakeBlockBackend>(sectors * kSectorSize, ro);
    for (size_t i = 0; i < b->disk.size(); i++) b->disk[i] = static_cast<uint8_t>(0xa5 ^ (i * 7 + (i >> 9)));
    return b;
}

uint64_t config_capacity(const BlockDevice& dev) {
    std::array<uint8_t, 8> b{};
    dev.read_config(0, b);
    uint64_t v = 0;
    std::memcpy(&v, b.data(), sizeof v);
    return v;
}

class CountingIrqLine : public embervm::devices::IrqLine {
public:
    void trigger() override { ++count; }
    std::atomic<int> count{0};
};

}  // namespace

TEST_CASE("virtio-blk device: replace_backend finishes requests in flight, queued ones go to the new backend",
          "[virtio][blk][block_device][replace_backend]") {
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

    // The old backend finishes while replace_backend() waits for it.
    std::atomic<bool> released{false};
    const uint64_t asked = old_backend->in_flight_queries();
    std::thread worker([&, asked] {
        old_backend->wait_for_in_flight_query(asked);
        released = true;
        old_backend->release_held();
    });
    const bool notified = h.dev->replace_backend(std::move(next));
    const bool waited = released.load();
    worker.join();
    h.backend = new_backend;  // the old one is gone
    CHECK(notified);
    CHECK(waited);  // replace_backend() did not return before the old requests were done

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
          "[virtio][blk][block_device][replace_backend]") {
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
          "[virtio][blk][block_device][replace_backend]") {
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
          "[virtio][blk][block_device][replace_backend]") {
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
    w32(mmio::kQueueDescLow, static_cast<uint32_t>(kDesc));
    w32(mmio::kQueueDriverLow, static_cast<uint32_t>(kAvail));
    w32(mmio::kQueueDeviceLow, static_cast<uint32_t>(kUsed));
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
          "[virtio][blk][block_device][replace_backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO((engine == IoEngine::Sync ? "Sync" : "Async"));
    TempDisk a(64 * 512), b(128 * 512);
    RealHarness h(a.path(), false, engine);
    const auto open = [&](const TempDisk& d) { return open_block_backend(d.path(), false, engine); };
    CHECK_THROWS_WITH(open(a), Catch::Matchers::Contains("is locked"));  // the device holds the image

    // Writes submitted and not waited for: replace_backend() completes them into the ring.
    for (uint64_t i = 0; i < 8; i++) {
        h.mem.fill(GuestAddress(kData + 0x1000 * i), 1024, static_cast<uint8_t>(0x30 + i));
        h.request(req::kOut, 2 * i, {{kData + 0x1000 * i, 1024, false}});
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
    const Request r = h.request(req::kIn, 100, {{kData + 0x10000, 512, true}});
    h.run(9);
    CHECK(h.status(r) == blk_status::kOk);
    CHECK(h.bytes(kData + 0x10000, 512) == b.original(100 * 512, 512));

    // The same image after it grew: replace_backend cannot open it (its own lock), reopen can.
    REQUIRE(::truncate(b.path().c_str(), 256 * 512) == 0);
    CHECK(h.dev->reopen_backend([&] { return open(b); }));
    CHECK(h.irq.config == 2);
    CHECK(h.dev->capacity_sectors() == 256);
    CHECK_THROWS_WITH(open(b), Catch::Matchers::Contains("is locked"));
    const Request grown = h.request(req::kIn, 200, {{kData + 0x11000, 512, true}});
    h.mem.fill(GuestAddress(kData + 0x11000), 512, 0x77);
    h.run(10);
    CHECK(h.status(grown) == blk_status::kOk);
    CHECK(h.bytes(kData + 0x11000, 512) == std::vector<uint8_t>(512, 0));  // the new, zero-filled part

    // A reopen that fails (here: a read-only image for a writable drive) keeps the backend and
    // takes the lock back.
    CHECK_THROWS_WITH(h.dev->reopen_backend([&] { return open_block_backend(b.path(), true, engine); }),
                      Catch::Matchers::Contains("the new image is read-only"));
    CHECK_THROWS_WITH(open(b), Catch::Matchers::Contains("is locked"));
    CHECK(h.irq.config == 2);
    CHECK(h.dev->capacity_sectors() == 256);
    const Request still = h.request(req::kIn, 100, {{kData + 0x12000, 512, true}});
    h.run(11);
    CHECK(h.status(still) == blk_status::kOk);
    CHECK(h.bytes(kData + 0x12000, 512) == b.original(100 * 512, 512));
    CHECK(h.irq.errors.empty());
}
