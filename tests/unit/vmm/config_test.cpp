// Tests for vmm/config: the JSON config schema, every kind of bad input and its one-line
// message, structural and file validation, and the to_json round trip.
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/unit/temp_dir.h"
#include "vmm/config/config.h"
#include "vmm/config/from_json.h"
#include "vmm/config/to_json.h"
#include "vmm/config/validate.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_config_test {

using embervm::vmm::BootSourceConfig;
using embervm::vmm::ConfigError;
using embervm::vmm::MachineConfig;
using embervm::vmm::VmConfig;
namespace vmm = embervm::vmm;

namespace {

using embervm::test::TempDir;

std::string parse_error(std::string_view text) {
    try {
        vmm::parse_config_json(text);
    } catch (const ConfigError& e) {
        return e.what();
    }
    FAIL("parse_config_json accepted: " << text);
    return {};
}

std::string machine(std::string_view fields) {
    return fmt::format(R"({{"machine-config": {{{}}}}})", fields);
}

std::string boot(std::string_view fields) {
    return fmt::format(R"({{"boot-source": {{{}}}}})", fields);
}

}  // namespace

TEST_CASE("config: a minimal document leaves the defaults", "[config]") {
    const VmConfig c = vmm::parse_config_json(R"({"boot-source": {"kernel_image_path": "/k"}})");
    REQUIRE(c.boot_source);
    CHECK(c.boot_source->kernel_image_path == "/k");
    CHECK_FALSE(c.boot_source->initrd_path);
    CHECK_FALSE(c.boot_source->boot_args);
    CHECK(c.machine_config == MachineConfig{});
    CHECK(c.machine_config.vcpu_count == 1);
    CHECK(c.machine_config.mem_size_mib == 128);

    const VmConfig empty = vmm::parse_config_json("{}");
    CHECK_FALSE(empty.boot_source);
}

TEST_CASE("config: a full Firecracker document", "[config]") {
    const VmConfig c = vmm::parse_config_json(R"({
        "boot-source": {
            "kernel_image_path": "/images/vmlinux",
            "initrd_path": "/images/initrd.cpio",
            "boot_args": "console=ttyS0 reboot=k panic=1"
        },
        "machine-config": {
            "vcpu_count": 4,
            "mem_size_mib": 1024,
            "smt": false,
            "track_dirty_pages": true
        }
    })");
    REQUIRE(c.boot_source);
    CHECK(c.boot_source->kernel_image_path == "/images/vmlinux");
    CHECK(c.boot_source->initrd_path == "/images/initrd.cpio");
    CHECK(c.boot_source->boot_args == "console=ttyS0 reboot=k panic=1");
    CHECK(c.machine_config.vcpu_count == 4);
    CHECK(c.machine_config.mem_size_mib == 1024);
    CHECK_FALSE(c.machine_config.smt);
    CHECK(c.machine_config.track_dirty_pages);
}

TEST_CASE("config: null optional strings are absent, as in Firecracker", "[config]") {
    const VmConfig c = vmm::parse_config_json(boot(R"("kernel_image_path": "/k", "initrd_path": null, "boot_args": null)"));
    CHECK_FALSE(c.boot_source->initrd_path);
    CHECK_FALSE(c.boot_source->boot_args);
}

TEST_CASE("config: range limits are inclusive", "[config]") {
    auto c = vmm::parse_config_json(machine(R"("vcpu_count": 32, "mem_size_mib": 1048576)"));
    CHECK(c.machine_config.vcpu_count == vmm::kMaxVcpus);
    CHECK(c.machine_config.mem_size_mib == vmm::kMaxMemSizeMib);
    c = vmm::parse_config_json(machine(R"("vcpu_count": 1, "mem_size_mib": 16)"));
    CHECK(c.machine_config.vcpu_count == 1);
    CHECK(c.machine_config.mem_size_mib == 16);
    CHECK(vmm::kMaxMemSizeMib == 1024 * 1024);
}

TEST_CASE("config: unknown keys are named with their path", "[config]") {
    CHECK(parse_error(machine(R"("vcpus": 2, "mem_size_mib": 128)")) ==
          "machine-config.vcpus: unknown key (known keys: vcpu_count, mem_size_mib, smt, track_dirty_pages, "
          "acpi)");
    CHECK(parse_error(boot(R"("kernel": "/k")")) ==
          "boot-source.kernel: unknown key (known keys: kernel_image_path, initrd_path, boot_args)");
    CHECK(parse_error(R"({"machine_config": {}})") ==
          "machine_config: unknown key (known keys: boot-source, machine-config, drives, network-interfaces, balloon, "
          "vsock, fs, logger, metrics, console, enable_pci)");
}

