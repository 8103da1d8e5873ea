// Tests for virtio/block/block_device: request parsing and validation, statuses, used lengths,
// features and configuration space, against hand-built rings in a test guest memory and the
// fake backend (fake_block_backend.h), plus a few cases on the real sync backend over a
// temporary file. Cases block_device_test.cpp covers have moved there.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/block/backend.h"
#include "virtio/block/block_device.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"
#include "vmm/sys/eventfd.h"

#include "fake_block_backend.h"

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using namespace embervm::virtio::block;
using embervm::virtio::testing::FakeBlockBackend;

namespace {

constexpr uint64_t kDesc = 0x1000, kAvail = 0x2000, kUsed = 0x3000;
constexpr uint64_t kHeaders = 0x8000;   // request headers, 16 bytes each
constexpr uint64_t kStatus = 0x9000;    // status bytes, 16 apart
constexpr uint64_t kData = 0x10000;     // data buffers
constexpr uint64_t kMemSize = 0x100000;  // 1 MiB of guest memory
constexpr uint64_t kDiskSectors = 64;
constexpr uint16_t kQueueSz = 16;

constexpr uint16_t R = 0;
constexpr uint16_t W = desc_flags::kWrite;

class FakeInterrupt : public DeviceInterrupt {
public:
    void signal_used_queue(uint16_t) override { ++used; }
    void signal_config_change() override { ++config; }
    void device_error(std::string_view reason) override {
        errors.emplace_back(reason);
        broken = true;
    }
    // DEVICE_NEEDS_RESET, as the transport keeps it (tests that reset the device clear it).
    bool needs_reset() const override { return broken; }
    bool broken = false;
    int used = 0, config = 0;
    std::vector<std::string> errors;
};

struct RequestHeaderForTest {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

struct Buf {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;  // R or W (NEXT is added by the harness)
};

// A block device in front of a 16-entry queue in 1 MiB of guest memory.
struct Harness {
    GuestMemory mem{{{GuestAddress(0), kMemSize}}};
    Queue queue{kQueueSize};
    FakeInterrupt irq;
    FakeBlockBackend* backend;
    std::unique_ptr<BlockDevice> dev;
    uint16_t next_desc = 0;
    uint16_t avail_idx = 0;
    uint16_t requests = 0;  // used to spread headers and status bytes

    explicit Harness(BlockDeviceOptions opts = {"disk0", false, true}, bool ro_backend = false,
                     uint64_t features = ~uint64_t{0}) {
        auto b = std::make_unique<FakeBlockBackend>(kDiskSectors * kSectorSize, ro_backend);
        backend = b.get();
        dev = std::make_unique<BlockDevice>(std::move(b), opts);
        queue.set_size(kQueueSz);
        queue.set_desc_table(GuestAddress(kDesc));
        queue.set_avail_ring(GuestAddress(kAvail));
        queue.set_used_ring(GuestAddress(kUsed));
        queue.set_indirect_enabled(true);
        const uint64_t acked = (dev->available_features() | feature::kVersion1) & features;
        queue.set_event_idx_enabled((acked & feature::kRingEventIdx) != 0);
        queue.set_ready(true);
        dev->activate(mem, std::span<Queue>(&queue, 1), acked, irq);
    }

    // Writes a chain of `bufs` (NEXT flags added) and makes it available; returns the head.
    uint16_t add_chain(const std::vector<Buf>& bufs) {
        const uint16_t head = next_desc;
        for (size_t i = 0; i < bufs.size(); i++) {
            const uint16_t idx = static_cast<uint16_t>((head + i) % kQueueSz);
            const bool more = i + 1 < bufs.size();
            mem.write_obj(GuestAddress(kDesc + 16ULL * idx),
                          Descriptor{bufs[i].addr, bufs[i].len,
                                     static_cast<uint16_t>(bufs[i].flags | (more ? desc_flags::kNext : 0)),
                                     static_cast<uint16_t>((idx + 1) % kQueueSz)});
        }
        next_desc = static_cast<uint16_t>((head + bufs.size()) % kQueueSz);
        mem.write_obj<uint16_t>(GuestAddress(kAvail + 4 + 2ULL * (avail_idx % kQueueSz)), head);
        avail_idx++;
        mem.write_obj<uint16_t>(GuestAddress(kAvail + 2), avail_idx);
        return head;
    }

