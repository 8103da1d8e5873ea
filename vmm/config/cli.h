// The command line: flags, their parsing, and how they combine with a config file into the
// one VmConfig the VMM runs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vmm/config/config.h"
#include "vmm/sys/log.h"

namespace embervm::vmm {

// A bad command line; one line naming the flag ("--vcpus: expected an unsigned integer, got
// 'x'"). Derives from ConfigError so callers can map both to exit status 2 with one catch.
class CliError : public ConfigError {
public:
    using ConfigError::ConfigError;
};

// Which entry point to use for an ELF kernel. Auto: the PVH entry if the kernel has a PVH
// (XEN_ELFNOTE_PHYS32_ENTRY) note, else the 64-bit Linux boot protocol.
enum class BootProtocol { Auto, Linux64, Pvh };

inline constexpr size_t kMaxInstanceIdBytes = 64;

struct CliOptions {
    std::optional<std::string> config_path;  // --config / --config-file
    std::optional<std::string> kernel;       // --kernel
    std::optional<std::string> initrd;       // --initrd
    std::optional<std::string> cmdline;      // --cmdline (may be empty)
    std::optional<uint32_t> vcpus;           // --vcpus, range-checked
    std::optional<uint64_t> mem_mib;         // --mem, range-checked
    bool no_acpi = false;                    // --no-acpi: machine-config.acpi = false
    bool enable_pci = false;                 // --enable-pci: enable_pci = true
    std::vector<DriveConfig> drives;         // --drive (repeatable), added to the file's drives
    std::vector<NetworkInterfaceConfig> network_interfaces;  // --net (repeatable), added
    std::optional<BalloonConfig> balloon;    // --balloon, replaces the file's
    std::optional<VsockConfig> vsock;        // --vsock, replaces the file's
    std::vector<FsConfig> fs;                // --fs (repeatable), added to the file's
    std::optional<std::string> serial_out;   // --serial-out: guest console to a file
    std::optional<ConsoleType> console;      // --console serial|virtio: replaces the file's
    std::optional<log::Level> log_level;     // --log-level
    std::optional<std::string> log_path;     // --log-path: log lines to a file or named pipe
    std::optional<std::string> metrics_path; // --metrics-path: sets metrics.metrics_path
    BootProtocol boot_protocol = BootProtocol::Auto;
    std::optional<std::string> api_sock;     // --api-sock: serve the HTTP API there
    bool no_api = false;                     // --no-api (the default; refused with --api-sock)
    std::optional<std::string> instance_id;  // --id
    bool no_seccomp = false;                 // --no-seccomp: no seccomp filters on any thread
    std::optional<std::string> restore;      // --restore: run this snapshot instead of booting
    std::optional<std::string> restore_mem;  // --restore-mem: its memory file (with --restore)
    std::optional<std::string> restore_uffd; // --restore-uffd: its page-fault handler's socket
    bool help = false;     // --help / -h
    bool version = false;  // --version
};

// Parses argv (argv[0] is the program name). Accepts "--flag value" and "--flag=value"; a
// separate value must not start with "--" (use "--cmdline=--foo" for that). Throws CliError on
// an unknown flag, a missing or bad value, or a flag given twice (aliases count as the same).
CliOptions parse_cli(int argc, const char* const* argv);

// The VmConfig to run (empty with --restore: the snapshot has it): the --config file if given, with --kernel/--initrd/--cmdline/--vcpus/
// --mem/--no-acpi overriding its fields; otherwise the flags alone (then --kernel is required, unless
// --api-sock is given: the result may then lack a boot source).
// Runs validate() and validate_files() on the result; throws ConfigError (CliError for
// command-line problems such as "no kernel: give --kernel or --config").
VmConfig resolve_config(const CliOptions& options);

// Applies the config's "logger" section to the process logger, then --log-path and
// --log-level over it. Throws ConfigError ("logger.log_path: ...", "--log-path: /x: Permission
// denied").
void apply_cli_logging(const CliOptions& options, const VmConfig& config);

// --help text: every flag and the exit statuses.
std::string usage_text();

const char* boot_protocol_name(BootProtocol protocol);

}  // namespace embervm::vmm