TEST_CASE("config: enable_pci (top level) switches the devices to virtio-pci; off by default", "[config]") {
    CHECK_FALSE(vmm::parse_config_json("{}").enable_pci);
    CHECK(vmm::parse_config_json(R"({"enable_pci": true})").enable_pci);
    CHECK_FALSE(vmm::parse_config_json(R"({"enable_pci": false})").enable_pci);
    CHECK(parse_error(R"({"enable_pci": 1})") == "enable_pci: must be true or false");
    CHECK(parse_error(R"({"enable_pci": "yes"})") == "enable_pci: must be true or false");
    vmm::VmConfig c;
    CHECK(vmm::to_json(c)["enable_pci"] == false);
    c.enable_pci = true;
    CHECK(vmm::to_json(c)["enable_pci"] == true);
    CHECK(vmm::parse_config_json(vmm::to_json(c).dump()).enable_pci);
}

TEST_CASE("config: wrong types", "[config]") {
    CHECK(parse_error(machine(R"("vcpu_count": "2", "mem_size_mib": 128)")) ==
          "machine-config.vcpu_count: expected an unsigned integer, got string");
    CHECK(parse_error(machine(R"("vcpu_count": true, "mem_size_mib": 128)")) ==
          "machine-config.vcpu_count: expected an unsigned integer, got boolean");
    CHECK(parse_error(machine(R"("vcpu_count": 1, "mem_size_mib": 128, "smt": "no")")) ==
          "machine-config.smt: expected a boolean, got string");
    CHECK(parse_error(machine(R"("vcpu_count": 1, "mem_size_mib": 128, "track_dirty_pages": 1)")) ==
          "machine-config.track_dirty_pages: expected a boolean, got number 1");
    CHECK(parse_error(machine(R"("vcpu_count": 1, "mem_size_mib": 128, "acpi": "off")")) ==
          "machine-config.acpi: expected a boolean, got string");
    CHECK(parse_error(machine(R"("vcpu_count": 1, "mem_size_mib": 128, "acpi": 0)")) ==
          "machine-config.acpi: expected a boolean, got number 0");
    CHECK(parse_error(boot(R"("kernel_image_path": 5)")) ==
          "boot-source.kernel_image_path: expected a string, got number 5");
    CHECK(parse_error(boot(R"("kernel_image_path": "/k", "boot_args": ["a"])")) ==
          "boot-source.boot_args: expected a string, got array");
    CHECK(parse_error(R"({"machine-config": []})") == "machine-config: expected an object, got array");
    CHECK(parse_error("[]") == "config: expected an object, got array");
    CHECK(parse_error("42") == "config: expected an object, got number 42");
}

TEST_CASE("config: negative, fractional and huge numbers are not integers", "[config]") {
    CHECK(parse_error(machine(R"("vcpu_count": -1, "mem_size_mib": 128)")) ==
          "machine-config.vcpu_count: expected an unsigned integer, got negative number -1");
    CHECK(parse_error(machine(R"("vcpu_count": 2.5, "mem_size_mib": 128)")) ==
          "machine-config.vcpu_count: expected an unsigned integer, got floating-point number 2.5");
    CHECK(parse_error(machine(R"("vcpu_count": 2.0, "mem_size_mib": 128)")) ==
          "machine-config.vcpu_count: expected an unsigned integer, got floating-point number 2.0");
    CHECK(parse_error(machine(R"("vcpu_count": 1, "mem_size_mib": 100000000000000000000)")) ==
          "machine-config.mem_size_mib: expected an unsigned integer, got number 1e+20 (too large)");
    // Fits in 64 bits but not in vcpu_count's 32: a range error, not a silent truncation.
    CHECK(parse_error(machine(R"("vcpu_count": 4294967297, "mem_size_mib": 128)")) ==
          "machine-config.vcpu_count: 4294967297 is out of range 1..32");
}

