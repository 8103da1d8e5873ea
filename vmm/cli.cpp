// Command-line parsing and the merge of flags with a config file into one VmConfig.
#include "vmm/cli.h"

#include <charconv>
#include <map>
#include <string_view>

#include <fmt/format.h>

namespace embervm::vmm {

namespace {

enum class Flag { Config, Kernel, Initrd, Cmdline, Vcpus, Mem, Drive, SerialOut, LogLevel, BootProtocol, Help, Version };

struct FlagSpec {
    std::string_view name;
    Flag flag;
    bool takes_value;
};

// Aliases share a Flag, so giving both counts as a duplicate.
constexpr FlagSpec kFlags[] = {
    {"--config", Flag::Config, true},
    {"--config-file", Flag::Config, true},  // Firecracker's name
    {"--kernel", Flag::Kernel, true},
    {"--initrd", Flag::Initrd, true},
    {"--cmdline", Flag::Cmdline, true},
    {"--vcpus", Flag::Vcpus, true},
    {"--mem", Flag::Mem, true},
    {"--drive", Flag::Drive, true},  // repeatable
    {"--serial-out", Flag::SerialOut, true},
    {"--log-level", Flag::LogLevel, true},
    {"--boot-protocol", Flag::BootProtocol, true},
    {"--help", Flag::Help, false},
    {"-h", Flag::Help, false},
    {"--version", Flag::Version, false},
};

const FlagSpec* find_flag(std::string_view name) {
    for (const FlagSpec& spec : kFlags) {
        if (spec.name == name) return &spec;
    }
    return nullptr;
}

CliError flag_error(std::string_view flag, std::string_view what) {
    return CliError(fmt::format("{}: {}", flag, what));
}

uint64_t parse_uint(std::string_view flag, std::string_view text, uint64_t min, uint64_t max) {
    uint64_t value = 0;
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec == std::errc::result_out_of_range) {
        throw flag_error(flag, fmt::format("{} is out of range {}..{}", text, min, max));
    }
    if (text.empty() || ec != std::errc() || ptr != end) {
        throw flag_error(flag, fmt::format("expected an unsigned integer, got '{}'", text));
    }
    if (value < min || value > max) throw flag_error(flag, fmt::format("{} is out of range {}..{}", value, min, max));
    return value;
}

std::string non_empty(std::string_view flag, std::string_view value) {
    if (value.empty()) throw flag_error(flag, "empty value");
    return std::string(value);
}

// "--drive id=rootfs,path=disk.img,root,ro,cache=writeback,io_engine=async": the fields of a
// config-file drive as comma-separated key[=value] pairs (flags without a value mean "on").
DriveConfig parse_drive(std::string_view flag, std::string_view text) {
    DriveConfig d;
    bool have_id = false;
    bool have_path = false;
    const auto on_off = [&](std::string_view key, std::optional<std::string_view> v) {
        if (!v || *v == "on" || *v == "true") return true;
        if (*v == "off" || *v == "false") return false;
        throw flag_error(flag, fmt::format("{}: expected on or off, got '{}'", key, *v));
    };
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t comma = text.find(',', pos);
        if (comma == std::string_view::npos) comma = text.size();
        const std::string_view item = text.substr(pos, comma - pos);
        pos = comma + 1;
        if (item.empty()) throw flag_error(flag, fmt::format("empty field in '{}'", text));
        std::string_view key = item;
        std::optional<std::string_view> v;
        if (const auto eq = item.find('='); eq != std::string_view::npos) {
            key = item.substr(0, eq);
            v = item.substr(eq + 1);
        }
        const auto need = [&]() -> std::string_view {
            if (!v || v->empty()) throw flag_error(flag, fmt::format("{} needs a value ({}=...)", key, key));
            return *v;
        };
        if (key == "id") {
            d.drive_id = std::string(need());
            have_id = true;
        } else if (key == "path") {
            d.path_on_host = std::string(need());
            have_path = true;
        } else if (key == "ro") {
            d.is_read_only = on_off(key, v);
        } else if (key == "root") {
            d.is_root_device = on_off(key, v);
        } else if (key == "partuuid") {
            d.partuuid = std::string(need());
        } else if (key == "cache") {
            const std::string_view c = need();
            if (c == "unsafe" || c == "Unsafe") d.cache_type = CacheType::Unsafe;
            else if (c == "writeback" || c == "Writeback") d.cache_type = CacheType::Writeback;
            else throw flag_error(flag, fmt::format("cache: expected unsafe or writeback, got '{}'", c));
        } else if (key == "io_engine") {
            const std::string_view e = need();
            if (e == "sync" || e == "Sync") d.io_engine = IoEngineKind::Sync;
            else if (e == "async" || e == "Async") d.io_engine = IoEngineKind::Async;
            else throw flag_error(flag, fmt::format("io_engine: expected sync or async, got '{}'", e));
        } else {
            throw flag_error(flag, fmt::format("unknown field '{}' (expected id, path, ro, root, partuuid, cache, "
                                               "io_engine)", key));
        }
        if (comma == text.size()) break;
    }
    if (!have_path) throw flag_error(flag, fmt::format("'{}' has no path=", text));
    if (!have_id) throw flag_error(flag, fmt::format("'{}' has no id=", text));
    return d;
}

}  // namespace

