// Tests for vmm/snapshot/snapshot_file: a round trip, and every kind of damage (bad magic, other
// format or embervm version, truncation anywhere, a flipped byte anywhere, lengths past the end,
// a duplicated section) is a SnapshotError with one line naming the file and the fault.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/unit/temp_dir.h"
#include "vmm/snapshot/snapshot_file.h"
#include "vmm/sys/state_stream.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_snapshot_file_test {

using embervm::StateWriter;
using embervm::test::TempDir;
using namespace embervm::snapshot;

namespace {

SnapshotContents sample() {
    SnapshotContents c;
    c.embervm_version = EMBERVM_VERSION;
    c.header = {SnapshotType::Diff, uint64_t{256} << 20, 1234567890};
    c.sections.push_back({SectionKind::Config, "vm-config", {'{', '}'}});
    c.sections.push_back({SectionKind::Vcpu, "vcpu0", std::vector<uint8_t>(300, 0xab)});
    c.sections.push_back({SectionKind::Vcpu, "vcpu1", {}});
    c.sections.push_back({SectionKind::LegacyDevice, "serial", {1, 2, 3}});
    return c;
}

std::string error_of(std::span<const uint8_t> bytes, std::string_view version = EMBERVM_VERSION) {
    try {
        decode_snapshot(bytes, "s.snap", version);
    } catch (const SnapshotError& e) {
        return e.what();
    }
    FAIL("decoded without an error");
    return {};
}

// A Full snapshot's header fields (type, 1 MiB of memory, time 0), before the section count.
void put_full_header(StateWriter& w) {
    w.put<uint32_t>(1);
    w.put<uint64_t>(1 << 20);
    w.put<uint64_t>(0);
}

// Re-seals `bytes` (the body changed on purpose) with a correct checksum.
std::vector<uint8_t> reseal(std::vector<uint8_t> bytes) {
    bytes.resize(bytes.size() - 4);
    const uint32_t crc = crc32c(bytes);
    for (int i = 0; i < 4; i++) bytes.push_back(static_cast<uint8_t>(crc >> (8 * i)));
    return bytes;
}

}  // namespace

TEST_CASE("snapshot file: CRC-32C is the Castagnoli CRC", "[snapshot]") {
    const std::string check = "123456789";
    CHECK(crc32c({reinterpret_cast<const uint8_t*>(check.data()), check.size()}) == 0xE3069283);
}

TEST_CASE("snapshot file: what is encoded decodes to the same header and sections", "[snapshot]") {
    const SnapshotContents c = sample();
    const SnapshotContents d = decode_snapshot(encode_snapshot(c), "s.snap");
    CHECK(d.embervm_version == EMBERVM_VERSION);
    CHECK(d.header.type == SnapshotType::Diff);
    CHECK(d.header.mem_size == uint64_t{256} << 20);
    CHECK(d.header.created_ns == 1234567890);
    REQUIRE(d.sections.size() == 4);
    CHECK(d.section(SectionKind::Vcpu, "vcpu0").payload == std::vector<uint8_t>(300, 0xab));
    CHECK(d.section(SectionKind::Vcpu, "vcpu1").payload.empty());
    CHECK(d.section(SectionKind::LegacyDevice, "serial").payload == std::vector<uint8_t>{1, 2, 3});
    CHECK(d.sections_of(SectionKind::Vcpu).size() == 2);
    CHECK_THROWS_WITH(d.section(SectionKind::Vcpu, "vcpu2"), "snapshot: no vcpu section 'vcpu2'");
}

TEST_CASE("snapshot file: a file that is not a snapshot, or of another format version, is named as such", "[snapshot]") {
    std::vector<uint8_t> bytes = encode_snapshot(sample());
    SECTION("empty") { CHECK(error_of({}) == "snapshot s.snap: not an embervm snapshot (bad magic)"); }
    SECTION("bad magic") {
        bytes[0] = 'X';
        CHECK(error_of(bytes) == "snapshot s.snap: not an embervm snapshot (bad magic)");
    }
    SECTION("magic only") {
        bytes.resize(8);
        CHECK(error_of(bytes) == "snapshot s.snap: truncated (no format version)");
    }
    SECTION("another format version") {
        bytes[8] = 2;
        CHECK(error_of(reseal(bytes)) ==
              "snapshot s.snap: format version 2 is not supported (this embervm reads version 1)");
    }
}

TEST_CASE("snapshot file: a snapshot from another embervm version is refused naming both", "[snapshot]") {
    const std::vector<uint8_t> bytes = encode_snapshot(sample());
    CHECK(error_of(bytes, "9.9.9") ==
          std::string("snapshot s.snap: written by embervm ") + EMBERVM_VERSION + ", this is embervm 9.9.9");
}

