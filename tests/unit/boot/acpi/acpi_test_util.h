// Helpers for the ACPI unit tests: test guests, table look-up, byte sums, ACPICA's tools.
//
// iasl and acpiexec (Debian package acpica-tools) run on tables written to a temporary directory.
#pragma once

#include <stdio.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "boot/acpi/acpi.h"
#include "tests/unit/temp_dir.h"

namespace embervm::acpi_test {

inline constexpr const char* kIasl = "/usr/bin/iasl";
inline constexpr const char* kAcpiExec = "/usr/bin/acpiexec";

// A guest with `virtio_devices` windows and GSIs laid out as the device manager does.
inline boot::acpi::AcpiLayout guest_with(unsigned vcpus, unsigned virtio_devices) {
    boot::acpi::AcpiLayout g;
    g.vcpus = vcpus;
    for (unsigned i = 0; i < virtio_devices; i++) {
        g.virtio.push_back({boot::layout::kVirtioMmioStart + i * boot::layout::kVirtioMmioSize,
                            boot::layout::kVirtioMmioSize, 5 + i});
    }
    return g;
}

inline const boot::acpi::AcpiTablePlacement& find_table(const boot::acpi::AcpiTables& t, const std::string& sig) {
    const auto it = std::find_if(t.tables.begin(), t.tables.end(), [&](const auto& p) { return p.signature == sig; });
    INFO("table " << sig);
    REQUIRE(it != t.tables.end());
    return *it;
}

inline std::span<const uint8_t> table_bytes(const boot::acpi::AcpiTables& t, const std::string& sig) {
    const auto& p = find_table(t, sig);
    return std::span<const uint8_t>(t.bytes).subspan(p.addr - t.base_gpa, p.length);
}

inline uint8_t byte_sum(std::span<const uint8_t> bytes) {
    return std::accumulate(bytes.begin(), bytes.end(), uint8_t{0},
                           [](uint8_t a, uint8_t b) { return static_cast<uint8_t>(a + b); });
}

// Fails the test (never skips it) when an ACPICA tool is missing.
inline void require_acpica_tool(const char* path) {
    if (!std::filesystem::exists(path)) {
        FAIL(std::string(path) + " is missing: the ACPI tests need the acpica-tools package "
                                 "(apt-get install acpica-tools, or scripts/install-deps)");
    }
}

struct CommandResult {
    int status = -1;  // exit status, -1 if it did not exit normally
    std::string output;  // stdout and stderr
};

// Runs `command` with sh in `dir`.
inline CommandResult run_in(const std::string& dir, const std::string& command) {
    CommandResult r;
    FILE* p = ::popen(("cd '" + dir + "' && " + command + " 2>&1").c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    size_t n = 0;
    while ((n = ::fread(buf, 1, sizeof(buf), p)) > 0) {
        r.output.append(buf, n);
    }
    const int status = ::pclose(p);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

inline std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in.good());
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::string& path, std::span<const uint8_t> bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.close();
    REQUIRE(out.good());
}

struct Disassembly {
    CommandResult run;
    std::string dsl;  // the .dsl text iasl wrote
};

// Writes `table` to DIR/NAME.dat and disassembles it with `iasl -d`.
inline Disassembly iasl_disassemble(const embervm::test::TempDir& dir, const std::string& name,
                                    std::span<const uint8_t> table) {
    require_acpica_tool(kIasl);
    write_bytes(dir.file(name + ".dat"), table);
    Disassembly d;
    d.run = run_in(dir.path(), std::string(kIasl) + " -d " + name + ".dat");
    INFO(d.run.output);
    REQUIRE(d.run.status == 0);
    REQUIRE(std::filesystem::exists(dir.file(name + ".dsl")));
    d.dsl = read_text(dir.file(name + ".dsl"));
    return d;
}

}  // namespace embervm::acpi_test