TEST_CASE("config: out of range values", "[config]") {
    CHECK(parse_error(machine(R"("vcpu_count": 0, "mem_size_mib": 128)")) ==
          "machine-config.vcpu_count: 0 is out of range 1..32");
    CHECK(parse_error(machine(R"("vcpu_count": 33, "mem_size_mib": 128)")) ==
          "machine-config.vcpu_count: 33 is out of range 1..32");
    CHECK(parse_error(machine(R"("vcpu_count": 1, "mem_size_mib": 8)")) ==
          "machine-config.mem_size_mib: 8 is out of range 16..1048576");
    CHECK(parse_error(machine(R"("vcpu_count": 1, "mem_size_mib": 1048577)")) ==
          "machine-config.mem_size_mib: 1048577 is out of range 16..1048576");
    const std::string long_args(vmm::kMaxBootArgsBytes + 1, 'x');
    CHECK(parse_error(boot(fmt::format(R"("kernel_image_path": "/k", "boot_args": "{}")", long_args))) ==
          "boot-source.boot_args: 4097 bytes is longer than the limit of 4096");
    const std::string max_args(vmm::kMaxBootArgsBytes, 'x');
    CHECK(vmm::parse_config_json(boot(fmt::format(R"("kernel_image_path": "/k", "boot_args": "{}")", max_args)))
              .boot_source->boot_args->size() == 4096);
}

TEST_CASE("config: missing required fields and refused nulls", "[config]") {
    CHECK(parse_error(R"({"boot-source": {}})") == "boot-source.kernel_image_path: required");
    CHECK(parse_error(R"({"boot-source": {"initrd_path": "/i"}})") == "boot-source.kernel_image_path: required");
    CHECK(parse_error(machine(R"("mem_size_mib": 128)")) == "machine-config.vcpu_count: required");
    CHECK(parse_error(machine(R"("vcpu_count": 2)")) == "machine-config.mem_size_mib: required");
    CHECK(parse_error(boot(R"("kernel_image_path": null)")) ==
          "boot-source.kernel_image_path: expected a string, got null");
    CHECK(parse_error(machine(R"("vcpu_count": null, "mem_size_mib": 128)")) ==
          "machine-config.vcpu_count: expected an unsigned integer, got null");
    CHECK(parse_error(machine(R"("vcpu_count": 1, "mem_size_mib": 128, "smt": null)")) ==
          "machine-config.smt: expected a boolean, got null");
    CHECK(parse_error(R"({"boot-source": null})") == "boot-source: expected an object, got null");
    CHECK(parse_error(boot(R"("kernel_image_path": "")")) == "boot-source.kernel_image_path: must not be empty");
    CHECK(parse_error(boot(R"("kernel_image_path": "/k", "initrd_path": "")")) ==
          "boot-source.initrd_path: must not be empty");
}

TEST_CASE("config: ACPI is on unless machine-config.acpi is false", "[config]") {
    CHECK(vmm::parse_config_json(machine(R"("vcpu_count": 1, "mem_size_mib": 128)")).machine_config.acpi);
    CHECK(MachineConfig{}.acpi);
    const VmConfig off = vmm::parse_config_json(machine(R"("vcpu_count": 1, "mem_size_mib": 128, "acpi": false)"));
    CHECK_FALSE(off.machine_config.acpi);
    // GET /vm/config and GET /machine-config show it, and it survives the round trip.
    const nlohmann::json j = vmm::to_json(off);
    CHECK(j["machine-config"]["acpi"] == false);
    CHECK(vmm::to_json(MachineConfig{})["acpi"] == true);
    CHECK(vmm::parse_config_json(j.dump()) == off);
}

TEST_CASE("config: smt is refused", "[config]") {
    CHECK(parse_error(machine(R"("vcpu_count": 2, "mem_size_mib": 128, "smt": true)")) ==
          "machine-config.smt: true is not supported (embervm does not emulate SMT topology)");
}

TEST_CASE("config: NUL bytes in strings are refused", "[config]") {
    CHECK(parse_error(boot(R"("kernel_image_path": "/k\u0000x")")) == "boot-source.kernel_image_path: contains a NUL byte");
    CHECK(parse_error(boot(R"("kernel_image_path": "/k", "boot_args": "a\u0000b")")) ==
          "boot-source.boot_args: contains a NUL byte");
}

TEST_CASE("config: duplicate keys are refused with their path", "[config]") {
    CHECK(parse_error(machine(R"("vcpu_count": 1, "mem_size_mib": 128, "vcpu_count": 2)")) ==
          "machine-config.vcpu_count: duplicate key");
    CHECK(parse_error(R"({"machine-config": {"vcpu_count": 1, "mem_size_mib": 128}, "machine-config": {}})") ==
          "machine-config: duplicate key");
    // The same key in sibling objects is fine (element 0), and paths through arrays carry the index.
    CHECK(parse_error(R"({"a": [{"x": 1}, {"x": 1, "x": 2}]})") == "a[1].x: duplicate key");
}

