// Tests for virtio/vhost_state: the saved rings of a vhost-served device encoded and decoded,
// every corrupt value refused with a line naming the field, the checks of a restored ring
// against its queue and guest memory, and the wait for requests in flight.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <thread>

#include "memory/guest_memory.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/vhost_state.h"
#include "vmm/sys/state_stream.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_vhost_state_test {

using embervm::StateError;
using embervm::StateReader;
using embervm::StateWriter;
using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using embervm::virtio::testing::RingDriver;

namespace {

constexpr uint64_t kFeatures = (uint64_t{1} << 32) | (uint64_t{1} << 29) | (uint64_t{1} << 15);

VhostDeviceState sample() { return {kFeatures, {{true, 7}, {true, 65535}, {false, 0}}}; }

std::vector<uint8_t> encoded(const VhostDeviceState& s) {
    StateWriter w;
    encode_vhost_state(w, s);
    return w.take();
}

VhostDeviceState decoded(const std::vector<uint8_t>& bytes, size_t queues = 3, uint64_t backend = kFeatures | 1) {
    StateReader r(bytes, "dev");
    auto s = decode_vhost_state(r, queues, backend, "the backend");
    r.expect_end();
    return s;
}

// Offsets in the encoding: features (8), queue count (2), then per queue started (1), base (4).
constexpr size_t kQueueCountAt = 8;
size_t started_at(size_t q) { return 10 + 5 * q; }
size_t base_at(size_t q) { return 11 + 5 * q; }

void put_u32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
    for (size_t i = 0; i < 4; i++) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace

TEST_CASE("vhost state: the rings and features survive encoding", "[vhost_state]") {
    CHECK(decoded(encoded(sample())) == sample());
    CHECK(encoded(sample()).size() == 10 + 3 * 5);
}

TEST_CASE("vhost state: corrupt values are refused naming the field", "[vhost_state]") {
    const auto bytes = encoded(sample());
    SECTION("features the backend does not offer now") {
        CHECK_THROWS_WITH(decoded(bytes, 3, kFeatures & ~(uint64_t{1} << 29)),
                          Catch::Contains("'vhost features'") && Catch::Contains("missing 0x20000000") &&
                              Catch::Contains("the backend offers"));
    }
    SECTION("another queue count") {
        CHECK_THROWS_WITH(decoded(bytes, 2), Catch::Contains("'vhost queue count'") && Catch::Contains("3 where"));
        auto b = bytes;
        b[kQueueCountAt] = 4;
        CHECK_THROWS_AS(decoded(b), StateError);
    }
    SECTION("a base that is not a ring index") {
        auto b = bytes;
        put_u32(b, base_at(1), 0x10000);
        CHECK_THROWS_WITH(decoded(b), Catch::Contains("'vhost queue base'") && Catch::Contains("queue 1: 65536"));
    }
    SECTION("a base for a queue never started") {
        auto b = bytes;
        put_u32(b, base_at(2), 3);
        CHECK_THROWS_WITH(decoded(b), Catch::Contains("never started"));
    }
    SECTION("a started flag that is not a boolean") {
        auto b = bytes;
        b[started_at(0)] = 2;
        CHECK_THROWS_WITH(decoded(b), Catch::Contains("'vhost queue started'"));
    }
    SECTION("every truncation") {
        for (size_t n = 0; n < bytes.size(); n++) {
            const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
            INFO("length " << n);
            CHECK_THROWS_AS(decoded(cut), StateError);
        }
    }
}

TEST_CASE("vhost state: a restored ring must match its queue and the used ring", "[vhost_state]") {
    GuestMemory mem({{GuestAddress(0), 0x100000}});
    Queue q(256);
    RingDriver ring(mem, q, 0x10000, 16);
    q.set_next_avail(5);
    q.set_next_used(5);
    mem.write_obj<uint16_t>(GuestAddress(0x12002), 5);  // used->idx
    CHECK(used_index(mem, q) == 5);
    CHECK_NOTHROW(check_restored_ring("dev", mem, q, 0, {true, 5}));
    CHECK_THROWS_WITH(check_restored_ring("dev", mem, q, 0, {true, 6}),
                      Catch::Contains("dev: saved state field 'vhost queue base': queue 0: 6 where"));
    CHECK_THROWS_WITH(check_restored_ring("dev", mem, q, 0, {false, 0}), Catch::Contains("never started"));
    mem.write_obj<uint16_t>(GuestAddress(0x12002), 4);
    CHECK_THROWS_WITH(check_restored_ring("dev", mem, q, 0, {true, 5}),
                      Catch::Contains("guest memory's used index is 4"));
    Queue idle(256);
    CHECK_NOTHROW(check_restored_ring("dev", mem, idle, 1, {false, 0}));
    CHECK_THROWS_WITH(check_restored_ring("dev", mem, idle, 1, {true, 0}), Catch::Contains("not ready"));
}

TEST_CASE("vhost state: the wait for requests in flight ends when the used ring catches up", "[vhost_state]") {
    GuestMemory mem({{GuestAddress(0), 0x100000}});
    Queue q(256);
    RingDriver ring(mem, q, 0x10000, 16);
    mem.write_obj<uint16_t>(GuestAddress(0x12002), 65534);
    // Behind by 3 across the wrap: never catches up.
    const std::string late = wait_until_used(mem, q, 1, std::chrono::milliseconds(20));
    CHECK_THAT(late, Catch::Contains("3 requests still in flight after 20 ms"));
    // A backend completing them meanwhile.
    std::thread backend([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        mem.write_obj<uint16_t>(GuestAddress(0x12002), 1);
    });
    const auto t0 = std::chrono::steady_clock::now();
    const std::string done = wait_until_used(mem, q, 1, std::chrono::seconds(5));
    backend.join();
    CHECK(done.empty());
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(4));
}

}  // namespace unit_vhost_state_test
