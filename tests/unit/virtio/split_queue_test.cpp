// Tests for virtio/queue: the split virtqueue against hand-built rings in a small guest
// memory: chains, Reader/Writer, indirect tables, notification suppression (incl. the event
// index across the 16-bit wrap) and every malformed case a driver can produce.
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <utility>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_split_queue_test {

using Catch::Matchers::Contains;
using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using embervm::virtio::Descriptor;
using embervm::virtio::Queue;
using embervm::virtio::QueueError;
using embervm::virtio::vring_need_event;
namespace desc_flags = embervm::virtio::desc_flags;

namespace {

constexpr uint16_t R = 0;  // device-readable, no flags
constexpr uint16_t N = desc_flags::kNext;
constexpr uint16_t W = desc_flags::kWrite;
constexpr uint16_t I = desc_flags::kIndirect;

constexpr uint64_t kDescAddr = 0x1000;
constexpr uint64_t kAvailAddr = 0x2000;
constexpr uint64_t kUsedAddr = 0x3000;
constexpr uint64_t kTableAddr = 0x4000;  // indirect tables

// Two adjacent 64 KiB regions: [0, 0x10000) and [0x10000, 0x20000).
std::vector<std::pair<GuestAddress, size_t>> two_regions() {
    return {{GuestAddress(0), 0x10000}, {GuestAddress(0x10000), 0x10000}};
}

// A queue over rings at fixed addresses, plus the driver's side of the rings.
struct TestRing {
    GuestMemory mem;
    Queue queue;
    uint16_t avail_idx = 0;

    explicit TestRing(uint16_t size = 16, std::vector<std::pair<GuestAddress, size_t>> ranges = two_regions())
        : mem(ranges), queue(256) {
        queue.set_size(size);
        queue.set_desc_table(GuestAddress(kDescAddr));
        queue.set_avail_ring(GuestAddress(kAvailAddr));
        queue.set_used_ring(GuestAddress(kUsedAddr));
        queue.set_indirect_enabled(true);
        queue.set_ready(true);
    }

    void desc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags = R, uint16_t next = 0) {
        table_desc(kDescAddr, index, addr, len, flags, next);
    }
    void table_desc(uint64_t table, uint16_t index, uint64_t addr, uint32_t len, uint16_t flags = R,
                    uint16_t next = 0) {
        mem.write_obj(GuestAddress(table + 16ULL * index), Descriptor{addr, len, flags, next});
    }
    // Driver makes chain `head` available.
    void publish(uint16_t head) {
        mem.write_obj<uint16_t>(GuestAddress(kAvailAddr + 4 + 2ULL * (avail_idx % queue.size())), head);
        set_avail_idx(static_cast<uint16_t>(avail_idx + 1));
    }
    void set_avail_idx(uint16_t idx) {
        avail_idx = idx;
        mem.write_obj<uint16_t>(GuestAddress(kAvailAddr + 2), idx);
    }
    void set_avail_flags(uint16_t flags) { mem.write_obj<uint16_t>(GuestAddress(kAvailAddr), flags); }
    void set_used_event(uint16_t v) {
        mem.write_obj<uint16_t>(GuestAddress(kAvailAddr + 4 + 2ULL * queue.size()), v);
    }
    uint16_t used_flags() const { return mem.read_obj<uint16_t>(GuestAddress(kUsedAddr)); }
    uint16_t used_idx() const { return mem.read_obj<uint16_t>(GuestAddress(kUsedAddr + 2)); }
    uint16_t avail_event() const {
        return mem.read_obj<uint16_t>(GuestAddress(kUsedAddr + 4 + 8ULL * queue.size()));
    }
    std::pair<uint32_t, uint32_t> used_elem(uint16_t slot) const {
        return {mem.read_obj<uint32_t>(GuestAddress(kUsedAddr + 4 + 8ULL * slot)),
                mem.read_obj<uint32_t>(GuestAddress(kUsedAddr + 8 + 8ULL * slot))};
    }
};

std::vector<uint8_t> iota_bytes(size_t n, uint8_t first = 0) {
    std::vector<uint8_t> v(n);
    std::iota(v.begin(), v.end(), first);
    return v;
}

}  // namespace

