// embervm: command-line entry point. Parses flags and the config file, then runs one VM.
//
// Exit status: 0 when the guest rebooted or powered off, the debug-exit status a test guest
// chose, 1 on a VMM error, 2 on a bad command line or configuration, 128+N on signal N.
#include <cstdio>
#include <exception>

#include <fmt/format.h>

#include "vmm/cli.h"
#include "vmm/config.h"
#include "vmm/log.h"
#include "vmm/vmm.h"

int main(int argc, char** argv) {
    using namespace embervm;
    vmm::CliOptions cli;
    vmm::VmConfig config;
    try {
        cli = vmm::parse_cli(argc, argv);
        if (cli.help) {
            fmt::print("{}", vmm::usage_text());
            return 0;
        }
        if (cli.version) {
            fmt::print("embervm {}\n", EMBERVM_VERSION);
            return 0;
        }
        if (cli.log_level) {
            log::set_level(*cli.log_level);
        }
        config = vmm::resolve_config(cli);
    } catch (const std::exception& e) {
        fmt::print(stderr, "embervm: {}\n", e.what());
        return 2;
    }

    try {
        vmm::RunOptions options;
        options.serial_out = cli.serial_out;
        options.prefer_pvh = cli.boot_protocol != vmm::BootProtocol::Linux64;
        vmm::Vmm vm(std::move(config), options);
        return vm.run().status;
    } catch (const vmm::ConfigError& e) {
        // Found only when the VM is built (e.g. a file that is not a kernel image).
        fmt::print(stderr, "embervm: {}\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        log::error("{}", e.what());
        return 1;
    }
}
