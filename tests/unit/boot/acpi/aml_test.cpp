// Tests for boot/acpi/aml: every term and resource descriptor, byte for byte.
//
// PkgLength at every encoding boundary, names, integers, strings, terms and descriptors.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "boot/acpi/aml.h"
#include "tests/unit/boot/acpi/acpi_test_util.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_aml_test {

using namespace embervm::boot::acpi;
using aml::Bytes;
using embervm::acpi_test::byte_sum;

namespace {

// Decodes a PkgLength the way an AML interpreter does; returns the value and its byte count.
std::pair<uint32_t, size_t> decode_pkg_length(const Bytes& b) {
    const size_t follow = b.at(0) >> 6;
    if (follow == 0) {
        return {b[0] & 0x3fu, 1};
    }
    uint32_t value = b[0] & 0x0fu;
    for (size_t i = 0; i < follow; i++) {
        value |= static_cast<uint32_t>(b.at(1 + i)) << (4 + 8 * i);
    }
    return {value, 1 + follow};
}

}  // namespace

TEST_CASE("PkgLength encodes each value in the fewest bytes, at every boundary", "[acpi][aml]") {
    CHECK(aml::encode_pkg_length(0) == Bytes{0x00});
    CHECK(aml::encode_pkg_length(63) == Bytes{0x3f});
    CHECK(aml::encode_pkg_length(64) == Bytes{0x40, 0x04});
    CHECK(aml::encode_pkg_length(4095) == Bytes{0x4f, 0xff});
    CHECK(aml::encode_pkg_length(4096) == Bytes{0x80, 0x00, 0x01});
    CHECK(aml::encode_pkg_length((1u << 20) - 1) == Bytes{0x8f, 0xff, 0xff});
    CHECK(aml::encode_pkg_length(1u << 20) == Bytes{0xc0, 0x00, 0x00, 0x01});
    CHECK(aml::encode_pkg_length(aml::kMaxPkgLength) == Bytes{0xcf, 0xff, 0xff, 0xff});
    CHECK_THROWS_AS(aml::encode_pkg_length(aml::kMaxPkgLength + 1), embervm::Error);

    for (uint32_t boundary : {64u, 4096u, 1u << 20}) {
        for (uint32_t v = boundary - 3; v <= boundary + 3; v++) {
            const Bytes b = aml::encode_pkg_length(v);
            CAPTURE(v);
            CHECK(decode_pkg_length(b) == std::pair<uint32_t, size_t>{v, b.size()});
            CHECK(b.size() == (v < 64 ? 1u : v < 4096 ? 2u : v < (1u << 20) ? 3u : 4u));
            if (b.size() > 1) {
                CHECK((b[0] & 0x30) == 0);  // bits 5-4 of a multi-byte lead byte are reserved
            }
        }
    }
}

TEST_CASE("pkg_length counts its own bytes and grows at the boundaries", "[acpi][aml]") {
    struct Case {
        size_t contents;
        size_t bytes;
    };
    for (const Case c : {Case{0, 1}, Case{62, 1}, Case{63, 2}, Case{4093, 2}, Case{4094, 3}, Case{(1u << 20) - 4, 3},
                         Case{(1u << 20) - 3, 4}, Case{aml::kMaxPkgLength - 4, 4}}) {
        CAPTURE(c.contents);
        const Bytes b = aml::pkg_length(c.contents);
        CHECK(b.size() == c.bytes);
        CHECK(decode_pkg_length(b).first == c.contents + c.bytes);
    }
    CHECK_THROWS_AS(aml::pkg_length(aml::kMaxPkgLength - 3), embervm::Error);
}