TEST_CASE("queue construction rejects impossible maximum sizes", "[virtio]") {
    CHECK_THROWS_AS(Queue(0), std::invalid_argument);
    CHECK_THROWS_AS(Queue(3), std::invalid_argument);
    CHECK_THROWS_AS(Queue(65535), std::invalid_argument);
    CHECK(Queue(32768).max_size() == 32768);
    CHECK(Queue(256).size() == 256);
    CHECK_FALSE(Queue(256).ready());
}

TEST_CASE("queue layout validation: size, alignment, rings inside memory", "[virtio]") {
    TestRing r;
    Queue& q = r.queue;
    CHECK(q.is_valid(r.mem));

    SECTION("size") {
        q.set_size(0);
        CHECK_THAT(q.validate(r.mem).value_or(""), Contains("size is 0"));
        q.set_size(3);
        CHECK_THAT(q.validate(r.mem).value_or(""), Contains("not a power of two"));
        q.set_size(512);
        CHECK_THAT(q.validate(r.mem).value_or(""), Contains("exceeds the maximum"));
        q.set_size(256);
        CHECK(q.is_valid(r.mem));
        q.set_size(1);
        CHECK(q.is_valid(r.mem));
    }
    SECTION("alignment") {
        q.set_desc_table(GuestAddress(kDescAddr + 8));
        CHECK_THAT(q.validate(r.mem).value_or(""), Contains("descriptor table at 0x1008 is not 16-byte aligned"));
        q.set_desc_table(GuestAddress(kDescAddr));
        q.set_avail_ring(GuestAddress(kAvailAddr + 1));
        CHECK_THAT(q.validate(r.mem).value_or(""), Contains("available ring"));
        q.set_avail_ring(GuestAddress(kAvailAddr));
        q.set_used_ring(GuestAddress(kUsedAddr + 2));
        CHECK_THAT(q.validate(r.mem).value_or(""), Contains("used ring"));
        q.set_used_ring(GuestAddress(kUsedAddr));
        CHECK(q.is_valid(r.mem));
    }
    SECTION("rings must lie wholly inside guest memory, event fields included") {
        // Descriptor table of 16 * 16 bytes ending 0x10 past the end of memory.
        q.set_desc_table(GuestAddress(0x20000 - 0x100 + 0x10));
        CHECK_THAT(q.validate(r.mem).value_or(""), Contains("outside guest memory"));
        q.set_desc_table(GuestAddress(0x20000 - 0x100));
        CHECK(q.is_valid(r.mem));
        // Avail ring: flags+idx+16 entries fit, used_event (2 more bytes) does not.
        q.set_avail_ring(GuestAddress(0x20000 - (4 + 2 * 16)));
        CHECK_THAT(q.validate(r.mem).value_or(""), Contains("available ring"));
        q.set_avail_ring(GuestAddress(0x20000 - (4 + 2 * 16 + 2)));
        CHECK(q.is_valid(r.mem));
        // Used ring: avail_event just outside.
        q.set_used_ring(GuestAddress(0x20000 - (4 + 8 * 16)));
        CHECK_THAT(q.validate(r.mem).value_or(""), Contains("used ring"));
        q.set_used_ring(GuestAddress(0x20000 - (4 + 8 * 16 + 4)));
        CHECK(q.is_valid(r.mem));
        // Addresses that overflow 64 bits.
        q.set_desc_table(GuestAddress(0xfffffffffffff000ULL));
        CHECK_THAT(q.validate(r.mem).value_or(""), Contains("descriptor table"));
    }
    SECTION("rings spanning two adjacent regions are fine") {
        q.set_desc_table(GuestAddress(0x10000 - 0x80));
        CHECK(q.is_valid(r.mem));
    }
}

