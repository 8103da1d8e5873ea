// Tests for devices/debug_exit: the exit status is the low byte of the write, any width.
#include <catch2/catch.hpp>

#include <array>
#include <optional>

#include "devices/debug_exit.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_debug_exit_test {

using embervm::devices::DebugExit;

TEST_CASE("debug exit: byte writes report the status", "[devices][debug_exit]") {
    std::optional<int> status;
    DebugExit dev([&](uint8_t s) { status = s; });
    for (uint8_t v : {0, 1, 42, 255}) {
        status.reset();
        const std::array<uint8_t, 1> b{v};
        dev.write(0, b);
        REQUIRE(status.has_value());
        CHECK(*status == v);
    }
}

TEST_CASE("debug exit: wider writes use the low byte", "[devices][debug_exit]") {
    std::optional<int> status;
    DebugExit dev([&](uint8_t s) { status = s; });
    const std::array<uint8_t, 2> w{0x03, 0x01};  // 0x0103
    dev.write(0, w);
    CHECK(status == 0x03);
    const std::array<uint8_t, 4> l{0x00, 0xff, 0xff, 0xff};  // 0xffffff00
    dev.write(0, l);
    CHECK(status == 0);
}

TEST_CASE("debug exit: writes not at the port and reads do nothing", "[devices][debug_exit]") {
    int calls = 0;
    DebugExit dev([&](uint8_t) { ++calls; });
    const std::array<uint8_t, 1> b{7};
    dev.write(1, b);
    dev.write(3, b);
    CHECK(calls == 0);
    std::array<uint8_t, 4> r{0xaa, 0xaa, 0xaa, 0xaa};
    dev.read(0, r);
    CHECK(r == std::array<uint8_t, 4>{0, 0, 0, 0});
    CHECK(calls == 0);
    CHECK(DebugExit::kSize == 4);
}

}  // namespace unit_debug_exit_test