const char* boot_protocol_name(BootProtocol protocol) {
    switch (protocol) {
        case BootProtocol::Auto: return "auto";
        case BootProtocol::Linux64: return "linux64";
        case BootProtocol::Pvh: return "pvh";
    }
    return "?";
}

CliOptions parse_cli(int argc, const char* const* argv) {
    CliOptions o;
    std::map<Flag, std::string_view> seen;  // flag -> the spelling first used
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (!arg.starts_with("-")) {
            throw CliError(fmt::format("unexpected argument '{}' (embervm takes only flags; see --help)", arg));
        }
        std::string_view name = arg;
        std::optional<std::string_view> value;
        if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
            name = arg.substr(0, eq);
            value = arg.substr(eq + 1);
        }
        const FlagSpec* spec = find_flag(name);
        if (spec == nullptr) throw flag_error(name, "unknown flag (see --help)");
        if (const auto [it, inserted] = seen.emplace(spec->flag, spec->name); !inserted && spec->flag != Flag::Drive) {
            if (it->second == spec->name) throw flag_error(name, "given more than once");
            throw flag_error(name, fmt::format("given more than once (also as {})", it->second));
        }
        if (!spec->takes_value && value) throw flag_error(name, "takes no value");
        if (spec->takes_value && !value) {
            if (i + 1 >= argc || std::string_view(argv[i + 1]).starts_with("--")) {
                throw flag_error(name, "missing value");
            }
            value = argv[++i];
        }

        switch (spec->flag) {
            case Flag::Config: o.config_path = non_empty(name, *value); break;
            case Flag::Kernel: o.kernel = non_empty(name, *value); break;
            case Flag::Initrd: o.initrd = non_empty(name, *value); break;
            case Flag::Drive: o.drives.push_back(parse_drive(name, *value)); break;
            case Flag::SerialOut: o.serial_out = non_empty(name, *value); break;
            case Flag::Cmdline:
                if (value->size() > kMaxBootArgsBytes) {
                    throw flag_error(name, fmt::format("{} bytes is longer than the limit of {}", value->size(),
                                                       kMaxBootArgsBytes));
                }
                o.cmdline = std::string(*value);
                break;
            case Flag::Vcpus: o.vcpus = static_cast<uint32_t>(parse_uint(name, *value, kMinVcpus, kMaxVcpus)); break;
            case Flag::Mem: o.mem_mib = parse_uint(name, *value, kMinMemSizeMib, kMaxMemSizeMib); break;
            case Flag::LogLevel: {
                log::Level level{};
                if (!log::parse_level(*value, &level)) {
                    throw flag_error(name, fmt::format("unknown level '{}' (expected error, warn, info or debug)", *value));
                }
                o.log_level = level;
                break;
            }
            case Flag::BootProtocol:
                if (*value == "auto") o.boot_protocol = BootProtocol::Auto;
                else if (*value == "linux64") o.boot_protocol = BootProtocol::Linux64;
                else if (*value == "pvh") o.boot_protocol = BootProtocol::Pvh;
                else throw flag_error(name, fmt::format("unknown protocol '{}' (expected auto, linux64 or pvh)", *value));
                break;
            case Flag::Help: o.help = true; break;
            case Flag::Version: o.version = true; break;
        }
    }
    return o;
}