TEST_CASE("a chain splits into readable and writable buffers and is returned as used", "[virtio]") {
    TestRing r;
    r.desc(0, 0x8000, 16, R | N, 1);
    r.desc(1, 0x8100, 32, R | N, 2);
    r.desc(2, 0x9000, 64, W);
    r.desc(5, 0x9800, 8, W);
    CHECK_FALSE(r.queue.has_available(r.mem));
    CHECK_FALSE(r.queue.pop_available(r.mem).has_value());
    r.publish(0);
    r.publish(5);
    CHECK(r.queue.has_available(r.mem));

    auto chain = r.queue.pop_available(r.mem);
    REQUIRE(chain.has_value());
    CHECK(chain->head_index() == 0);
    REQUIRE(chain->readable().size() == 2);
    CHECK(chain->readable()[0].addr == 0x8000);
    CHECK(chain->readable()[1].len == 32);
    REQUIRE(chain->writable().size() == 1);
    CHECK(chain->writable()[0].addr == 0x9000);
    CHECK(chain->readable_len() == 48);
    CHECK(chain->writable_len() == 64);
    CHECK(chain->descriptors().size() == 3);
    CHECK_FALSE(chain->has_write_before_read());

    auto second = r.queue.pop_available(r.mem);
    REQUIRE(second.has_value());
    CHECK(second->head_index() == 5);
    CHECK(second->readable().empty());
    CHECK(second->writable_len() == 8);
    CHECK_FALSE(r.queue.pop_available(r.mem).has_value());
    CHECK(r.queue.next_avail() == 2);

    r.queue.add_used(r.mem, 5, 3);
    CHECK(r.used_idx() == 1);
    CHECK(r.used_elem(0) == std::pair<uint32_t, uint32_t>{5, 3});
    r.queue.add_used(r.mem, chain->head_index(), 64);
    CHECK(r.used_idx() == 2);
    CHECK(r.used_elem(1) == std::pair<uint32_t, uint32_t>{0, 64});
    CHECK(r.queue.next_used() == 2);
    CHECK_THROWS_AS(r.queue.add_used(r.mem, 16, 0), QueueError);
    CHECK(r.used_idx() == 2);
}

TEST_CASE("a chain may use exactly queue-size descriptors", "[virtio]") {
    TestRing r(4);
    r.desc(0, 0x8000, 1, R | N, 1);
    r.desc(1, 0x8001, 1, R | N, 2);
    r.desc(2, 0x8002, 1, R | N, 3);
    r.desc(3, 0x9000, 1, W);
    r.publish(0);
    auto chain = r.queue.pop_available(r.mem);
    REQUIRE(chain.has_value());
    CHECK(chain->descriptors().size() == 4);
}

TEST_CASE("Reader and Writer copy across buffers in order, bounded by their lengths", "[virtio]") {
    TestRing r;
    r.mem.write(GuestAddress(0x8000), iota_bytes(3, 0));
    r.mem.write(GuestAddress(0x8100), iota_bytes(5, 3));
    r.mem.write(GuestAddress(0x8200), iota_bytes(8, 8));
    r.desc(0, 0x8000, 3, R | N, 1);
    r.desc(1, 0x8100, 5, R | N, 2);
    r.desc(2, 0x8200, 8, R | N, 3);
    r.desc(3, 0x9000, 4, W | N, 4);
    r.desc(4, 0x9100, 0, W | N, 6);  // zero-length buffers are skipped
    r.desc(6, 0x9200, 8, W);
    r.publish(0);
    auto chain = r.queue.pop_available(r.mem);
    REQUIRE(chain.has_value());

    auto reader = chain->reader(r.mem);
    CHECK(reader.available() == 16);
    std::array<uint8_t, 10> first{};
    CHECK(reader.read(first) == 10);
    CHECK(std::vector<uint8_t>(first.begin(), first.end()) == iota_bytes(10));
    auto word = reader.read_obj<uint32_t>();
    REQUIRE(word.has_value());
    CHECK(*word == 0x0d0c0b0aU);
    std::array<uint8_t, 4> too_big{};
    CHECK_FALSE(reader.read_exact(too_big));
    CHECK(reader.available() == 2);
    CHECK_FALSE(reader.read_obj<uint32_t>().has_value());
    CHECK(reader.skip(5) == 2);
    CHECK(reader.available() == 0);
    CHECK(reader.read(first) == 0);
    CHECK(reader.bytes_read() == 16);

    auto writer = chain->writer(r.mem);
    CHECK(writer.available() == 12);
    auto status = writer.split_tail(1);
    REQUIRE(status.has_value());
    CHECK(writer.available() == 11);
    CHECK_FALSE(writer.write_all(iota_bytes(12, 0x40)));
    CHECK(writer.bytes_written() == 0);
    CHECK(writer.write(iota_bytes(12, 0x40)) == 11);
    CHECK(writer.available() == 0);
    CHECK(status->write_obj<uint8_t>(0xaa));
    CHECK_FALSE(status->write_obj<uint8_t>(0xbb));
    CHECK(writer.bytes_written() == 11);
    CHECK(status->bytes_written() == 1);
    CHECK_FALSE(writer.split_tail(1).has_value());

    std::array<uint8_t, 4> a{};
    r.mem.read(GuestAddress(0x9000), a);
    CHECK(a == std::array<uint8_t, 4>{0x40, 0x41, 0x42, 0x43});
    std::array<uint8_t, 8> b{};
    r.mem.read(GuestAddress(0x9200), b);
    CHECK(b == std::array<uint8_t, 8>{0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0xaa});
}