TEST_CASE("integers use ZeroOp, OneOp or the smallest prefix", "[acpi][aml]") {
    CHECK(aml::integer(0) == Bytes{0x00});
    CHECK(aml::integer(1) == Bytes{0x01});
    CHECK(aml::integer(2) == Bytes{0x0a, 0x02});
    CHECK(aml::integer(0xff) == Bytes{0x0a, 0xff});
    CHECK(aml::integer(0x100) == Bytes{0x0b, 0x00, 0x01});
    CHECK(aml::integer(0xffff) == Bytes{0x0b, 0xff, 0xff});
    CHECK(aml::integer(0x10000) == Bytes{0x0c, 0x00, 0x00, 0x01, 0x00});
    CHECK(aml::integer(0xd0001000) == Bytes{0x0c, 0x00, 0x10, 0x00, 0xd0});
    CHECK(aml::integer(0xffffffff) == Bytes{0x0c, 0xff, 0xff, 0xff, 0xff});
    CHECK(aml::integer(0x100000000) == Bytes{0x0e, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00});
    CHECK(aml::integer(UINT64_MAX) == Bytes{0x0e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
}

TEST_CASE("strings and EISA IDs", "[acpi][aml]") {
    CHECK(aml::string("LNRO0005") == Bytes{0x0d, 'L', 'N', 'R', 'O', '0', '0', '0', '5', 0x00});
    CHECK(aml::string("") == Bytes{0x0d, 0x00});
    CHECK_THROWS_AS(aml::string("caf\xc3\xa9"), embervm::Error);
    CHECK(aml::eisa_id("PNP0501") == Bytes{0x0c, 0x41, 0xd0, 0x05, 0x01});
    CHECK(aml::eisa_id("PNP0303") == Bytes{0x0c, 0x41, 0xd0, 0x03, 0x03});
    CHECK(aml::eisa_id("PNP0A08") == Bytes{0x0c, 0x41, 0xd0, 0x0a, 0x08});
    CHECK_THROWS_AS(aml::eisa_id("PNP050"), embervm::Error);
    CHECK_THROWS_AS(aml::eisa_id("pnp0501"), embervm::Error);
    CHECK_THROWS_AS(aml::eisa_id("PNP05G1"), embervm::Error);
}

TEST_CASE("NameSegs are padded with '_' and NameStrings take prefixes", "[acpi][aml]") {
    CHECK(aml::name_seg("_SB") == Bytes{'_', 'S', 'B', '_'});
    CHECK(aml::name_seg("VR0A") == Bytes{'V', 'R', '0', 'A'});
    CHECK_THROWS_AS(aml::name_seg("0ABC"), embervm::Error);
    CHECK_THROWS_AS(aml::name_seg("ABCDE"), embervm::Error);
    CHECK_THROWS_AS(aml::name_seg("ab"), embervm::Error);
    CHECK_THROWS_AS(aml::name_seg(""), embervm::Error);

    CHECK(aml::name_string("_HID") == Bytes{'_', 'H', 'I', 'D'});
    CHECK(aml::name_string("\\_SB") == Bytes{0x5c, '_', 'S', 'B', '_'});
    CHECK(aml::name_string("\\_SB.COM1") == Bytes{0x5c, 0x2e, '_', 'S', 'B', '_', 'C', 'O', 'M', '1'});
    CHECK(aml::name_string("^^PCI0") == Bytes{0x5e, 0x5e, 'P', 'C', 'I', '0'});
    CHECK(aml::name_string("\\_SB.PCI0.ISA") ==
          Bytes{0x5c, 0x2f, 3, '_', 'S', 'B', '_', 'P', 'C', 'I', '0', 'I', 'S', 'A', '_'});
    CHECK(aml::name_string("\\") == Bytes{0x5c, 0x00});
    CHECK(aml::name_string("") == Bytes{0x00});
    CHECK_THROWS_AS(aml::name_string("\\_SB..X"), embervm::Error);
}

TEST_CASE("Name, Scope, Device, Method, Package and Buffer", "[acpi][aml]") {
    CHECK(aml::name("_UID", aml::integer(7)) == Bytes{0x08, '_', 'U', 'I', 'D', 0x0a, 0x07});
    CHECK(aml::scope("\\_SB", {}) == Bytes{0x10, 0x06, 0x5c, '_', 'S', 'B', '_'});
    CHECK(aml::device("VR00", {aml::name("_UID", aml::integer(0))}) ==
          Bytes{0x5b, 0x82, 0x0b, 'V', 'R', '0', '0', 0x08, '_', 'U', 'I', 'D', 0x00});
    CHECK(aml::method("_STA", 0, aml::MethodSerialization::NotSerialized, {aml::return_value(aml::integer(0x0f))}) ==
          Bytes{0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xa4, 0x0a, 0x0f});
    const Bytes m = aml::method("FOO", 2, aml::MethodSerialization::Serialized, {}, 3);
    CHECK(m == Bytes{0x14, 0x06, 'F', 'O', 'O', '_', 0x3a});  // 2 args | serialized (bit 3) | sync level 3 << 4
    CHECK_THROWS_AS(aml::method("FOO", 8, aml::MethodSerialization::NotSerialized, {}), embervm::Error);
    CHECK_THROWS_AS(aml::method("FOO", 0, aml::MethodSerialization::NotSerialized, {}, 16), embervm::Error);
    CHECK(aml::package({aml::integer(5), aml::integer(0)}) == Bytes{0x12, 0x05, 0x02, 0x0a, 0x05, 0x00});
    const Bytes data{1, 2, 3};
    CHECK(aml::buffer(data) == Bytes{0x11, 0x06, 0x0a, 0x03, 1, 2, 3});

    // A device large enough for a 2-byte PkgLength: 100 names of 7 bytes each.
    std::vector<Bytes> names(100, aml::name("_UID", aml::integer(7)));
    const Bytes big = aml::device("BIG0", names);
    const size_t contents = 4 + 700;
    REQUIRE(big.size() == 2 + 2 + contents);
    CHECK(decode_pkg_length(Bytes(big.begin() + 2, big.begin() + 4)).first == 2 + contents);
}

TEST_CASE("resource descriptors and the End Tag checksum", "[acpi][aml]") {
    CHECK(aml::memory32_fixed(true, 0xd0001000, 0x1000) ==
          Bytes{0x86, 0x09, 0x00, 0x01, 0x00, 0x10, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00});
    CHECK(aml::memory32_fixed(false, 0, 0)[3] == 0x00);
    CHECK(aml::io(0x3f8, 0x3f8, 1, 8) == Bytes{0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08});
    CHECK(aml::irq_no_flags({4}) == Bytes{0x22, 0x10, 0x00});
    CHECK(aml::irq_no_flags({1, 12}) == Bytes{0x22, 0x02, 0x10});
    CHECK_THROWS_AS(aml::irq_no_flags({16}), embervm::Error);
    CHECK(aml::extended_interrupt(aml::Trigger::Edge, aml::Polarity::ActiveHigh, aml::Sharing::Exclusive, {5}) ==
          Bytes{0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00});
    CHECK(aml::extended_interrupt(aml::Trigger::Level, aml::Polarity::ActiveLow, aml::Sharing::Shared, {16, 0x1234}) ==
          Bytes{0x89, 0x0a, 0x00, 0x0d, 0x02, 0x10, 0x00, 0x00, 0x00, 0x34, 0x12, 0x00, 0x00});
    CHECK_THROWS_AS(aml::extended_interrupt(aml::Trigger::Edge, aml::Polarity::ActiveHigh, aml::Sharing::Exclusive, {}),
                    embervm::Error);

    // WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0xff, 0, 0x100).
    CHECK(aml::word_bus_number(0, 0xff) == Bytes{0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00,
                                                 0xff, 0x00, 0x00, 0x00, 0x00, 0x01});
    CHECK(aml::word_bus_number(0, 0) == Bytes{0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                              0x00, 0x00, 0x01, 0x00});
    CHECK_THROWS_AS(aml::word_bus_number(2, 1), embervm::Error);
    // DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0,
    //              0xc0000000, 0xcfffffff, 0, 0x10000000).
    CHECK(aml::dword_memory(aml::MemoryCaching::NonCacheable, 0xc0000000, 0x10000000) ==
          Bytes{0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0,
                0xff, 0xff, 0xff, 0xcf, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10});
    CHECK(aml::dword_memory(aml::MemoryCaching::Prefetchable, 0xfffff000, 0x1000)[5] == 0x07);
    CHECK_THROWS_AS(aml::dword_memory(aml::MemoryCaching::Cacheable, 0xfffff000, 0x1001), embervm::Error);
    CHECK_THROWS_AS(aml::dword_memory(aml::MemoryCaching::Cacheable, 0x1000, 0), embervm::Error);

    const Bytes rt = aml::resource_template({aml::io(0x60, 0x60, 1, 1), aml::irq_no_flags({1})});
    // Buffer: BufferOp, PkgLength (1 byte), BufferSize (BytePrefix n), then n bytes of descriptors.
    REQUIRE(rt.size() == 4 + 8 + 3 + 2);
    CHECK(rt[0] == 0x11);
    CHECK(rt[2] == 0x0a);
    CHECK(rt[3] == 8 + 3 + 2);
    const std::span<const uint8_t> descriptors(rt.data() + 4, rt.size() - 4);
    CHECK(descriptors[descriptors.size() - 2] == 0x79);
    CHECK(byte_sum(descriptors) == 0);
}

}  // namespace unit_aml_test