TEST_CASE("snapshot file: every truncation and every flipped byte is found", "[snapshot]") {
    const std::vector<uint8_t> good = encode_snapshot(sample());
    for (size_t len = 0; len < good.size(); len++) {
        INFO("truncated to " << len);
        const std::string e = error_of(std::span(good).first(len));
        CHECK(e.starts_with("snapshot s.snap: "));
        CHECK(e.find('\n') == std::string::npos);
    }
    // Past the magic and the version, a flipped byte is a checksum mismatch.
    for (size_t i = 12; i < good.size(); i++) {
        INFO("byte " << i << " flipped");
        std::vector<uint8_t> bad = good;
        bad[i] ^= 0x10;
        CHECK_THAT(error_of(bad), Catch::Contains("checksum mismatch") && Catch::StartsWith("snapshot s.snap: "));
    }
}

TEST_CASE("snapshot file: lengths and kinds are checked even under a valid checksum", "[snapshot]") {
    // A header by hand: a writer that is wrong (or malicious) and sealed it correctly.
    StateWriter w;
    w.put_bytes(std::vector<uint8_t>{'E', 'M', 'B', 'E', 'R', 'S', 'N', 'P'});
    w.put<uint32_t>(kFormatVersion);
    w.put_string(EMBERVM_VERSION);
    std::string expected;
    SECTION("a section longer than the file") {
        put_full_header(w);
        w.put<uint32_t>(1);
        w.put<uint32_t>(3);
        w.put_string("vcpu0");
        w.put<uint64_t>(uint64_t{1} << 40);
        expected = "snapshot s.snap: saved state field 'section length': 1099511627776 bytes for vcpu section 'vcpu0', 0 left";
    }
    SECTION("more sections than there are") {
        put_full_header(w);
        w.put<uint32_t>(5);
        expected = "snapshot s.snap: saved state field 'section kind': truncated (4 bytes needed, 0 left)";
    }
    SECTION("an unknown section kind") {
        put_full_header(w);
        w.put<uint32_t>(1);
        w.put<uint32_t>(77);
        expected = "snapshot s.snap: saved state field 'section kind': 77 (section 0) is unknown";
    }
    SECTION("an unknown snapshot type") {
        w.put<uint32_t>(3);
        expected = "snapshot s.snap: saved state field 'snapshot_type': 3 is not Full (1) or Diff (2)";
    }
    SECTION("a section twice") {
        put_full_header(w);
        w.put<uint32_t>(2);
        for (int i = 0; i < 2; i++) {
            w.put<uint32_t>(3);
            w.put_string("vcpu0");
            w.put<uint64_t>(0);
        }
        expected = "snapshot s.snap: saved state field 'section id': vcpu section 'vcpu0' appears twice";
    }
    SECTION("bytes after the last section") {
        put_full_header(w);
        w.put<uint32_t>(0);
        w.put<uint16_t>(0);
        expected = "snapshot s.snap: 2 unexpected bytes at the end of the saved state";
    }
    std::vector<uint8_t> bytes = w.take();
    bytes.resize(bytes.size() + 4);
    CHECK(error_of(reseal(bytes)) == expected);
}

TEST_CASE("snapshot file: written through a temporary file and read back; unreadable files are named", "[snapshot]") {
    TempDir dir;
    const std::string path = dir.file("vm.snap");
    write_snapshot_file(path, sample());
    CHECK(read_snapshot_file(path).sections.size() == 4);
    CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), {}) == 1);  // no temporary left
    // Replacing an existing snapshot.
    SnapshotContents other = sample();
    other.sections.pop_back();
    write_snapshot_file(path, other);
    CHECK(read_snapshot_file(path).sections.size() == 3);

    CHECK_THROWS_WITH(read_snapshot_file(dir.file("missing")),
                      Catch::StartsWith("snapshot " + dir.file("missing") + ": cannot open: No such file"));
    CHECK_THROWS_WITH(read_snapshot_file(dir.path()), "snapshot " + dir.path() + ": not a regular file");
    CHECK_THROWS_WITH(write_snapshot_file(dir.file("no/such/dir"), sample()),
                      Catch::StartsWith("snapshot " + dir.file("no/such/dir") + ": cannot create"));
    std::filesystem::resize_file(path, std::filesystem::file_size(path) - 1);
    CHECK_THROWS_AS(read_snapshot_file(path), SnapshotError);
    std::filesystem::resize_file(path, kMaxFileSize + 1);
    CHECK_THROWS_WITH(read_snapshot_file(path), Catch::Contains("is larger than a snapshot can be (64 MiB)"));
}

}  // namespace unit_snapshot_file_test