TEST_CASE("take_slices hands out host views split at region boundaries", "[virtio]") {
    TestRing r;
    r.mem.write(GuestAddress(0xfff0), iota_bytes(0x20, 0));
    r.mem.write(GuestAddress(0x11000), iota_bytes(0x10, 0x20));
    r.desc(0, 0xfff0, 0x20, R | N, 1);  // straddles the region boundary at 0x10000
    r.desc(1, 0x11000, 0x10, R | N, 2);
    r.desc(2, 0xfff8, 0x10, W);
    r.publish(0);
    auto chain = r.queue.pop_available(r.mem);
    REQUIRE(chain.has_value());

    auto reader = chain->reader(r.mem);
    auto slices = reader.take_slices(0x28);
    REQUIRE(slices.size() == 3);
    CHECK(slices[0].size() == 0x10);
    CHECK(slices[1].size() == 0x10);
    CHECK(slices[2].size() == 0x8);
    std::vector<uint8_t> joined;
    for (auto s : slices) {
        joined.insert(joined.end(), s.begin(), s.end());
    }
    CHECK(joined == iota_bytes(0x28));
    CHECK(reader.available() == 8);

    auto writer = chain->writer(r.mem);
    auto out = writer.take_slices(100);
    REQUIRE(out.size() == 2);
    CHECK(out[0].size() == 8);
    CHECK(out[1].size() == 8);
    out[1][0] = 0x77;
    CHECK(r.mem.read_obj<uint8_t>(GuestAddress(0x10000)) == 0x77);
    CHECK(writer.bytes_written() == 0x10);
}

TEST_CASE("indirect descriptor tables", "[virtio]") {
    TestRing r;
    r.table_desc(kTableAddr, 0, 0x8000, 8, R | N, 2);  // entries in table order 0 -> 2 -> 1
    r.table_desc(kTableAddr, 2, 0x8100, 8, R | N, 1);
    r.table_desc(kTableAddr, 1, 0x9000, 4, W);

    SECTION("as the whole chain") {
        r.desc(0, kTableAddr, 48, I);
        r.publish(0);
        auto chain = r.queue.pop_available(r.mem);
        REQUIRE(chain.has_value());
        CHECK(chain->head_index() == 0);
        REQUIRE(chain->readable().size() == 2);
        CHECK(chain->readable()[0].addr == 0x8000);
        CHECK(chain->readable()[1].addr == 0x8100);
        REQUIRE(chain->writable().size() == 1);
        CHECK(chain->writable()[0].addr == 0x9000);
        CHECK(chain->readable_len() == 16);
    }
    SECTION("after direct descriptors") {
        r.desc(3, 0x8400, 4, R | N, 7);
        r.desc(7, kTableAddr, 48, I);
        r.publish(3);
        auto chain = r.queue.pop_available(r.mem);
        REQUIRE(chain.has_value());
        CHECK(chain->head_index() == 3);
        REQUIRE(chain->readable().size() == 3);
        CHECK(chain->readable()[0].addr == 0x8400);
        CHECK(chain->writable().size() == 1);
    }
    SECTION("the WRITE flag of the indirect descriptor itself is ignored") {
        r.desc(0, kTableAddr, 48, I | W);
        r.publish(0);
        auto chain = r.queue.pop_available(r.mem);
        REQUIRE(chain.has_value());
        CHECK(chain->readable().size() == 2);
        CHECK_FALSE(chain->has_write_before_read());
    }
}

