// Tests for vmm/cli: flag syntax and errors, and resolve_config's merge of flags over a
// config file.
#include <catch2/catch.hpp>

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/unit/temp_dir.h"
#include "vmm/config/cli.h"
#include "vmm/config/from_json.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_cli_test {

using embervm::vmm::BootProtocol;
using embervm::vmm::CliError;
using embervm::vmm::CliOptions;
using embervm::vmm::ConfigError;
using embervm::vmm::VmConfig;
namespace vmm = embervm::vmm;
using embervm::log::Level;

namespace {

using embervm::test::TempDir;

CliOptions parse(std::vector<const char*> args) {
    args.insert(args.begin(), "embervm");
    return vmm::parse_cli(static_cast<int>(args.size()), args.data());
}

std::string cli_error(std::vector<const char*> args) {
    try {
        parse(std::move(args));
    } catch (const CliError& e) {
        return e.what();
    }
    FAIL("parse_cli accepted the arguments");
    return {};
}

std::string resolve_error(const CliOptions& o) {
    try {
        vmm::resolve_config(o);
    } catch (const ConfigError& e) {
        return e.what();
    }
    FAIL("resolve_config accepted the options");
    return {};
}

}  // namespace

TEST_CASE("cli: no flags", "[cli]") {
    const CliOptions o = parse({});
    CHECK_FALSE(o.config_path);
    CHECK_FALSE(o.kernel);
    CHECK_FALSE(o.log_level);
    CHECK(o.boot_protocol == BootProtocol::Auto);
    CHECK_FALSE(o.no_acpi);
    CHECK_FALSE(o.help);
    CHECK_FALSE(o.version);
    const char* argv0_only[] = {"embervm"};
    CHECK_NOTHROW(vmm::parse_cli(1, argv0_only));
    CHECK_NOTHROW(vmm::parse_cli(0, nullptr));
}

TEST_CASE("cli: every flag, separate values", "[cli]") {
    const CliOptions o = parse({"--config", "/c.json", "--kernel", "/k", "--initrd", "/i", "--cmdline",
                                "console=ttyS0 quiet", "--vcpus", "4", "--mem", "512", "--serial-out", "/tmp/s.log",
                                "--log-level", "debug", "--boot-protocol", "linux64", "--no-acpi", "--help",
                                "--version"});
    CHECK(o.config_path == "/c.json");
    CHECK(o.kernel == "/k");
    CHECK(o.initrd == "/i");
    CHECK(o.cmdline == "console=ttyS0 quiet");
    CHECK(o.vcpus == 4u);
    CHECK(o.mem_mib == 512u);
    CHECK(o.serial_out == "/tmp/s.log");
    CHECK(o.log_level == Level::Debug);
    CHECK(o.boot_protocol == BootProtocol::Linux64);
    CHECK(o.no_acpi);
    CHECK(o.help);
    CHECK(o.version);
}

TEST_CASE("cli: --flag=value form and aliases", "[cli]") {
    const CliOptions o = parse({"--config-file=/c.json", "--kernel=/k", "--cmdline=root=/dev/vda rw", "--vcpus=2",
                                "--mem=64", "--log-level=WARN", "--boot-protocol=pvh"});
    CHECK(o.config_path == "/c.json");
    CHECK(o.kernel == "/k");
    CHECK(o.cmdline == "root=/dev/vda rw");  // only the first '=' splits
    CHECK(o.vcpus == 2u);
    CHECK(o.mem_mib == 64u);
    CHECK(o.log_level == Level::Warn);
    CHECK(o.boot_protocol == BootProtocol::Pvh);
    CHECK(parse({"-h"}).help);
    CHECK(parse({"--cmdline="}).cmdline == "");
    CHECK(parse({"--cmdline=--weird"}).cmdline == "--weird");
    CHECK(parse({"--cmdline", "-single-dash"}).cmdline == "-single-dash");
}

TEST_CASE("cli: unknown flags and stray arguments", "[cli]") {
    CHECK(cli_error({"--kernal", "/k"}) == "--kernal: unknown flag (see --help)");
    CHECK(cli_error({"--kernal=/k"}) == "--kernal: unknown flag (see --help)");
    CHECK(cli_error({"-k"}) == "-k: unknown flag (see --help)");
    CHECK(cli_error({"vmlinux"}) == "unexpected argument 'vmlinux' (embervm takes only flags; see --help)");
}

