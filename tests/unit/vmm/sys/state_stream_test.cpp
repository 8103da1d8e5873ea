// Tests for vmm/sys/state_stream.h: values come back as written (little-endian, whatever the
// width), and every truncation, size mismatch and bad value ends in a StateError naming the
// component and the field rather than a read past the end.
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <string>

#include "vmm/sys/state_stream.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_state_stream_test {

using embervm::StateError;
using embervm::StateReader;
using embervm::StateWriter;

namespace {

struct Regs {
    uint64_t a;
    uint32_t b;
    uint16_t c;
    uint8_t d[2];
};

enum class Mode : uint8_t { kOff = 0, kOn = 7 };

}  // namespace

TEST_CASE("state stream: values round-trip in little-endian order", "[state]") {
    StateWriter w;
    w.put<uint32_t>(2);
    w.put<uint16_t>(0xBEEF);
    w.put<int64_t>(-5);
    w.put(Mode::kOn);
    w.put_bool(true);
    w.put_string("rootfs");
    w.put_struct(Regs{0x1122334455667788, 9, 10, {1, 2}});
    const std::array<uint8_t, 3> raw{7, 8, 9};
    w.put_blob(raw);

    const auto& b = w.bytes();
    REQUIRE(b[0] == 2);
    REQUIRE(b[4] == 0xEF);
    REQUIRE(b[5] == 0xBE);

    StateReader r(b, "unit");
    CHECK(r.get_version(3) == 2);
    CHECK(r.get<uint16_t>("u16") == 0xBEEF);
    CHECK(r.get<int64_t>("i64") == -5);
    CHECK(r.get<Mode>("mode") == Mode::kOn);
    CHECK(r.get_bool("flag"));
    CHECK(r.get_string("id") == "rootfs");
    auto regs = r.get_struct<Regs>("regs");
    CHECK(regs.a == 0x1122334455667788);
    CHECK(regs.b == 9);
    CHECK(regs.d[1] == 2);
    auto blob = r.get_blob("blob");
    REQUIRE(blob.size() == 3);
    CHECK(blob[2] == 9);
    CHECK(r.remaining() == 0);
    r.expect_end();
}

TEST_CASE("state stream: every truncation is an error naming the field", "[state]") {
    StateWriter w;
    w.put<uint32_t>(1);
    w.put_string("abcdef");
    w.put<uint64_t>(42);
    const auto full = w.bytes();
    for (size_t n = 0; n < full.size(); n++) {
        std::span<const uint8_t> cut(full.data(), n);
        StateReader r(cut, "vcpu0");
        auto read_all = [&] {
            r.get_version(1);
            r.get_string("id");
            r.get<uint64_t>("tsc");
        };
        REQUIRE_THROWS_AS(read_all(), StateError);
    }
    StateReader r(full, "vcpu0");
    r.get_version(1);
    try {
        r.get_bytes(100, "table");
        FAIL("no error");
    } catch (const StateError& e) {
        CHECK(std::string(e.what()) == "vcpu0: saved state field 'table': truncated (100 bytes needed, 18 left)");
    }
}

TEST_CASE("state stream: bad versions, sizes, booleans and trailing bytes are refused", "[state]") {
    SECTION("version 0 and newer than the code") {
        for (uint32_t v : {0u, 3u}) {
            StateWriter w;
            w.put<uint32_t>(v);
            StateReader r(w.bytes(), "uart");
            REQUIRE_THROWS_WITH(r.get_version(2), Catch::Contains("uart: saved state field 'version'"));
        }
    }
    SECTION("a struct of another size") {
        StateWriter w;
        w.put<uint32_t>(sizeof(Regs) + 8);
        w.put_struct(Regs{});
        StateReader r(w.bytes(), "lapic");
        REQUIRE_THROWS_WITH(r.get_struct<Regs>("regs"), Catch::Contains("size"));
    }
    SECTION("a boolean that is neither 0 nor 1") {
        StateWriter w;
        w.put<uint8_t>(2);
        StateReader r(w.bytes(), "queue0");
        REQUIRE_THROWS_AS(r.get_bool("ready"), StateError);
    }
    SECTION("bytes left over") {
        StateWriter w;
        w.put<uint16_t>(1);
        StateReader r(w.bytes(), "pit");
        r.get<uint8_t>("x");
        REQUIRE_THROWS_WITH(r.expect_end(), Catch::Contains("1 unexpected bytes"));
    }
}

}  // namespace unit_state_stream_test