TEST_CASE("malformed indirect tables are queue errors", "[virtio]") {
    TestRing r;
    r.table_desc(kTableAddr, 0, 0x8000, 8, R | N, 1);
    r.table_desc(kTableAddr, 1, 0x9000, 8, W);
    r.publish(0);

    SECTION("length not a multiple of 16") {
        r.desc(0, kTableAddr, 20, I);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("not a non-zero multiple of 16"));
    }
    SECTION("length 0") {
        r.desc(0, kTableAddr, 0, I);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("not a non-zero multiple of 16"));
    }
    SECTION("table outside guest memory") {
        r.desc(0, 0x1fff0, 32, I);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("indirect table"));
        r.desc(0, 0xfffffffffffffff0ULL, 32, I);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("outside guest memory"));
    }
    SECTION("nested indirect") {
        r.desc(0, kTableAddr, 32, I);
        r.table_desc(kTableAddr, 1, kTableAddr, 32, I);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("inside an indirect table"));
    }
    SECTION("INDIRECT together with NEXT") {
        r.desc(0, kTableAddr, 32, I | N, 1);
        r.desc(1, 0x9000, 8, W);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("both INDIRECT and NEXT"));
    }
    SECTION("next beyond the table") {
        r.desc(0, kTableAddr, 32, I);
        r.table_desc(kTableAddr, 1, 0x9000, 8, W | N, 2);  // the table has 2 entries
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("next 2 out of range (2 entries)"));
    }
    SECTION("loop inside the table") {
        r.desc(0, kTableAddr, 32, I);
        r.table_desc(kTableAddr, 1, 0x9000, 8, W | N, 0);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("a loop?"));
    }
    SECTION("buffer named by the table outside guest memory") {
        r.desc(0, kTableAddr, 32, I);
        r.table_desc(kTableAddr, 1, 0x1fffc, 8, W);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("outside guest memory"));
    }
    SECTION("indirect descriptors without the negotiated feature") {
        r.desc(0, kTableAddr, 32, I);
        r.queue.set_indirect_enabled(false);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("INDIRECT_DESC was not negotiated"));
    }
}

TEST_CASE("malformed direct chains are queue errors", "[virtio]") {
    TestRing r;
    SECTION("head index out of range") {
        r.publish(16);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("head 16 is out of range"));
    }
    SECTION("next index out of range") {
        r.desc(0, 0x8000, 8, R | N, 16);
        r.publish(0);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("next 16 out of range"));
    }
    SECTION("a loop") {
        r.desc(0, 0x8000, 8, R | N, 1);
        r.desc(1, 0x8000, 8, R | N, 0);
        r.publish(0);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("a loop?"));
    }
    SECTION("a descriptor pointing at itself") {
        r.desc(3, 0x8000, 8, W | N, 3);
        r.publish(3);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("longer than its queue (16 entries)"));
    }
    SECTION("address + length overflows") {
        r.desc(0, 0xfffffffffffffff0ULL, 0x20, R);
        r.publish(0);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("overflows the address space"));
    }
    SECTION("buffer outside guest memory") {
        r.desc(0, 0x1f000, 0x2000, W);
        r.publish(0);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("outside guest memory"));
    }
    SECTION("buffer ending one byte past guest memory") {
        r.desc(0, 0x8000, 8, R | N, 1);
        r.desc(1, 0x1fff0, 0x11, W);
        r.publish(0);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("outside guest memory"));
    }
    SECTION("available index jumps ahead by more than the queue size") {
        r.desc(0, 0x8000, 8, R);
        r.set_avail_idx(17);
        CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("17 entries ahead"));
        CHECK_THROWS_AS(r.queue.has_available(r.mem), QueueError);
        CHECK_THROWS_AS(r.queue.enable_notification(r.mem), QueueError);
        // Exactly a full ring is fine.
        r.set_avail_idx(16);
        CHECK(r.queue.pop_available(r.mem).has_value());
    }
}

