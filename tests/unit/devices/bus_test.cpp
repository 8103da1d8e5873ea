// Tests for vmm/bus: range dispatch, overlap refusal, partial-range accesses.
#include <catch2/catch.hpp>

#include <array>
#include <memory>

#include "devices/bus.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_bus_test {

using embervm::vmm::Bus;
using embervm::vmm::BusDevice;

namespace {
struct Recorder : BusDevice {
    uint64_t last_offset = ~0ULL;
    size_t last_len = 0;
    void read(uint64_t offset, std::span<uint8_t> data) override {
        last_offset = offset;
        last_len = data.size();
        for (auto& b : data) b = 0x5a;
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        last_offset = offset;
        last_len = data.size();
    }
};
}  // namespace

TEST_CASE("bus dispatches to the covering device with a relative offset", "[bus]") {
    Bus bus("test");
    auto a = std::make_shared<Recorder>();
    auto b = std::make_shared<Recorder>();
    bus.insert(a, 0x1000, 0x100);
    bus.insert(b, 0x1100, 0x10);
    std::array<uint8_t, 4> buf{};
    REQUIRE(bus.read(0x1104, buf));
    CHECK(b->last_offset == 4);
    CHECK(buf[0] == 0x5a);
    REQUIRE(bus.write(0x10fc, buf));
    CHECK(a->last_offset == 0xfc);
    // Straddles two devices, or runs off the end: unclaimed.
    CHECK_FALSE(bus.write(0x10fe, buf));
    CHECK_FALSE(bus.read(0x110e, buf));
    CHECK_FALSE(bus.read(0xfff, buf));
    CHECK_FALSE(bus.read(0x2000, buf));
}

TEST_CASE("bus refuses overlapping and empty ranges", "[bus]") {
    Bus bus("test");
    bus.insert(std::make_shared<Recorder>(), 0x1000, 0x100);
    CHECK_THROWS_AS(bus.insert(std::make_shared<Recorder>(), 0x10ff, 1), embervm::Error);
    CHECK_THROWS_AS(bus.insert(std::make_shared<Recorder>(), 0xf00, 0x101), embervm::Error);
    CHECK_THROWS_AS(bus.insert(std::make_shared<Recorder>(), 0x3000, 0), embervm::Error);
    CHECK_THROWS_AS(bus.insert(std::make_shared<Recorder>(), ~0ULL - 1, 4), embervm::Error);
    bus.insert(std::make_shared<Recorder>(), 0x1100, 1);
}

}  // namespace unit_bus_test