    uint64_t header(uint32_t type, uint64_t sector) {
        const uint64_t addr = kHeaders + 16ULL * (requests % 64);
        mem.write_obj(addr_of(addr), type);
        mem.write_obj(addr_of(addr + 4), uint32_t{0});
        mem.write_obj(addr_of(addr + 8), sector);
        return addr;
    }
    uint64_t status_addr() {
        const uint64_t addr = kStatus + 16ULL * (requests % 64);
        mem.write_obj(addr_of(addr), uint8_t{0xee});
        return addr;
    }
    static GuestAddress addr_of(uint64_t a) { return GuestAddress(a); }

    // header + data buffers + status byte, one request; returns the status byte's address.
    uint64_t request(uint32_t type, uint64_t sector, std::vector<Buf> data) {
        std::vector<Buf> bufs{{header(type, sector), 16, R}};
        bufs.insert(bufs.end(), data.begin(), data.end());
        const uint64_t st = status_addr();
        bufs.push_back({st, 1, W});
        add_chain(bufs);
        requests++;
        return st;
    }
    void notify() { dev->queue_notify(0); }

    uint8_t status_at(uint64_t addr) const { return mem.read_obj<uint8_t>(GuestAddress(addr)); }
    uint16_t used_idx() const { return mem.read_obj<uint16_t>(GuestAddress(kUsed + 2)); }
    std::pair<uint32_t, uint32_t> used(uint16_t slot) const {
        return {mem.read_obj<uint32_t>(GuestAddress(kUsed + 4 + 8ULL * (slot % kQueueSz))),
                mem.read_obj<uint32_t>(GuestAddress(kUsed + 8 + 8ULL * (slot % kQueueSz)))};
    }
    std::vector<uint8_t> bytes(uint64_t addr, size_t n) const {
        std::vector<uint8_t> v(n);
        mem.read(GuestAddress(addr), v);
        return v;
    }
    void fill(uint64_t addr, size_t n, uint8_t first) {
        std::vector<uint8_t> v(n);
        std::iota(v.begin(), v.end(), first);
        mem.write(GuestAddress(addr), v);
    }
    uint64_t cfg64(uint64_t off) const {
        uint64_t v = 0;
        dev->read_config(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 8));
        return v;
    }
    uint32_t cfg32(uint64_t off) const {
        uint32_t v = 0;
        dev->read_config(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
        return v;
    }
};

std::vector<uint8_t> disk_bytes(const FakeBlockBackend& b, uint64_t offset, size_t n) {
    return {b.disk.begin() + static_cast<long>(offset), b.disk.begin() + static_cast<long>(offset + n)};
}

}  // namespace

TEST_CASE("blk: features and configuration space", "[virtio][blk]") {
    SECTION("writable drive with a write-back cache") {
        Harness h({"disk0", false, true});
        const uint64_t f = h.dev->available_features();
        CHECK((f & blk_feature::kFlush) != 0);
        CHECK((f & blk_feature::kDiscard) != 0);
        CHECK((f & blk_feature::kWriteZeroes) != 0);
        CHECK((f & blk_feature::kRo) == 0);
        CHECK((f & (blk_feature::kSegMax | blk_feature::kBlkSize)) == (blk_feature::kSegMax | blk_feature::kBlkSize));
        CHECK((f & (feature::kRingEventIdx | feature::kRingIndirectDesc)) ==
              (feature::kRingEventIdx | feature::kRingIndirectDesc));
        CHECK(h.cfg64(0) == kDiskSectors);        // capacity
        CHECK(h.cfg32(12) == kQueueSize - 2);     // seg_max
        CHECK(h.cfg32(20) == 512);                // blk_size
        CHECK(h.cfg32(36) == kMaxDiscardSectors);  // max_discard_sectors
        CHECK(h.cfg32(40) == 1);                  // max_discard_seg
        CHECK(h.cfg32(44) == 1);                  // discard_sector_alignment
        CHECK(h.cfg32(48) == kMaxDiscardSectors);  // max_write_zeroes_sectors
        CHECK(h.cfg32(52) == 1);                  // max_write_zeroes_seg
        uint8_t may_unmap = 0;
        h.dev->read_config(56, std::span<uint8_t>(&may_unmap, 1));
        CHECK(may_unmap == 1);
        // Byte-wise reads agree with wide ones; beyond the config space: zeros.
        uint8_t b[8];
        for (int i = 0; i < 8; i++) h.dev->read_config(static_cast<uint64_t>(i), std::span<uint8_t>(&b[i], 1));
        uint64_t cap = 0;
        std::memcpy(&cap, b, 8);
        CHECK(cap == kDiskSectors);
        CHECK(h.cfg32(0x100) == 0);
        // Writes are ignored (no CONFIG_WCE).
        const uint64_t junk = ~uint64_t{0};
        h.dev->write_config(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&junk), 8));
        CHECK(h.cfg64(0) == kDiskSectors);
    }
    SECTION("cache Unsafe: no FLUSH") {
        Harness h({"disk0", false, false});
        CHECK((h.dev->available_features() & blk_feature::kFlush) == 0);
    }
    SECTION("read-only drive (option or read-only backend): RO, no DISCARD / WRITE_ZEROES") {
        for (const bool via_backend : {false, true}) {
            Harness h({"disk0", !via_backend, true}, via_backend);
            const uint64_t f = h.dev->available_features();
            CHECK((f & blk_feature::kRo) != 0);
            CHECK((f & (blk_feature::kDiscard | blk_feature::kWriteZeroes)) == 0);
        }
    }
}