TEST_CASE("chains whose total length exceeds 4 GiB are queue errors", "[virtio]") {
    // 2 GiB + 4 KiB of (lazily allocated) guest memory; two descriptors may name the same bytes.
    TestRing r(16, {{GuestAddress(0), 0x80001000}});
    r.desc(0, 0x1000, 0x80000000U, R | N, 1);
    r.desc(1, 0x1000, 0x7fffffffU, W);
    r.publish(0);
    auto chain = r.queue.pop_available(r.mem);
    REQUIRE(chain.has_value());
    CHECK(chain->readable_len() == 0x80000000U);
    CHECK(chain->writable_len() == 0x7fffffffU);

    r.desc(1, 0x1000, 0x80000000U, W);
    r.publish(0);
    CHECK_THROWS_WITH(r.queue.pop_available(r.mem), Contains("longer than 4 GiB"));
}

TEST_CASE("a writable descriptor before a readable one is flagged, not fatal", "[virtio]") {
    TestRing r;
    r.desc(0, 0x9000, 4, W | N, 1);
    r.desc(1, 0x8000, 8, R | N, 2);
    r.desc(2, 0x9100, 2, W);
    r.publish(0);
    auto chain = r.queue.pop_available(r.mem);
    REQUIRE(chain.has_value());
    CHECK(chain->has_write_before_read());
    REQUIRE(chain->readable().size() == 1);
    CHECK(chain->readable()[0].addr == 0x8000);
    REQUIRE(chain->writable().size() == 2);
    CHECK(chain->writable()[0].addr == 0x9000);
    CHECK(chain->writable()[1].addr == 0x9100);
    CHECK(chain->descriptors()[0].addr == 0x8000);
}

TEST_CASE("undo_pop hands the same chain out again", "[virtio]") {
    TestRing r;
    r.desc(4, 0x9000, 8, W);
    r.desc(6, 0x9100, 8, W);
    r.publish(4);
    r.publish(6);
    auto first = r.queue.pop_available(r.mem);
    REQUIRE(first.has_value());
    CHECK(first->head_index() == 4);
    r.queue.undo_pop();
    CHECK(r.queue.next_avail() == 0);
    auto again = r.queue.pop_available(r.mem);
    REQUIRE(again.has_value());
    CHECK(again->head_index() == 4);
    CHECK(r.queue.pop_available(r.mem)->head_index() == 6);
}

TEST_CASE("rings outside guest memory raise queue errors instead of being touched", "[virtio]") {
    TestRing r;
    r.desc(0, 0x8000, 8, R);
    r.publish(0);
    SECTION("descriptor table") {
        r.queue.set_desc_table(GuestAddress(0x1fff8));
        CHECK_THROWS_AS(r.queue.pop_available(r.mem), QueueError);
    }
    SECTION("available ring") {
        r.queue.set_avail_ring(GuestAddress(0x30000));
        CHECK_THROWS_AS(r.queue.pop_available(r.mem), QueueError);
        CHECK_THROWS_AS(r.queue.needs_notification(r.mem), QueueError);
    }
    SECTION("used ring") {
        r.queue.set_used_ring(GuestAddress(0x1fffc));
        REQUIRE(r.queue.pop_available(r.mem).has_value());
        CHECK_THROWS_AS(r.queue.add_used(r.mem, 0, 0), QueueError);
        r.queue.set_event_idx_enabled(true);  // avail_event lies past the end of memory
        CHECK_THROWS_AS(r.queue.enable_notification(r.mem), QueueError);
    }
    SECTION("size 0 on a ready queue") {
        r.queue.set_size(0);
        CHECK_THROWS_AS(r.queue.pop_available(r.mem), QueueError);
    }
}

