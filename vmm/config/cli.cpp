// Command-line parsing and the merge of flags with a config file into one VmConfig.
#include "vmm/config/cli.h"

#include <cctype>
#include <charconv>
#include <map>
#include <string_view>

#include <fmt/format.h>

namespace embervm::vmm {

namespace {

enum class Flag {
    Config, Kernel, Initrd, Cmdline, Vcpus, Mem, Drive, Net, Balloon, SerialOut, LogLevel, BootProtocol, Help, Version,
    ApiSock, NoApi, Id, LogPath, MetricsPath
};

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
    {"--net", Flag::Net, true},      // repeatable
    {"--balloon", Flag::Balloon, true},
    {"--serial-out", Flag::SerialOut, true},
    {"--log-level", Flag::LogLevel, true},
    {"--log-path", Flag::LogPath, true},
    {"--metrics-path", Flag::MetricsPath, true},
    {"--boot-protocol", Flag::BootProtocol, true},
    {"--help", Flag::Help, false},
    {"-h", Flag::Help, false},
    {"--version", Flag::Version, false},
    {"--api-sock", Flag::ApiSock, true},
    {"--no-api", Flag::NoApi, false},
    {"--id", Flag::Id, true},
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

// A comma-separated list of key[=value] fields ("id=rootfs,path=disk.img,ro"): calls
// fn(key, value) for each, value empty-optional for a bare key.
template <typename Fn>
void for_each_field(std::string_view flag, std::string_view text, Fn&& fn) {
    size_t pos = 0;
    for (;;) {
        size_t comma = text.find(',', pos);
        if (comma == std::string_view::npos) comma = text.size();
        const std::string_view item = text.substr(pos, comma - pos);
        if (item.empty()) throw flag_error(flag, fmt::format("empty field in '{}'", text));
        std::string_view key = item;
        std::optional<std::string_view> v;
        if (const auto eq = item.find('='); eq != std::string_view::npos) {
            key = item.substr(0, eq);
            v = item.substr(eq + 1);
        }
        fn(key, v);
        if (comma == text.size()) break;
        pos = comma + 1;
    }
}

std::string_view need_value(std::string_view flag, std::string_view key, std::optional<std::string_view> v) {
    if (!v || v->empty()) throw flag_error(flag, fmt::format("{} needs a value ({}=...)", key, key));
    return *v;
}

// A bare key means on; key=on|off|true|false.
bool on_off(std::string_view flag, std::string_view key, std::optional<std::string_view> v) {
    if (!v || *v == "on" || *v == "true") return true;
    if (*v == "off" || *v == "false") return false;
    throw flag_error(flag, fmt::format("{}: expected on or off, got '{}'", key, *v));
}

// "--drive id=rootfs,path=disk.img,root,ro,cache=writeback,io_engine=async": the fields of a
// config-file drive as comma-separated key[=value] pairs (flags without a value mean "on").
DriveConfig parse_drive(std::string_view flag, std::string_view text) {
    DriveConfig d;
    bool have_id = false;
    bool have_path = false;
    for_each_field(flag, text, [&](std::string_view key, std::optional<std::string_view> v) {
        const auto need = [&] { return need_value(flag, key, v); };
        if (key == "id") {
            d.drive_id = std::string(need());
            have_id = true;
        } else if (key == "path") {
            d.path_on_host = std::string(need());
            have_path = true;
        } else if (key == "ro") {
            d.is_read_only = on_off(flag, key, v);
        } else if (key == "root") {
            d.is_root_device = on_off(flag, key, v);
        } else if (key == "partuuid") {
            d.partuuid = std::string(need());
        } else if (key == "cache") {
            const std::string_view c = need();
            if (c == "unsafe" || c == "Unsafe") d.cache_type = CacheType::Unsafe;
            else if (c == "writeback" || c == "Writeback") d.cache_type = CacheType::Writeback;
            else throw flag_error(flag, fmt::format("cache: expected unsafe or writeback, got '{}'", c));
        } else if (key == "io_engine") {
            const std::string_view e = need();
            if (e == "sync" || e == "Sync") d.io_engine = IoEngine::Sync;
            else if (e == "async" || e == "Async") d.io_engine = IoEngine::Async;
            else throw flag_error(flag, fmt::format("io_engine: expected sync or async, got '{}'", e));
        } else {
            throw flag_error(flag, fmt::format("unknown field '{}' (expected id, path, ro, root, partuuid, cache, "
                                               "io_engine)", key));
        }
    });
    if (!have_path) throw flag_error(flag, fmt::format("'{}' has no path=", text));
    if (!have_id) throw flag_error(flag, fmt::format("'{}' has no id=", text));
    return d;
}

// "--net id=eth0,tap=tap0[,mac=06:00:ac:10:00:02][,mtu=1500]": a network-interfaces entry.
NetworkInterfaceConfig parse_net(std::string_view flag, std::string_view text) {
    NetworkInterfaceConfig n;
    bool have_id = false;
    bool have_tap = false;
    for_each_field(flag, text, [&](std::string_view key, std::optional<std::string_view> v) {
        const auto need = [&] { return need_value(flag, key, v); };
        if (key == "id") {
            n.iface_id = std::string(need());
            have_id = true;
        } else if (key == "tap") {
            n.host_dev_name = std::string(need());
            have_tap = true;
        } else if (key == "mac") {
            try {
                n.guest_mac = parse_mac("mac", need());
            } catch (const ConfigError& e) {
                throw flag_error(flag, e.what());
            }
        } else if (key == "mtu") {
            n.mtu = static_cast<uint32_t>(parse_uint(fmt::format("{}: mtu", flag), need(), kMinMtu, kMaxMtu));
        } else {
            throw flag_error(flag, fmt::format("unknown field '{}' (expected id, tap, mac, mtu)", key));
        }
    });
    if (!have_tap) throw flag_error(flag, fmt::format("'{}' has no tap=", text));
    if (!have_id) throw flag_error(flag, fmt::format("'{}' has no id=", text));
    return n;
}

// "--balloon amount_mib=64[,deflate_on_oom][,stats_interval=5][,free_page_reporting]".
BalloonConfig parse_balloon(std::string_view flag, std::string_view text) {
    BalloonConfig b;
    bool have_amount = false;
    for_each_field(flag, text, [&](std::string_view key, std::optional<std::string_view> v) {
        const auto need = [&] { return need_value(flag, key, v); };
        if (key == "amount_mib") {
            b.amount_mib = parse_uint(fmt::format("{}: amount_mib", flag), need(), 0, kMaxMemSizeMib);
            have_amount = true;
        } else if (key == "deflate_on_oom") {
            b.deflate_on_oom = on_off(flag, key, v);
        } else if (key == "stats_interval") {
            b.stats_polling_interval_s = static_cast<uint32_t>(
                parse_uint(fmt::format("{}: stats_interval", flag), need(), 0, kMaxStatsPollingIntervalS));
        } else if (key == "free_page_reporting") {
            b.free_page_reporting = on_off(flag, key, v);
        } else {
            throw flag_error(flag, fmt::format("unknown field '{}' (expected amount_mib, deflate_on_oom, "
                                               "stats_interval, free_page_reporting)", key));
        }
    });
    if (!have_amount) throw flag_error(flag, fmt::format("'{}' has no amount_mib=", text));
    return b;
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
        if (const auto [it, inserted] = seen.emplace(spec->flag, spec->name); !inserted && spec->flag != Flag::Drive &&
                                                                       spec->flag != Flag::Net) {
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
            case Flag::Net: o.network_interfaces.push_back(parse_net(name, *value)); break;
            case Flag::Balloon: o.balloon = parse_balloon(name, *value); break;
            case Flag::SerialOut: o.serial_out = non_empty(name, *value); break;
            case Flag::LogPath: o.log_path = non_empty(name, *value); break;
            case Flag::MetricsPath: o.metrics_path = non_empty(name, *value); break;
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
                    throw flag_error(name, fmt::format("unknown level '{}' (expected off, error, warn, info, debug or "
                                                       "trace)", *value));
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
            case Flag::ApiSock: o.api_sock = non_empty(name, *value); break;
            case Flag::NoApi: o.no_api = true; break;
            case Flag::Id: {
                const std::string id = non_empty(name, *value);
                if (id.size() > kMaxInstanceIdBytes) {
                    throw flag_error(name, fmt::format("longer than {} bytes", kMaxInstanceIdBytes));
                }
                for (const char c : id) {
                    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
                        throw flag_error(name, fmt::format("'{}' may hold only letters, digits, '-' and '_'", id));
                    }
                }
                o.instance_id = id;
                break;
            }
        }
    }
    if (o.api_sock && o.no_api) throw CliError("--no-api: cannot be combined with --api-sock");
    return o;
}

