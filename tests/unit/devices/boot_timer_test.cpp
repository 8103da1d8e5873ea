// Tests for devices/boot_timer: only the magic value at offset 0 records a measurement.
#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <thread>

#include "devices/boot_timer.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_boot_timer_test {

using embervm::devices::BootTimer;
using namespace std::chrono_literals;

TEST_CASE("boot timer: magic byte records the time since start", "[devices][boot_timer]") {
    const auto start = std::chrono::steady_clock::now() - 5ms;
    BootTimer dev(start);
    CHECK_FALSE(dev.boot_time().has_value());
    const auto before = std::chrono::steady_clock::now();
    const std::array<uint8_t, 1> magic{123};
    dev.write(0, magic);
    const auto after = std::chrono::steady_clock::now();
    const auto t = dev.boot_time();
    REQUIRE(t.has_value());
    CHECK(*t >= std::chrono::duration_cast<std::chrono::microseconds>(before - start));
    CHECK(*t <= std::chrono::duration_cast<std::chrono::microseconds>(after - start) + 1us);
}

TEST_CASE("boot timer: magic value at any width", "[devices][boot_timer]") {
    BootTimer dev(std::chrono::steady_clock::now());
    const std::array<uint8_t, 4> magic32{123, 0, 0, 0};
    dev.write(0, magic32);
    CHECK(dev.boot_time().has_value());
    BootTimer dev64(std::chrono::steady_clock::now());
    const std::array<uint8_t, 8> magic64{123, 0, 0, 0, 0, 0, 0, 0};
    dev64.write(0, magic64);
    CHECK(dev64.boot_time().has_value());
}

TEST_CASE("boot timer: other values, offsets and reads are ignored", "[devices][boot_timer]") {
    BootTimer dev(std::chrono::steady_clock::now());
    const std::array<uint8_t, 1> other{122};
    dev.write(0, other);
    const std::array<uint8_t, 2> wide{123, 1};  // 0x017b is not 123
    dev.write(0, wide);
    const std::array<uint8_t, 1> magic{123};
    dev.write(8, magic);
    CHECK_FALSE(dev.boot_time().has_value());
    std::array<uint8_t, 4> r{0xaa, 0xaa, 0xaa, 0xaa};
    dev.read(0, r);
    CHECK(r == std::array<uint8_t, 4>{0, 0, 0, 0});
}

TEST_CASE("boot timer: a later magic write replaces the measurement", "[devices][boot_timer]") {
    const auto start = std::chrono::steady_clock::now();
    BootTimer dev(start);
    const std::array<uint8_t, 1> magic{123};
    dev.write(0, magic);
    const auto first = dev.boot_time();
    std::this_thread::sleep_for(2ms);
    dev.write(0, magic);
    REQUIRE(first.has_value());
    CHECK(*dev.boot_time() > *first);
}

}  // namespace unit_boot_timer_test