TEST_CASE("cli: missing and unwanted values", "[cli]") {
    CHECK(cli_error({"--kernel"}) == "--kernel: missing value");
    CHECK(cli_error({"--kernel", "--vcpus", "2"}) == "--kernel: missing value");
    CHECK(cli_error({"--kernel="}) == "--kernel: empty value");
    CHECK(cli_error({"--config", ""}) == "--config: empty value");
    CHECK(cli_error({"--serial-out="}) == "--serial-out: empty value");
    CHECK(cli_error({"--help=yes"}) == "--help: takes no value");
    CHECK(cli_error({"--version=1"}) == "--version: takes no value");
    CHECK(cli_error({"--no-acpi=false"}) == "--no-acpi: takes no value");
    CHECK(cli_error({"--no-acpi", "--no-acpi"}) == "--no-acpi: given more than once");
}

TEST_CASE("cli: bad numbers", "[cli]") {
    CHECK(cli_error({"--vcpus", "two"}) == "--vcpus: expected an unsigned integer, got 'two'");
    CHECK(cli_error({"--vcpus", "-1"}) == "--vcpus: expected an unsigned integer, got '-1'");
    CHECK(cli_error({"--vcpus", "+2"}) == "--vcpus: expected an unsigned integer, got '+2'");
    CHECK(cli_error({"--vcpus", "2.5"}) == "--vcpus: expected an unsigned integer, got '2.5'");
    CHECK(cli_error({"--vcpus", " 2"}) == "--vcpus: expected an unsigned integer, got ' 2'");
    CHECK(cli_error({"--vcpus="}) == "--vcpus: expected an unsigned integer, got ''");
    CHECK(cli_error({"--mem", "512M"}) == "--mem: expected an unsigned integer, got '512M'");
    CHECK(cli_error({"--vcpus", "0"}) == "--vcpus: 0 is out of range 1..32");
    CHECK(cli_error({"--vcpus", "33"}) == "--vcpus: 33 is out of range 1..32");
    CHECK(cli_error({"--mem", "8"}) == "--mem: 8 is out of range 16..1048576");
    CHECK(cli_error({"--mem", "99999999999999999999999"}) == "--mem: 99999999999999999999999 is out of range 16..1048576");
}

TEST_CASE("cli: bad enumerations and long command lines", "[cli]") {
    CHECK(cli_error({"--log-level", "loud"}) == "--log-level: unknown level 'loud' (expected off, error, warn, info, debug or trace)");
    CHECK(cli_error({"--boot-protocol", "bzimage"}) ==
          "--boot-protocol: unknown protocol 'bzimage' (expected auto, linux64 or pvh)");
    const std::string long_cmdline(vmm::kMaxBootArgsBytes + 1, 'x');
    CHECK(cli_error({"--cmdline", long_cmdline.c_str()}) == "--cmdline: 4097 bytes is longer than the limit of 4096");
}

TEST_CASE("cli: duplicate flags, including aliases", "[cli]") {
    CHECK(cli_error({"--vcpus", "1", "--vcpus=2"}) == "--vcpus: given more than once");
    CHECK(cli_error({"--config", "/a", "--config-file", "/b"}) == "--config-file: given more than once (also as --config)");
    CHECK(cli_error({"--help", "-h"}) == "-h: given more than once (also as --help)");
}

TEST_CASE("cli: the first bad argument is the one reported", "[cli]") {
    CHECK(cli_error({"--frobnicate", "--vcpus", "x"}) == "--frobnicate: unknown flag (see --help)");
    CHECK(cli_error({"--vcpus", "x", "--frobnicate"}) == "--vcpus: expected an unsigned integer, got 'x'");
    CHECK(cli_error({"--vcpus", "x", "stray"}) == "--vcpus: expected an unsigned integer, got 'x'");
    CHECK(cli_error({"--vcpus", "1", "--vcpus"}) == "--vcpus: given more than once");
    CHECK(cli_error({"--help", "--help=yes"}) == "--help: given more than once");
    CHECK(cli_error({"--kernel", "/k", "--"}) == "--: unknown flag (see --help)");
    CHECK(cli_error({"-hx"}) == "-hx: unknown flag (see --help)");
    CHECK(cli_error({"-h=1"}) == "-h=1: unknown flag (see --help)");
    CHECK(cli_error({"---kernel", "/k"}) == "---kernel: unknown flag (see --help)");
    CHECK(cli_error({"--no-api", "--api-sock", "/s"}) == "--no-api: cannot be combined with --api-sock");
}