TEST_CASE("config: JSON syntax errors give the byte position", "[config]") {
    const std::string msg = parse_error("{\n  \"machine-config\": {\"vcpu_count\": 1,}\n}");
    CHECK_THAT(msg, Catch::StartsWith("config: JSON syntax error at byte 40 (line 2, column 38): "));
    CHECK_THAT(msg, !Catch::Contains("json.exception"));
    CHECK_THAT(parse_error(""), Catch::StartsWith("config: JSON syntax error at byte 1 (line 1, column 1): "));
    CHECK_THAT(parse_error("{} x"), Catch::StartsWith("config: JSON syntax error at byte 4"));
}

TEST_CASE("config: a number beyond a double is a configuration error", "[config]") {
    CHECK(parse_error(machine(R"("vcpu_count": 1, "mem_size_mib": 1e999)")) ==
          "config: JSON number out of range: number overflow parsing '1e999'");
}

TEST_CASE("config: structural validation of structs built without JSON", "[config]") {
    MachineConfig mc;
    CHECK_NOTHROW(vmm::validate(mc));
    mc.vcpu_count = 0;
    CHECK_THROWS_WITH(vmm::validate(mc), "machine-config.vcpu_count: 0 is out of range 1..32");
    mc = {};
    mc.mem_size_mib = 15;
    CHECK_THROWS_WITH(vmm::validate(mc), "machine-config.mem_size_mib: 15 is out of range 16..1048576");
    mc = {};
    mc.smt = true;
    CHECK_THROWS_AS(vmm::validate(mc), ConfigError);

    BootSourceConfig bs;
    CHECK_THROWS_WITH(vmm::validate(bs), "boot-source.kernel_image_path: must not be empty");
    bs.kernel_image_path = "/does/not/matter";
    CHECK_NOTHROW(vmm::validate(bs));  // no filesystem access
    bs.boot_args = std::string(5000, 'a');
    CHECK_THROWS_WITH(vmm::validate(bs), "boot-source.boot_args: 5000 bytes is longer than the limit of 4096");
}

TEST_CASE("config: file validation", "[config]") {
    TempDir dir;
    const std::string kernel = dir.write("vmlinux", "kernel");
    const std::string initrd = dir.write("initrd", "initrd");
    BootSourceConfig bs{kernel, initrd, "console=ttyS0"};
    CHECK_NOTHROW(vmm::validate_files(bs));

    bs.kernel_image_path = dir.path() + "/missing";
    CHECK_THROWS_WITH(vmm::validate_files(bs),
                      "boot-source.kernel_image_path: " + dir.path() + "/missing: No such file or directory");
    bs.kernel_image_path = dir.path();
    CHECK_THROWS_WITH(vmm::validate_files(bs), "boot-source.kernel_image_path: " + dir.path() + ": Is a directory");
    bs.kernel_image_path = kernel;
    bs.initrd_path = dir.path() + "/no-initrd";
    CHECK_THROWS_WITH(vmm::validate_files(bs),
                      "boot-source.initrd_path: " + dir.path() + "/no-initrd: No such file or directory");

    VmConfig c;
    CHECK_NOTHROW(vmm::validate_files(c));  // nothing to check without a boot source

    if (geteuid() != 0) {  // root reads anything
        const std::string secret = dir.write("secret", "x");
        std::filesystem::permissions(secret, std::filesystem::perms::none);
        CHECK_THROWS_WITH(vmm::validate_files(BootSourceConfig{secret, {}, {}}),
                          "boot-source.kernel_image_path: " + secret + ": Permission denied");
    }
}

TEST_CASE("config: load_config_file", "[config]") {
    TempDir dir;
    const std::string good = dir.write("vm.json", R"({"machine-config": {"vcpu_count": 2, "mem_size_mib": 256}})");
    const VmConfig c = vmm::load_config_file(good);
    CHECK(c.machine_config.vcpu_count == 2);
    CHECK(c.machine_config.mem_size_mib == 256);

    const std::string missing = dir.path() + "/nope.json";
    CHECK_THROWS_WITH(vmm::load_config_file(missing), "config file " + missing + ": No such file or directory");
    CHECK_THROWS_WITH(vmm::load_config_file(dir.path()), "config file " + dir.path() + ": Is a directory");

    const std::string bad_key = dir.write("bad.json", R"({"machine-config": {"vcpus": 2}})");
    CHECK_THROWS_WITH(vmm::load_config_file(bad_key), Catch::StartsWith("config file " + bad_key +
                                                                        ": machine-config.vcpus: unknown key"));
    const std::string bad_syntax = dir.write("syntax.json", "{\"boot-source\": ");
    CHECK_THROWS_WITH(vmm::load_config_file(bad_syntax),
                      Catch::StartsWith("config file " + bad_syntax + ": JSON syntax error at byte 17 (line 1, column 17): "));

    // Loading checks structure only: the kernel path is checked once overrides are applied.
    const std::string no_kernel_file = dir.write("k.json", R"({"boot-source": {"kernel_image_path": "/nonexistent"}})");
    CHECK(vmm::load_config_file(no_kernel_file).boot_source->kernel_image_path == "/nonexistent");
}