VmConfig resolve_config(const CliOptions& o) {
    VmConfig config;
    if (o.config_path) config = load_config_file(*o.config_path);

    if (o.kernel) {
        if (!config.boot_source) config.boot_source.emplace();
        config.boot_source->kernel_image_path = *o.kernel;
    }
    if (!config.boot_source) {
        if (o.config_path) {
            throw CliError(fmt::format("no kernel: config file {} has no boot-source; give --kernel", *o.config_path));
        }
        throw CliError("no kernel: give --kernel or --config");
    }
    BootSourceConfig& bs = *config.boot_source;
    if (o.initrd) bs.initrd_path = *o.initrd;
    if (o.cmdline) bs.boot_args = *o.cmdline;
    if (o.vcpus) config.machine_config.vcpu_count = *o.vcpus;
    if (o.mem_mib) config.machine_config.mem_size_mib = *o.mem_mib;
    const size_t file_drives = config.drives.size();
    config.drives.insert(config.drives.end(), o.drives.begin(), o.drives.end());

    if (file_drives < config.drives.size()) {
        // Errors in a --drive name the flag; validate() below reports the file's own drives.
        try {
            validate_drives(config.drives, "drives");
        } catch (const ConfigError& e) {
            throw CliError(fmt::format("--drive: {}", e.what()));
        }
    }
    validate(config);
    // Name the flag when the path came from the command line, the config field otherwise.
    check_readable_file(o.kernel ? "--kernel" : "boot-source.kernel_image_path", bs.kernel_image_path);
    if (bs.initrd_path) check_readable_file(o.initrd ? "--initrd" : "boot-source.initrd_path", *bs.initrd_path);
    for (size_t i = 0; i < config.drives.size(); i++) {
        validate_files(config.drives[i], i < file_drives ? fmt::format("drives[{}]", i) : std::string("--drive"));
    }
    return config;
}

std::string usage_text() {
    return fmt::format(
        R"(Usage: embervm [FLAGS]
Runs one KVM guest until it powers off or reboots.

  --config PATH, --config-file PATH
                      Firecracker-style JSON config (boot-source, machine-config)
  --kernel PATH       guest kernel image
  --initrd PATH       initial ramdisk
  --cmdline STRING    kernel command line
  --vcpus N           number of vCPUs, {}..{} (default 1)
  --mem MIB           guest memory in MiB, {}..{} (default 128)
  --drive SPEC        a virtio-blk drive (repeatable), SPEC = comma-separated
                      id=ID,path=FILE[,root][,ro][,partuuid=UUID]
                      [,cache=unsafe|writeback][,io_engine=sync|async]
  --serial-out PATH   write the guest console to PATH instead of stdout
  --log-level LEVEL   error, warn, info or debug (default info)
  --boot-protocol P   auto, linux64 or pvh: entry point of an ELF kernel that has a
                      PVH note (default auto = PVH)
  --help, -h          print this help and exit
  --version           print the version and exit

Flags take "--flag VALUE" or "--flag=VALUE". With --config, --kernel, --initrd,
--cmdline, --vcpus and --mem override the file's fields and --drive adds drives;
without it, --kernel is required.

Exit status:
  0        the guest rebooted or powered off
  N        the status a test guest wrote to the debug-exit port
  1        VMM error
  2        bad configuration or command line
  128+N    the VMM was killed by signal N
)",
        kMinVcpus, kMaxVcpus, kMinMemSizeMib, kMaxMemSizeMib);
}

}  // namespace embervm::vmm