TEST_CASE("cli: values that look like flags, and repeated flags", "[cli]") {
    const CliOptions o = parse({"--cmdline", "-h", "--kernel=--odd", "--serial-out", "-"});
    CHECK(o.cmdline == "-h");
    CHECK_FALSE(o.help);
    CHECK(o.kernel == "--odd");
    CHECK(o.serial_out == "-");
    CHECK(cli_error({"--kernel=", "--vcpus", "2"}) == "--kernel: empty value");
    CHECK(cli_error({"--kernel", "--", "x"}) == "--kernel: missing value");

    const CliOptions d = parse({"--drive", "id=a,path=/a", "--net=id=eth0,tap=tap0", "--drive=id=b,path=/b,ro",
                                "--net", "id=eth1,tap=tap1"});
    REQUIRE(d.drives.size() == 2);
    CHECK(d.drives[0].drive_id == "a");
    CHECK(d.drives[1].path_on_host == "/b");
    CHECK(d.drives[1].is_read_only);
    REQUIRE(d.network_interfaces.size() == 2);
    CHECK(d.network_interfaces[1].host_dev_name == "tap1");
    // vhost-user-blk: socket= instead of path=.
    const CliOptions vu = parse({"--drive", "id=vu,socket=/run/qsd.sock,root"});
    REQUIRE(vu.drives.size() == 1);
    CHECK(vu.drives[0].socket == "/run/qsd.sock");
    CHECK(vu.drives[0].path_on_host.empty());
    CHECK(vu.drives[0].is_root_device);
    CHECK(cli_error({"--balloon", "amount_mib=1", "--balloon=amount_mib=2"}) == "--balloon: given more than once");
}

TEST_CASE("cli: resolve_config from flags alone", "[cli]") {
    TempDir dir;
    const std::string kernel = dir.write("vmlinux", "k");
    const std::string initrd = dir.write("initrd", "i");

    const VmConfig c = vmm::resolve_config(parse({"--kernel", kernel.c_str(), "--initrd", initrd.c_str(), "--cmdline",
                                                  "console=ttyS0", "--vcpus", "2", "--mem", "256"}));
    REQUIRE(c.boot_source);
    CHECK(c.boot_source->kernel_image_path == kernel);
    CHECK(c.boot_source->initrd_path == initrd);
    CHECK(c.boot_source->boot_args == "console=ttyS0");
    CHECK(c.machine_config.vcpu_count == 2);
    CHECK(c.machine_config.mem_size_mib == 256);

    CHECK_FALSE(c.enable_pci);
    CHECK(vmm::resolve_config(parse({"--kernel", kernel.c_str(), "--enable-pci"})).enable_pci);
    CHECK(cli_error({"--enable-pci=yes"}) == "--enable-pci: takes no value");

    const VmConfig d = vmm::resolve_config(parse({"--kernel", kernel.c_str()}));
    CHECK(d.machine_config == vmm::MachineConfig{});
    CHECK_FALSE(d.boot_source->boot_args);

    CHECK(resolve_error(parse({})) == "no kernel: give --kernel or --config");
    CHECK(resolve_error(parse({"--initrd", initrd.c_str()})) == "no kernel: give --kernel or --config");
    CHECK_THROWS_AS(vmm::resolve_config(parse({})), CliError);

    const std::string missing = dir.path() + "/missing";
    CHECK(resolve_error(parse({"--kernel", missing.c_str()})) == "--kernel: " + missing + ": No such file or directory");
    CHECK(resolve_error(parse({"--kernel", kernel.c_str(), "--initrd", missing.c_str()})) ==
          "--initrd: " + missing + ": No such file or directory");
}

TEST_CASE("cli: resolve_config with a config file and overrides", "[cli]") {
    TempDir dir;
    const std::string kernel = dir.write("vmlinux", "k");
    const std::string other_kernel = dir.write("vmlinux2", "k2");
    const std::string initrd = dir.write("initrd", "i");
    const std::string config = dir.write("vm.json", fmt::format(R"({{
        "boot-source": {{"kernel_image_path": "{}", "initrd_path": "{}", "boot_args": "console=ttyS0"}},
        "machine-config": {{"vcpu_count": 2, "mem_size_mib": 256, "track_dirty_pages": true}}
    }})", kernel, initrd));

    const VmConfig plain = vmm::resolve_config(parse({"--config", config.c_str()}));
    CHECK(plain == vmm::load_config_file(config));

    const VmConfig o = vmm::resolve_config(parse({"--config", config.c_str(), "--kernel", other_kernel.c_str(),
                                                  "--cmdline", "quiet", "--vcpus", "4", "--mem", "1024"}));
    CHECK(o.boot_source->kernel_image_path == other_kernel);
    CHECK(o.boot_source->initrd_path == initrd);  // not overridden
    CHECK(o.boot_source->boot_args == "quiet");
    CHECK(o.machine_config.vcpu_count == 4);
    CHECK(o.machine_config.mem_size_mib == 1024);
    CHECK(o.machine_config.track_dirty_pages);  // not overridden
    CHECK(o.machine_config.acpi);               // the default
    CHECK_FALSE(vmm::resolve_config(parse({"--config", config.c_str(), "--no-acpi"})).machine_config.acpi);

    // A kernel path in the file that does not exist is named by its config field...
    const std::string missing = dir.path() + "/gone";
    const std::string bad_kernel = dir.write("bad.json", fmt::format(R"({{"boot-source": {{"kernel_image_path": "{}"}}}})",
                                                                     missing));
    CHECK(resolve_error(parse({"--config", bad_kernel.c_str()})) ==
          "boot-source.kernel_image_path: " + missing + ": No such file or directory");
    // ...and --kernel can replace it before the file check runs.
    CHECK(vmm::resolve_config(parse({"--config", bad_kernel.c_str(), "--kernel", kernel.c_str()}))
              .boot_source->kernel_image_path == kernel);

    // A config without a boot source needs --kernel.
    const std::string no_boot = dir.write("noboot.json", R"({"machine-config": {"vcpu_count": 1, "mem_size_mib": 64}})");
    CHECK(resolve_error(parse({"--config", no_boot.c_str()})) ==
          "no kernel: config file " + no_boot + " has no boot-source; give --kernel");
    const VmConfig nb = vmm::resolve_config(parse({"--config", no_boot.c_str(), "--kernel", kernel.c_str()}));
    CHECK(nb.machine_config.mem_size_mib == 64);

    // Errors from the file itself come through as ConfigError.
    const std::string missing_config = dir.path() + "/none.json";
    CHECK(resolve_error(parse({"--config", missing_config.c_str()})) ==
          "config file " + missing_config + ": No such file or directory");
}