TEST_CASE("a queue that is not ready yields nothing", "[virtio]") {
    TestRing r;
    r.desc(0, 0x8000, 8, R);
    r.publish(0);
    r.queue.set_ready(false);
    CHECK_FALSE(r.queue.pop_available(r.mem).has_value());
    CHECK_FALSE(r.queue.has_available(r.mem));
    CHECK_FALSE(r.queue.needs_notification(r.mem));
    CHECK_FALSE(r.queue.enable_notification(r.mem));
    CHECK_THROWS_AS(r.queue.add_used(r.mem, 0, 0), QueueError);
}

TEST_CASE("without EVENT_IDX interrupts follow VRING_AVAIL_F_NO_INTERRUPT", "[virtio]") {
    TestRing r;
    r.desc(0, 0x9000, 8, W);
    r.publish(0);
    auto chain = r.queue.pop_available(r.mem);
    REQUIRE(chain.has_value());
    r.queue.add_used(r.mem, chain->head_index(), 8);
    CHECK(r.queue.needs_notification(r.mem));
    r.set_avail_flags(embervm::virtio::kAvailFlagNoInterrupt);
    CHECK_FALSE(r.queue.needs_notification(r.mem));
    r.set_avail_flags(0);
    CHECK(r.queue.needs_notification(r.mem));
}

TEST_CASE("vring_need_event handles the 16-bit wrap", "[virtio]") {
    CHECK(vring_need_event(65535, 2, 65534));   // event passed between 65534 and 2 (wrapped)
    CHECK(vring_need_event(1, 2, 65534));
    CHECK_FALSE(vring_need_event(2, 2, 65534));  // event not yet reached
    CHECK_FALSE(vring_need_event(65533, 2, 65534));  // event before the old index
    CHECK_FALSE(vring_need_event(5, 6, 6));   // nothing new
    CHECK(vring_need_event(5, 6, 5));
}

TEST_CASE("with EVENT_IDX needs_notification follows used_event across the wrap", "[virtio]") {
    TestRing r;
    r.queue.set_event_idx_enabled(true);
    r.queue.set_next_avail(65534);
    r.queue.set_next_used(65534);
    r.set_avail_idx(65534);
    for (uint16_t i = 0; i < 4; ++i) {
        r.desc(i, 0x9000 + 0x10ULL * i, 8, W);
        r.publish(i);  // ring slots 14, 15, 0, 1
    }
    auto process = [&](int n) {
        for (int i = 0; i < n; ++i) {
            auto chain = r.queue.pop_available(r.mem);
            REQUIRE(chain.has_value());
            r.queue.add_used(r.mem, chain->head_index(), 8);
        }
    };
    CHECK(r.queue.needs_notification(r.mem));  // first time: nothing known about the driver yet

    process(2);
    CHECK(r.queue.next_used() == 0);
    r.set_used_event(65535);  // interrupt once used.idx moves past 65535
    CHECK(r.queue.needs_notification(r.mem));
    CHECK_FALSE(r.queue.needs_notification(r.mem));  // nothing added since

    process(2);
    CHECK(r.queue.next_used() == 2);
    r.set_used_event(5);  // driver not interested before 6
    CHECK_FALSE(r.queue.needs_notification(r.mem));
    r.set_used_event(1);
    r.queue.set_next_used(2);  // forget the last signal: first call after it notifies
    CHECK(r.queue.needs_notification(r.mem));

    CHECK(r.used_idx() == 2);
    CHECK(r.used_elem(14).first == 0);
    CHECK(r.used_elem(15).first == 1);
    CHECK(r.used_elem(0).first == 2);
    CHECK(r.used_elem(1).first == 3);
    CHECK_FALSE(r.queue.pop_available(r.mem).has_value());
}

TEST_CASE("disable/enable notification without EVENT_IDX use VRING_USED_F_NO_NOTIFY", "[virtio]") {
    TestRing r;
    r.desc(0, 0x9000, 8, W);
    r.queue.disable_notification(r.mem);
    CHECK(r.used_flags() == embervm::virtio::kUsedFlagNoNotify);
    CHECK_FALSE(r.queue.enable_notification(r.mem));
    CHECK(r.used_flags() == 0);

    r.queue.disable_notification(r.mem);
    r.publish(0);  // the driver adds a buffer while kicks are off
    CHECK(r.queue.enable_notification(r.mem));  // the device must drain again
    CHECK(r.used_flags() == 0);
    REQUIRE(r.queue.pop_available(r.mem).has_value());
    CHECK_FALSE(r.queue.enable_notification(r.mem));
}