VmConfig resolve_config(const CliOptions& o) {
    VmConfig config;
    if (o.config_path) config = load_config_file(*o.config_path);

    if (o.kernel) {
        if (!config.boot_source) config.boot_source.emplace();
        config.boot_source->kernel_image_path = *o.kernel;
    }
    if (!config.boot_source && o.api_sock) {
        // The kernel may come later through PUT /boot-source; the other flags apply now.
        if (o.initrd) throw CliError("--initrd: needs a kernel (--kernel or a config file's boot-source)");
        if (o.cmdline) throw CliError("--cmdline: needs a kernel (--kernel or a config file's boot-source)");
    } else if (!config.boot_source) {
        if (o.config_path) {
            throw CliError(fmt::format("no kernel: config file {} has no boot-source; give --kernel", *o.config_path));
        }
        throw CliError("no kernel: give --kernel or --config");
    }
    if (config.boot_source) {
        if (o.initrd) config.boot_source->initrd_path = *o.initrd;
        if (o.cmdline) config.boot_source->boot_args = *o.cmdline;
    }
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
    const size_t file_ifaces = config.network_interfaces.size();
    config.network_interfaces.insert(config.network_interfaces.end(), o.network_interfaces.begin(),
                                     o.network_interfaces.end());
    if (file_ifaces < config.network_interfaces.size()) {
        try {
            validate_network_interfaces(config.network_interfaces, "network-interfaces");
        } catch (const ConfigError& e) {
            throw CliError(fmt::format("--net: {}", e.what()));
        }
    }
    if (o.balloon) {
        config.balloon = o.balloon;
        if (o.balloon->amount_mib > config.machine_config.mem_size_mib) {
            throw CliError(fmt::format("--balloon: amount_mib {} is more than the guest's memory ({} MiB)",
                                       o.balloon->amount_mib, config.machine_config.mem_size_mib));
        }
    }
    if (o.metrics_path) {
        if (!config.metrics) config.metrics.emplace();
        config.metrics->metrics_path = *o.metrics_path;
    }
    validate(config);
    // Name the flag when the path came from the command line, the config field otherwise.
    if (const auto& bs = config.boot_source) {
        check_readable_file(o.kernel ? "--kernel" : "boot-source.kernel_image_path", bs->kernel_image_path);
        if (bs->initrd_path) check_readable_file(o.initrd ? "--initrd" : "boot-source.initrd_path", *bs->initrd_path);
    }
    for (size_t i = 0; i < config.drives.size(); i++) {
        validate_files(config.drives[i], i < file_drives ? fmt::format("drives[{}]", i) : std::string("--drive"));
    }
    return config;
}

