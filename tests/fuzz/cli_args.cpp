// Fuzz target cli_args: the command line through parse_cli. The input is split at NUL bytes
// into the arguments after argv[0]. A bad command line must end in CliError (one line naming
// the flag); any other exception or a crash is a bug. What is accepted is in range, and the
// devices it describes go through the validation resolve_config gives them (a ConfigError or
// nothing). The config file and the files named are not opened: resolve_config would touch
// the fuzzed paths.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "tests/fuzz/boot_harness.h"
#include "vmm/config/cli.h"
#include "vmm/config/validate.h"

using namespace embervm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::vector<std::string> args{"embervm"};
    std::string current;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == 0) {
            args.push_back(std::move(current));
            current.clear();
        } else {
            current.push_back(static_cast<char>(data[i]));
        }
    }
    if (!current.empty()) args.push_back(std::move(current));
    std::vector<const char*> argv;
    for (const std::string& a : args) argv.push_back(a.c_str());
    argv.push_back(nullptr);

    vmm::CliOptions o;
    try {
        o = vmm::parse_cli(static_cast<int>(args.size()), argv.data());
    } catch (const vmm::CliError&) {
        return 0;
    } catch (const std::exception& e) {
        fuzz::fuzz_fail("parse_cli threw something other than CliError:", e.what());
    }
    fuzz::fuzz_check(!o.vcpus || (*o.vcpus >= vmm::kMinVcpus && *o.vcpus <= vmm::kMaxVcpus), "--vcpus out of range");
    fuzz::fuzz_check(!o.mem_mib || (*o.mem_mib >= vmm::kMinMemSizeMib && *o.mem_mib <= vmm::kMaxMemSizeMib),
                     "--mem out of range");
    try {
        vmm::validate_drives(o.drives, "--drive");
        vmm::validate_network_interfaces(o.network_interfaces, "--net");
        if (o.balloon) vmm::validate(*o.balloon, "--balloon");
    } catch (const vmm::ConfigError&) {
    } catch (const std::exception& e) {
        fuzz::fuzz_fail("validating the command line's devices threw something other than ConfigError:", e.what());
    }
    return 0;
}