TEST_CASE("disable/enable notification with EVENT_IDX use avail_event", "[virtio]") {
    TestRing r;
    r.queue.set_event_idx_enabled(true);
    r.desc(0, 0x9000, 8, W);
    r.desc(1, 0x9100, 8, W);
    r.publish(0);
    r.queue.disable_notification(r.mem);
    CHECK(r.used_flags() == 0);
    CHECK(r.avail_event() == 0);
    REQUIRE(r.queue.pop_available(r.mem).has_value());
    CHECK_FALSE(r.queue.enable_notification(r.mem));
    CHECK(r.avail_event() == 1);  // kick me when entry 1 becomes available
    r.publish(1);
    CHECK(r.queue.enable_notification(r.mem));
    REQUIRE(r.queue.pop_available(r.mem).has_value());
    CHECK_FALSE(r.queue.enable_notification(r.mem));
    CHECK(r.avail_event() == 2);
}

TEST_CASE("queue reset returns configuration and state to defaults", "[virtio]") {
    TestRing r;
    r.queue.set_event_idx_enabled(true);
    r.desc(0, 0x9000, 8, W);
    r.publish(0);
    auto chain = r.queue.pop_available(r.mem);
    REQUIRE(chain.has_value());
    r.queue.add_used(r.mem, 0, 8);
    r.queue.reset();
    CHECK_FALSE(r.queue.ready());
    CHECK(r.queue.size() == 256);
    CHECK(r.queue.max_size() == 256);
    CHECK(r.queue.desc_table().value == 0);
    CHECK(r.queue.avail_ring().value == 0);
    CHECK(r.queue.used_ring().value == 0);
    CHECK_FALSE(r.queue.event_idx_enabled());
    CHECK_FALSE(r.queue.indirect_enabled());
    CHECK(r.queue.next_avail() == 0);
    CHECK(r.queue.next_used() == 0);
    CHECK_FALSE(r.queue.pop_available(r.mem).has_value());
}

TEST_CASE("add_used_batch publishes several used elements with one index update", "[virtio]") {
    TestRing r(4);
    r.queue.set_next_used(0xfffe);  // the batch wraps the ring and the 16-bit index
    r.mem.write_obj<uint16_t>(GuestAddress(kUsedAddr + 2), 0xfffe);
    const std::vector<Queue::UsedElement> batch{{3, 100}, {1, 200}, {2, 0}};
    r.queue.add_used_batch(r.mem, batch);
    CHECK(r.used_idx() == 1);
    CHECK(r.queue.next_used() == 1);
    CHECK(r.used_elem(2) == std::pair<uint32_t, uint32_t>{3, 100});  // slot = index % 4
    CHECK(r.used_elem(3) == std::pair<uint32_t, uint32_t>{1, 200});
    CHECK(r.used_elem(0) == std::pair<uint32_t, uint32_t>{2, 0});

    // A bad head anywhere in the batch: nothing is written or published.
    const std::vector<Queue::UsedElement> bad{{0, 8}, {4, 8}};
    CHECK_THROWS_AS(r.queue.add_used_batch(r.mem, bad), QueueError);
    CHECK(r.used_idx() == 1);
    CHECK(r.used_elem(1) == std::pair<uint32_t, uint32_t>{0, 0});
    // More elements than the ring holds would overwrite each other before being published.
    const std::vector<Queue::UsedElement> too_many(5, Queue::UsedElement{0, 1});
    CHECK_THROWS_AS(r.queue.add_used_batch(r.mem, too_many), QueueError);
    CHECK(r.used_idx() == 1);
    // An empty batch is harmless.
    r.queue.add_used_batch(r.mem, {});
    CHECK(r.used_idx() == 1);
}

}  // namespace unit_split_queue_test