TEST_CASE("blk: IN and OUT round trip over several descriptors", "[virtio][blk]") {
    Harness h;
    // Write sectors 2..4 from three descriptors splitting sectors at odd offsets.
    h.fill(kData, 3 * 512, 0x40);
    const uint64_t st_w = h.request(req::kOut, 2, {{kData, 100, R}, {kData + 100, 1000, R}, {kData + 1100, 436, R}});
    h.notify();
    CHECK(h.status_at(st_w) == blk_status::kOk);
    REQUIRE(h.used_idx() == 1);
    CHECK(h.used(0).second == 1);  // OUT: only the status byte was written
    CHECK(disk_bytes(*h.backend, 2 * 512, 3 * 512) == h.bytes(kData, 3 * 512));
    CHECK(h.backend->log.back().offset == 2 * 512);

    // Read them back into two other buffers.
    const uint64_t st_r = h.request(req::kIn, 2, {{kData + 0x4000, 1, W}, {kData + 0x5000, 3 * 512 - 1, W}});
    h.notify();
    CHECK(h.status_at(st_r) == blk_status::kOk);
    REQUIRE(h.used_idx() == 2);
    CHECK(h.used(1).second == 3 * 512 + 1);  // data + status
    std::vector<uint8_t> got = h.bytes(kData + 0x4000, 1);
    const auto rest = h.bytes(kData + 0x5000, 3 * 512 - 1);
    got.insert(got.end(), rest.begin(), rest.end());
    CHECK(got == h.bytes(kData, 3 * 512));
    CHECK(h.irq.used >= 1);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("blk: header and data may share descriptors", "[virtio][blk]") {
    Harness h;
    // OUT: header and one sector in one readable descriptor.
    const uint64_t buf = kData + 0x2000;
    h.mem.write_obj(GuestAddress(buf), req::kOut);
    h.mem.write_obj(GuestAddress(buf + 4), uint32_t{0});
    h.mem.write_obj(GuestAddress(buf + 8), uint64_t{5});
    h.fill(buf + 16, 512, 0x11);
    const uint64_t st = h.status_addr();
    h.add_chain({{buf, 16 + 512, R}, {st, 1, W}});
    h.notify();
    CHECK(h.status_at(st) == blk_status::kOk);
    CHECK(disk_bytes(*h.backend, 5 * 512, 512) == h.bytes(buf + 16, 512));

    // IN: data and status byte in one writable descriptor.
    const uint64_t hdr = h.header(req::kIn, 5);
    const uint64_t in = kData + 0x6000;
    h.add_chain({{hdr, 16, R}, {in, 513, W}});
    h.notify();
    CHECK(h.status_at(in + 512) == blk_status::kOk);
    CHECK(h.bytes(in, 512) == h.bytes(buf + 16, 512));
    CHECK(h.used(1).second == 513);
}

TEST_CASE("blk: FLUSH, GET_ID and unknown types", "[virtio][blk]") {
    SECTION("FLUSH with the feature goes to the backend") {
        Harness h({"disk0", false, true});
        const uint64_t st = h.request(req::kFlush, 0, {});
        h.notify();
        CHECK(h.status_at(st) == blk_status::kOk);
        REQUIRE(h.backend->log.size() == 1);
        CHECK(h.backend->log[0].op == IoRequest::Op::Flush);
    }
    SECTION("FLUSH not negotiated: UNSUPP") {
        Harness h({"disk0", false, false});
        const uint64_t st = h.request(req::kFlush, 0, {});
        h.notify();
        CHECK(h.status_at(st) == blk_status::kUnsupp);
        CHECK(h.backend->log.empty());
    }
    SECTION("GET_ID: 20 bytes, NUL-padded; a shorter buffer gets a prefix") {
        Harness h({"rootfs", false, true});
        h.mem.fill(GuestAddress(kData), 32, 0xaa);
        const uint64_t st = h.request(req::kGetId, 0, {{kData, 20, W}});
        h.notify();
        CHECK(h.status_at(st) == blk_status::kOk);
        std::vector<uint8_t> want(20, 0);
        std::memcpy(want.data(), "rootfs", 6);
        CHECK(h.bytes(kData, 20) == want);
        CHECK(h.used(0).second == 21);

        const uint64_t st2 = h.request(req::kGetId, 0, {{kData + 64, 4, W}});
        h.notify();
        CHECK(h.status_at(st2) == blk_status::kOk);
        CHECK(h.bytes(kData + 64, 4) == std::vector<uint8_t>{'r', 'o', 'o', 't'});
        CHECK(h.used(1).second == 5);
    }
    SECTION("GET_ID truncates a long drive id to 20 bytes") {
        Harness h({"abcdefghijklmnopqrstuvwxyz", false, true});
        const uint64_t st = h.request(req::kGetId, 0, {{kData, 32, W}});
        h.notify();
        CHECK(h.status_at(st) == blk_status::kOk);
        const auto got = h.bytes(kData, 20);
        CHECK(std::string(got.begin(), got.end()) == "abcdefghijklmnopqrst");
    }
    SECTION("unknown types: UNSUPP") {
        Harness h;
        for (const uint32_t type : {2u, 3u, 7u, 9u, 15u, 0xffffffffu}) {
            const uint64_t st = h.request(type, 0, {{kData, 512, W}});
            h.notify();
            CHECK(h.status_at(st) == blk_status::kUnsupp);
        }
        CHECK(h.backend->log.empty());
        CHECK(h.irq.errors.empty());
    }
}

TEST_CASE("blk: DISCARD and WRITE_ZEROES segments", "[virtio][blk]") {
    Harness h;
    const auto segment = [&](uint64_t addr, uint64_t sector, uint32_t n, uint32_t flags) {
        h.mem.write_obj(GuestAddress(addr), sector);
        h.mem.write_obj(GuestAddress(addr + 8), n);
        h.mem.write_obj(GuestAddress(addr + 12), flags);
    };
    SECTION("WRITE_ZEROES with unmap zeroes the range") {
        segment(kData, 4, 3, 1);
        const uint64_t st = h.request(req::kWriteZeroes, 0, {{kData, 16, R}});
        h.notify();
        CHECK(h.status_at(st) == blk_status::kOk);
        REQUIRE(h.backend->log.size() == 1);
        CHECK(h.backend->log[0].op == IoRequest::Op::WriteZeroes);
        CHECK(h.backend->log[0].offset == 4 * 512);
        CHECK(h.backend->log[0].length == 3 * 512);
        CHECK(h.backend->log[0].unmap);
        CHECK(disk_bytes(*h.backend, 4 * 512, 3 * 512) == std::vector<uint8_t>(3 * 512, 0));
        CHECK(h.backend->disk[7 * 512] != 0);  // the sector after is untouched
    }
    SECTION("DISCARD") {
        segment(kData, 0, 2, 0);
        const uint64_t st = h.request(req::kDiscard, 0, {{kData, 16, R}});
        h.notify();
        CHECK(h.status_at(st) == blk_status::kOk);
        REQUIRE(h.backend->log.size() == 1);
        CHECK(h.backend->log[0].op == IoRequest::Op::Discard);
        CHECK_FALSE(h.backend->log[0].unmap);
    }
    SECTION("DISCARD with the unmap flag or unknown flags: UNSUPP") {
        segment(kData, 0, 2, 1);
        const uint64_t st = h.request(req::kDiscard, 0, {{kData, 16, R}});
        segment(kData + 16, 0, 2, 2);
        const uint64_t st2 = h.request(req::kWriteZeroes, 0, {{kData + 16, 16, R}});
        h.notify();
        CHECK(h.status_at(st) == blk_status::kUnsupp);
        CHECK(h.status_at(st2) == blk_status::kUnsupp);
        CHECK(h.backend->log.empty());
    }
    SECTION("two segments (max_discard_seg is 1): UNSUPP; a short segment: IOERR") {
        segment(kData, 0, 1, 0);
        segment(kData + 16, 2, 1, 0);
        const uint64_t st = h.request(req::kDiscard, 0, {{kData, 32, R}});
        const uint64_t st2 = h.request(req::kDiscard, 0, {{kData, 15, R}});
        h.notify();
        CHECK(h.status_at(st) == blk_status::kUnsupp);
        CHECK(h.status_at(st2) == blk_status::kIoErr);
        CHECK(h.backend->log.empty());
    }
    SECTION("out of range or too large: IOERR") {
        segment(kData, kDiskSectors - 1, 2, 0);
        const uint64_t st = h.request(req::kDiscard, 0, {{kData, 16, R}});
        segment(kData + 16, 0, kMaxDiscardSectors + 1, 0);
        const uint64_t st2 = h.request(req::kWriteZeroes, 0, {{kData + 16, 16, R}});
        h.notify();
        CHECK(h.status_at(st) == blk_status::kIoErr);
        CHECK(h.status_at(st2) == blk_status::kIoErr);
        CHECK(h.backend->log.empty());
    }
    SECTION("not negotiated: UNSUPP") {
        Harness n({"disk0", false, true}, false, ~(blk_feature::kDiscard | blk_feature::kWriteZeroes));
        n.mem.write_obj(GuestAddress(kData), uint64_t{0});
        n.mem.write_obj(GuestAddress(kData + 8), uint64_t{1});
        const uint64_t st = n.request(req::kDiscard, 0, {{kData, 16, R}});
        const uint64_t st2 = n.request(req::kWriteZeroes, 0, {{kData, 16, R}});
        n.notify();
        CHECK(n.status_at(st) == blk_status::kUnsupp);
        CHECK(n.status_at(st2) == blk_status::kUnsupp);
    }
    CHECK(h.irq.errors.empty());
}

TEST_CASE("blk: malformed requests", "[virtio][blk]") {
    Harness h;
    SECTION("no writable descriptor (no status byte): device error") {
        h.add_chain({{h.header(req::kIn, 0), 16, R}, {kData, 512, R}});
        h.notify();
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.irq.errors[0].find("status") != std::string::npos);
        CHECK(h.used_idx() == 0);
    }
    SECTION("a writable descriptor before a readable one: device error") {
        const uint64_t st = h.status_addr();
        h.add_chain({{kData, 512, W}, {h.header(req::kOut, 0), 16, R}, {st, 1, W}});
        h.notify();
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.status_at(st) == 0xee);  // untouched
    }
    SECTION("short header: IOERR, status written") {
        const uint64_t st = h.status_addr();
        h.add_chain({{h.header(req::kIn, 0), 15, R}, {st, 1, W}});
        h.notify();
        CHECK(h.status_at(st) == blk_status::kIoErr);
        CHECK(h.irq.errors.empty());
    }
    SECTION("IN whose data buffer is device-readable: nothing to read into, no I/O") {
        // The readable bytes after the header are not data for IN: a 0-byte read, OK.
        const uint64_t st = h.status_addr();
        h.add_chain({{h.header(req::kIn, 0), 16, R}, {kData, 512, R}, {st, 1, W}});
        h.notify();
        CHECK(h.status_at(st) == blk_status::kOk);
        CHECK(h.used(0).second == 1);
        CHECK(h.backend->log.empty());
        CHECK(h.irq.errors.empty());
    }
    SECTION("descriptor outside guest memory: device error, no used element") {
        const uint64_t st = h.status_addr();
        h.add_chain({{h.header(req::kIn, 0), 16, R}, {kMemSize - 256, 512, W}, {st, 1, W}});
        h.notify();
        CHECK(h.irq.errors.size() == 1);
        CHECK(h.used_idx() == 0);
        CHECK(h.backend->log.empty());
    }
    SECTION("after a device error the queue is left alone until reset") {
        h.add_chain({{h.header(req::kIn, 0), 16, R}, {kData, 512, R}});
        h.notify();
        REQUIRE(h.irq.errors.size() == 1);
        const uint64_t st = h.request(req::kIn, 0, {{kData, 512, W}});
        h.notify();
        CHECK(h.status_at(st) == 0xee);
        CHECK(h.irq.errors.size() == 1);
    }
}