void apply_cli_logging(const CliOptions& o, const VmConfig& config) {
    if (config.logger) apply_logger_config(*config.logger);
    if (o.log_path) {
        try {
            log::set_output_path(*o.log_path);
        } catch (const std::exception& e) {
            throw flag_error("--log-path", e.what());
        }
    }
    if (o.log_level) log::set_level(*o.log_level);
}

std::string usage_text() {
    return fmt::format(
        R"(Usage: embervm [FLAGS]
Runs one KVM guest until it powers off or reboots.

  --config PATH, --config-file PATH
                      Firecracker-style JSON config (boot-source, machine-config,
                      drives, network-interfaces, balloon, logger, metrics)
  --kernel PATH       guest kernel image
  --initrd PATH       initial ramdisk
  --cmdline STRING    kernel command line
  --vcpus N           number of vCPUs, {}..{} (default 1)
  --mem MIB           guest memory in MiB, {}..{} (default 128)
  --drive SPEC        a virtio-blk drive (repeatable), SPEC = comma-separated
                      id=ID,path=FILE[,root][,ro][,partuuid=UUID]
                      [,cache=unsafe|writeback][,io_engine=sync|async]
  --net SPEC          a virtio-net device on an existing TAP device (repeatable),
                      SPEC = id=ID,tap=TAPDEV[,mac=aa:bb:cc:dd:ee:ff][,mtu=N]
  --balloon SPEC      a virtio-balloon device, SPEC = amount_mib=N[,deflate_on_oom]
                      [,stats_interval=SECONDS][,free_page_reporting]
  --serial-out PATH   write the guest console to PATH instead of stdout
  --log-level LEVEL   off, error, warn, info, debug or trace (default info)
  --log-path PATH     append log lines to PATH (a file, created 0600 if missing, or a
                      named pipe with a reader) instead of stderr
  --metrics-path PATH append a JSON metrics line to PATH every 60 s (metrics.interval_s
                      in the config file) and when the VM ends (sets metrics.metrics_path)
  --boot-protocol P   auto, linux64 or pvh: entry point of an ELF kernel that has a
                      PVH note (default auto = PVH)
  --api-sock PATH     serve the HTTP API (Firecracker's endpoints) on a Unix socket
                      at PATH; without a kernel the VM is configured and started
                      through it (PUT /boot-source, ..., PUT /actions InstanceStart)
  --no-api            no API: boot from the config file and flags alone (the default)
  --id ID             instance id reported by GET / (default anonymous-instance)
  --help, -h          print this help and exit
  --version           print the version and exit

Flags take "--flag VALUE" or "--flag=VALUE". With --config, --kernel, --initrd,
--cmdline, --vcpus, --mem, --balloon, --log-level, --log-path and --metrics-path
override the file's fields, --drive and --net add devices;
without it, --kernel is required (unless --api-sock is given).

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