TEST_CASE("config: to_json round trip", "[config]") {
    VmConfig full;
    full.boot_source = BootSourceConfig{"/k", "/i", "console=ttyS0 \"quoted\""};
    full.machine_config = MachineConfig{8, 4096, false, true};
    const nlohmann::json j = vmm::to_json(full);
    CHECK(j["boot-source"]["kernel_image_path"] == "/k");
    CHECK(j["machine-config"]["vcpu_count"] == 8);
    CHECK(vmm::parse_config_json(j.dump()) == full);

    VmConfig minimal;  // no boot source, no initrd/boot_args: omitted, not null
    const nlohmann::json m = vmm::to_json(minimal);
    CHECK_FALSE(m.contains("boot-source"));
    CHECK(vmm::parse_config_json(m.dump()) == minimal);

    minimal.boot_source = BootSourceConfig{"/k", {}, {}};
    const nlohmann::json b = vmm::to_json(minimal);
    CHECK_FALSE(b["boot-source"].contains("initrd_path"));
    CHECK(vmm::parse_config_json(b.dump(2)) == minimal);
}

TEST_CASE("config: to_json writes bytes that are not UTF-8 as \\xHH", "[config]") {
    // Valid UTF-8 (ASCII, 2-, 3- and 4-byte sequences) is kept as is, backslashes included.
    CHECK(vmm::json_text("/var/tmp/disk.img") == "/var/tmp/disk.img");
    CHECK(vmm::json_text("/tmp/\xc3\xa9t\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80") ==
          "/tmp/\xc3\xa9t\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80");
    CHECK(vmm::json_text("a\\b") == "a\\b");
    // A stray byte, a truncated sequence, an overlong form, a surrogate, a code point above
    // U+10FFFF: each byte outside a valid sequence is escaped, and so is every backslash.
    CHECK(vmm::json_text("/tmp/\xff.img") == "/tmp/\\xff.img");
    CHECK(vmm::json_text("\\\xff") == "\\x5c\\xff");
    CHECK(vmm::json_text("x\xc3") == "x\\xc3");
    CHECK(vmm::json_text("\xc0\xaf") == "\\xc0\\xaf");
    CHECK(vmm::json_text("\xed\xa0\x80") == "\\xed\\xa0\\x80");
    CHECK(vmm::json_text("\xf4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80");
    CHECK(vmm::json_text("\xc3\xa9\xff") == "\xc3\xa9\\xff");

    // Every string field a command line can fill: the document serialises (no exception from
    // dump(), which refuses invalid UTF-8) and names the bytes.
    VmConfig c;
    c.boot_source = BootSourceConfig{"/k\xff", "/i\xfe", "console=ttyS0 x=\x80"};
    vmm::DriveConfig d;
    d.drive_id = "rootfs";
    d.path_on_host = "/var/tmp/\xff\xfe.img";
    c.drives.push_back(d);
    vmm::NetworkInterfaceConfig n;
    n.iface_id = "eth0";
    n.host_dev_name = "tap\xff";
    c.network_interfaces.push_back(n);
    c.logger = vmm::LoggerConfig{};
    c.logger->log_path = "/log\xff";
    c.metrics = vmm::MetricsConfig{"/metrics\xff", 60};
    const std::string text = vmm::to_json(c).dump();
    const nlohmann::json j = nlohmann::json::parse(text);
    CHECK(j["boot-source"]["kernel_image_path"] == "/k\\xff");
    CHECK(j["boot-source"]["initrd_path"] == "/i\\xfe");
    CHECK(j["boot-source"]["boot_args"] == "console=ttyS0 x=\\x80");
    CHECK(j["drives"][0]["path_on_host"] == "/var/tmp/\\xff\\xfe.img");
    CHECK(j["network-interfaces"][0]["host_dev_name"] == "tap\\xff");
    CHECK(j["logger"]["log_path"] == "/log\\xff");
    CHECK(j["metrics"]["metrics_path"] == "/metrics\\xff");
}

}  // namespace unit_config_test