TEST_CASE("blk: EVENT_IDX suppresses interrupts the driver did not ask for", "[virtio][blk]") {
    Harness h;
    REQUIRE(h.queue.event_idx_enabled());
    // The first completion always interrupts (nothing signalled yet).
    h.request(req::kIn, 0, {{kData, 512, W}});
    h.notify();
    CHECK(h.irq.used == 1);
    // used_event = 5: the driver wants an interrupt once the used index passes 5.
    h.mem.write_obj<uint16_t>(GuestAddress(kAvail + 4 + 2ULL * kQueueSz), 5);
    for (int i = 0; i < 2; i++) h.request(req::kIn, 0, {{kData, 512, W}});
    h.notify();
    CHECK(h.used_idx() == 3);
    CHECK(h.irq.used == 1);
    for (int i = 0; i < 3; i++) h.request(req::kIn, 0, {{kData, 512, W}});
    h.notify();
    CHECK(h.used_idx() == 6);
    CHECK(h.irq.used == 2);
}

TEST_CASE("blk: the real sync backend behind the device", "[virtio][blk]") {
    char path[] = "/tmp/embervm-blk-dev-XXXXXX";
    const int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    std::vector<uint8_t> content(16 * 512);
    std::iota(content.begin(), content.end(), uint8_t{1});
    REQUIRE(::pwrite(fd, content.data(), content.size(), 0) == static_cast<ssize_t>(content.size()));
    ::close(fd);

    GuestMemory mem({{GuestAddress(0), kMemSize}});
    Queue queue(kQueueSize);
    queue.set_size(kQueueSz);
    queue.set_desc_table(GuestAddress(kDesc));
    queue.set_avail_ring(GuestAddress(kAvail));
    queue.set_used_ring(GuestAddress(kUsed));
    queue.set_ready(true);
    FakeInterrupt irq;
    {
        BlockDevice dev(open_block_backend(path, false, IoEngine::Sync), {"real", false, true});
        CHECK(dev.capacity_sectors() == 16);
        dev.activate(mem, std::span<Queue>(&queue, 1), dev.available_features() | feature::kVersion1, irq);
        // OUT sector 3 from guest memory, FLUSH, IN sector 3 elsewhere.
        const auto put_desc = [&](uint16_t i, uint64_t a, uint32_t l, uint16_t f, uint16_t n) {
            mem.write_obj(GuestAddress(kDesc + 16ULL * i), Descriptor{a, l, f, n});
        };
        const uint16_t NX = desc_flags::kNext;
        mem.write_obj(GuestAddress(kHeaders), RequestHeaderForTest{req::kOut, 0, 3});
        mem.fill(GuestAddress(kData), 512, 0x5a);
        put_desc(0, kHeaders, 16, NX, 1);
        put_desc(1, kData, 512, NX, 2);
        put_desc(2, kStatus, 1, static_cast<uint16_t>(W), 0);
        mem.write_obj(GuestAddress(kHeaders + 16), RequestHeaderForTest{req::kFlush, 0, 0});
        put_desc(3, kHeaders + 16, 16, NX, 4);
        put_desc(4, kStatus + 16, 1, static_cast<uint16_t>(W), 0);
        mem.write_obj(GuestAddress(kHeaders + 32), RequestHeaderForTest{req::kIn, 0, 3});
        put_desc(5, kHeaders + 32, 16, NX, 6);
        put_desc(6, kData + 0x1000, 512, static_cast<uint16_t>(W | NX), 7);
        put_desc(7, kStatus + 32, 1, static_cast<uint16_t>(W), 0);
        const uint16_t heads[3] = {0, 3, 5};
        for (uint16_t i = 0; i < 3; i++) mem.write_obj<uint16_t>(GuestAddress(kAvail + 4 + 2ULL * i), heads[i]);
        mem.write_obj<uint16_t>(GuestAddress(kAvail + 2), 3);
        dev.queue_notify(0);
        dev.process_completions();
        CHECK(mem.read_obj<uint16_t>(GuestAddress(kUsed + 2)) == 3);
        for (int i = 0; i < 3; i++) {
            INFO("request " << i);
            CHECK(mem.read_obj<uint8_t>(GuestAddress(kStatus + 16ULL * i)) == blk_status::kOk);
        }
        std::vector<uint8_t> back(512);
        mem.read(GuestAddress(kData + 0x1000), back);
        CHECK(back == std::vector<uint8_t>(512, 0x5a));
        dev.reset();
    }
    // The file has the data.
    std::vector<uint8_t> file(512);
    const int rfd = ::open(path, O_RDONLY);
    REQUIRE(rfd >= 0);
    REQUIRE(::pread(rfd, file.data(), 512, 3 * 512) == 512);
    ::close(rfd);
    ::unlink(path);
    CHECK(file == std::vector<uint8_t>(512, 0x5a));
}