TEST_CASE("cli: usage text lists every flag and the exit statuses", "[cli]") {
    const std::string u = vmm::usage_text();
    for (const char* flag : {"--config PATH", "--config-file PATH", "--kernel PATH", "--initrd PATH", "--cmdline STRING",
                             "--vcpus N", "--mem MIB", "--serial-out PATH", "--log-level LEVEL", "--boot-protocol",
                             "--help", "--version", "auto, linux64 or pvh", "--drive SPEC", "--net SPEC",
                             "--balloon SPEC", "--api-sock PATH", "--no-api", "--no-acpi", "--id ID", "--help, -h",
                             "Usage: embervm [FLAGS]"}) {
        CHECK_THAT(u, Catch::Contains(flag));
    }
    CHECK_THAT(u, Catch::Contains("1..32"));
    CHECK_THAT(u, Catch::Contains("16..1048576"));
    CHECK_THAT(u, Catch::Contains("Exit status"));
    CHECK_THAT(u, Catch::Contains("128+N"));
    CHECK_THAT(u, Catch::Contains("debug-exit"));
    CHECK(std::string(vmm::boot_protocol_name(BootProtocol::Pvh)) == "pvh");
}

TEST_CASE("cli: --restore takes a snapshot and its memory file, and no flag that defines a VM", "[cli]") {
    const CliOptions o = parse({"--restore", "/s/vm.snap", "--restore-mem", "/s/vm.mem", "--serial-out", "/o"});
    CHECK(o.restore == "/s/vm.snap");
    CHECK(o.restore_mem == "/s/vm.mem");
    CHECK(embervm::vmm::resolve_config(o) == VmConfig{});  // no --kernel needed: the snapshot has the VM
    CHECK(cli_error({"--restore", "/s/vm.snap"}) ==
          "--restore: needs --restore-mem MEMFILE (the snapshot's memory file) or --restore-uffd SOCKET");
    CHECK(cli_error({"--restore-mem", "/s/vm.mem"}) == "--restore-mem: needs --restore SNAPSHOT");
    // --restore-uffd: the memory comes from a page-fault handler instead of the file.
    const CliOptions u = parse({"--restore", "/s/vm.snap", "--restore-uffd", "/run/h.sock"});
    CHECK(u.restore_uffd == "/run/h.sock");
    CHECK_FALSE(u.restore_mem);
    CHECK(cli_error({"--restore-uffd", "/run/h.sock"}) == "--restore-uffd: needs --restore SNAPSHOT");
    CHECK(cli_error({"--restore", "/s", "--restore-mem", "/m", "--restore-uffd", "/h"}) ==
          "--restore-uffd: cannot be combined with --restore-mem (the memory comes from one of them)");
    CHECK(cli_error({"--restore", "/s", "--restore-mem", "/m", "--kernel", "/k"}) ==
          "--kernel: cannot be combined with --restore (the snapshot holds the VM's configuration; with the API use "
          "PUT /snapshot/load)");
    CHECK_THAT(cli_error({"--restore", "/s", "--restore-mem", "/m", "--mem", "64"}), Catch::StartsWith("--mem: cannot"));
}

}  // namespace unit_cli_test
