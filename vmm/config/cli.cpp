// Command-line parsing: the flags defined once with CLI11 (which also writes --help).
// Also the merge of the flags with a config file into one VmConfig.
#include "vmm/config/cli.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <deque>
#include <functional>
#include <map>
#include <sstream>
#include <string_view>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "vmm/config/apply_logger.h"
#include "vmm/config/from_json.h"
#include "vmm/config/validate.h"

namespace embervm::vmm {

namespace {

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
        } else if (key == "socket") {
            d.socket = std::string(need());
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
            throw flag_error(flag, fmt::format("unknown field '{}' (expected id, path, socket, ro, root, partuuid, "
                                               "cache, io_engine)", key));
        }
    });
    if (!have_path && !d.socket) throw flag_error(flag, fmt::format("'{}' has no path= (or socket=)", text));
    if (!have_id) throw flag_error(flag, fmt::format("'{}' has no id=", text));
    return d;
}

// "--net id=eth0,tap=tap0[,mac=06:00:ac:10:00:02][,mtu=1500][,vhost]": a network-interfaces entry.
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
        } else if (key == "vhost") {
            n.vhost = on_off(flag, key, v);
        } else {
            throw flag_error(flag, fmt::format("unknown field '{}' (expected id, tap, mac, mtu, vhost)", key));
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

// "--fs tag=share,socket=/run/virtiofsd.sock[,num_request_queues=1][,queue_size=1024]" (Cloud
// Hypervisor's --fs).
FsConfig parse_fs(std::string_view flag, std::string_view text) {
    FsConfig fs;
    bool have_tag = false, have_socket = false;
    for_each_field(flag, text, [&](std::string_view key, std::optional<std::string_view> value) {
        const auto need = [&] { return need_value(flag, key, value); };
        if (key == "tag") {
            fs.tag = std::string(need());
            have_tag = true;
        } else if (key == "socket") {
            fs.socket = std::string(need());
            have_socket = true;
        } else if (key == "num_request_queues") {
            fs.num_request_queues = static_cast<uint32_t>(
                parse_uint(fmt::format("{}: num_request_queues", flag), need(), 1, kMaxFsRequestQueues));
        } else if (key == "queue_size") {
            fs.queue_size =
                static_cast<uint32_t>(parse_uint(fmt::format("{}: queue_size", flag), need(), 1, kMaxFsQueueSize));
        } else {
            throw flag_error(flag,
                             fmt::format("unknown field '{}' (expected tag, socket, num_request_queues, queue_size)", key));
        }
    });
    if (!have_tag) throw flag_error(flag, fmt::format("'{}' has no tag=", text));
    if (!have_socket) throw flag_error(flag, fmt::format("'{}' has no socket=", text));
    try {
        validate(fs, "fs");
    } catch (const ConfigError& e) {
        throw flag_error(flag, e.what());
    }
    return fs;
}

// "--vsock cid=3,path=/run/vm.vsock".
VsockConfig parse_vsock(std::string_view flag, std::string_view text) {
    VsockConfig v;
    bool have_cid = false, have_path = false;
    for_each_field(flag, text, [&](std::string_view key, std::optional<std::string_view> value) {
        const auto need = [&] { return need_value(flag, key, value); };
        if (key == "cid") {
            v.guest_cid = parse_uint(fmt::format("{}: cid", flag), need(), kMinVsockGuestCid, kMaxVsockGuestCid);
            have_cid = true;
        } else if (key == "path") {
            v.uds_path = std::string(need());
            have_path = true;
        } else {
            throw flag_error(flag, fmt::format("unknown field '{}' (expected cid, path)", key));
        }
    });
    if (!have_cid) throw flag_error(flag, fmt::format("'{}' has no cid=", text));
    if (!have_path) throw flag_error(flag, fmt::format("'{}' has no path=", text));
    try {
        validate(v, "vsock");
    } catch (const ConfigError& e) {
        throw flag_error(flag, e.what());
    }
    return v;
}

// --help: "  --config PATH, --config-file PATH" (every spelling with its value), the description
// from column 22, then the footer (syntax, overrides, exit statuses).
class HelpFormatter : public CLI::Formatter {
public:
    std::string make_help(const CLI::App* app, std::string, CLI::AppFormatMode) const override {
        std::string out = fmt::format("Usage: {} [FLAGS]\n{}\n\n", app->get_name(), app->get_description());
        for (const CLI::Option* opt : app->get_options()) out += make_option(opt, false);
        return out + "\n" + app->get_footer();
    }

    std::string make_option(const CLI::Option* opt, bool) const override {
        const std::string value = opt->get_type_name().empty() ? "" : " " + opt->get_type_name();
        std::string names;
        const auto add = [&](std::string_view dashes, const std::string& name) {
            names += fmt::format("{}{}{}{}", names.empty() ? "" : ", ", dashes, name, value);
        };
        for (const std::string& name : opt->get_lnames()) add("--", name);
        for (const std::string& name : opt->get_snames()) add("-", name);
        std::ostringstream out;
        CLI::detail::format_help(out, names, opt->get_description(), 22);
        return out.str();
    }
};

// The flags, defined once: CLI11 reads the arguments and calls each flag's setter as it reads
// the flag (trigger_on_parse), so errors come in argument order.
class CommandLine {
public:
    CommandLine();
    CommandLine(const CommandLine&) = delete;
    CommandLine& operator=(const CommandLine&) = delete;

    CliOptions parse(int argc, const char* const* argv);
    std::string help() const { return app_.help(); }

private:
    // `flag` is the spelling given ("--config-file"), for error messages.
    using Setter = std::function<void(std::string_view flag, const std::string& value)>;

    CLI::Option* add_value(const std::string& names, const std::string& value_name, const std::string& description,
                           Setter set);
    void add_switch(const std::string& names, const std::string& description, std::function<void()> set);
    std::vector<std::string> prepare(int argc, const char* const* argv, std::optional<CliError>& stop);

    CLI::App app_;
    CliOptions options_;
    std::deque<std::string> spellings_;  // of the flags CLI11 has yet to read, in order
};

CLI::Option* CommandLine::add_value(const std::string& names, const std::string& value_name,
                                    const std::string& description, Setter set) {
    const CLI::callback_t on_value = [this, set = std::move(set)](const CLI::results_t& values) {
        const std::string flag = std::move(spellings_.front());
        spellings_.pop_front();
        set(flag, values.front());
        return true;
    };
    return app_.add_option(names, on_value, description)->type_name(value_name)->trigger_on_parse();
}

void CommandLine::add_switch(const std::string& names, const std::string& description, std::function<void()> set) {
    const auto on_switch = [this, set = std::move(set)] {
        spellings_.pop_front();
        set();
    };
    app_.add_flag_callback(names, on_switch, description)->trigger_on_parse();
}

CommandLine::CommandLine() : app_("Runs one KVM guest until it powers off or reboots.", "embervm") {
    app_.set_help_flag();  // --help is an ordinary flag here: main() prints help() and exits 0
    app_.formatter(std::make_shared<HelpFormatter>());
    CliOptions& o = options_;
    const auto path = [](std::optional<std::string>& field) {
        return [&field](std::string_view flag, const std::string& v) { field = non_empty(flag, v); };
    };

    add_value("--config,--config-file", "PATH",
              "Firecracker-style JSON config (boot-source, machine-config,\n"
              "drives, network-interfaces, balloon, logger, metrics, console)",
              path(o.config_path));
    add_value("--kernel", "PATH", "guest kernel image", path(o.kernel));
    add_value("--initrd", "PATH", "initial ramdisk", path(o.initrd));
    add_value("--cmdline", "STRING", "kernel command line", [&o](std::string_view flag, const std::string& v) {
        if (v.size() > kMaxBootArgsBytes) {
            throw flag_error(flag, fmt::format("{} bytes is longer than the limit of {}", v.size(), kMaxBootArgsBytes));
        }
        o.cmdline = v;
    });
    add_value("--vcpus", "N", fmt::format("number of vCPUs, {}..{} (default 1)", kMinVcpus, kMaxVcpus),
              [&o](std::string_view flag, const std::string& v) {
                  o.vcpus = static_cast<uint32_t>(parse_uint(flag, v, kMinVcpus, kMaxVcpus));
              });
    add_value("--mem", "MIB", fmt::format("guest memory in MiB, {}..{} (default 128)", kMinMemSizeMib, kMaxMemSizeMib),
              [&o](std::string_view flag, const std::string& v) {
                  o.mem_mib = parse_uint(flag, v, kMinMemSizeMib, kMaxMemSizeMib);
              });
    add_switch("--no-acpi",
               "no ACPI tables (machine-config.acpi = false): the guest finds\n"
               "its CPUs in the MP table and virtio devices on the command line",
               [&o] { o.no_acpi = true; });
    add_switch("--enable-pci",
               "every virtio device over virtio-pci (MSI-X) instead of\n"
               "virtio-mmio (config: \"enable_pci\": true)",
               [&o] { o.enable_pci = true; });
    add_value("--drive", "SPEC",
              "a virtio-blk drive (repeatable), SPEC = comma-separated\n"
              "id=ID,path=FILE[,root][,ro][,partuuid=UUID]\n"
              "[,cache=unsafe|writeback][,io_engine=sync|async];\n"
              "id=ID,socket=PATH[,root][,cache=...]: vhost-user-blk",
              [&o](std::string_view flag, const std::string& v) { o.drives.push_back(parse_drive(flag, v)); })
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    add_value("--net", "SPEC",
              "a virtio-net device on an existing TAP device (repeatable),\n"
              "SPEC = id=ID,tap=TAPDEV[,mac=aa:bb:cc:dd:ee:ff][,mtu=N][,vhost]",
              [&o](std::string_view flag, const std::string& v) {
                  o.network_interfaces.push_back(parse_net(flag, v));
              })
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    add_value("--balloon", "SPEC",
              "a virtio-balloon device, SPEC = amount_mib=N[,deflate_on_oom]\n"
              "[,stats_interval=SECONDS][,free_page_reporting]",
              [&o](std::string_view flag, const std::string& v) { o.balloon = parse_balloon(flag, v); });
    add_value("--vsock", "SPEC",
              "a virtio-vsock device, SPEC = cid=GUEST_CID,path=UDS_PATH: guest\n"
              "connections to port P reach UDS_PATH_P; host processes connect\n"
              "to UDS_PATH and send \"CONNECT P\\n\"",
              [&o](std::string_view flag, const std::string& v) { o.vsock = parse_vsock(flag, v); });
    add_value("--fs", "SPEC",
              "a virtio-fs device served by a vhost-user backend such as\n"
              "virtiofsd (repeatable), SPEC = tag=TAG,socket=PATH\n"
              "[,num_request_queues=N][,queue_size=N]; the guest mounts it\n"
              "with mount -t virtiofs TAG DIR",
              [&o](std::string_view flag, const std::string& v) { o.fs.push_back(parse_fs(flag, v)); })
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    add_value("--serial-out", "PATH", "write the guest console to PATH instead of stdout", path(o.serial_out));
    add_value("--console", "TYPE",
              "the guest's console: serial (COM1, ttyS0; the default) or\n"
              "virtio (a virtio-console device, hvc0)",
              [&o](std::string_view flag, const std::string& v) {
                  if (v == "serial") {
                      o.console = ConsoleType::Serial;
                  } else if (v == "virtio") {
                      o.console = ConsoleType::Virtio;
                  } else {
                      throw flag_error(flag, fmt::format("unknown console '{}' (expected serial or virtio)", v));
                  }
              });
    add_value("--log-level", "LEVEL", "off, error, warn, info, debug or trace (default info)",
              [&o](std::string_view flag, const std::string& v) {
                  log::Level level{};
                  if (!log::parse_level(v, &level)) {
                      throw flag_error(flag, fmt::format("unknown level '{}' (expected off, error, warn, info, debug "
                                                         "or trace)", v));
                  }
                  o.log_level = level;
              });
    add_value("--log-path", "PATH",
              "append log lines to PATH (a file, created 0600 if missing, or a\n"
              "named pipe with a reader) instead of stderr",
              path(o.log_path));
    add_value("--metrics-path", "PATH",
              "append a JSON metrics line to PATH every 60 s (metrics.interval_s\n"
              "in the config file) and when the VM ends (sets metrics.metrics_path)",
              path(o.metrics_path));
    add_value("--boot-protocol", "P",
              "auto, linux64 or pvh: entry point of an ELF kernel that has a\n"
              "PVH note (default auto = PVH)",
              [&o](std::string_view flag, const std::string& v) {
                  if (v == "auto") o.boot_protocol = BootProtocol::Auto;
                  else if (v == "linux64") o.boot_protocol = BootProtocol::Linux64;
                  else if (v == "pvh") o.boot_protocol = BootProtocol::Pvh;
                  else throw flag_error(flag, fmt::format("unknown protocol '{}' (expected auto, linux64 or pvh)", v));
              });
    add_value("--api-sock", "PATH",
              "serve the HTTP API (Firecracker's endpoints) on a Unix socket\n"
              "at PATH; without a kernel the VM is configured and started\n"
              "through it (PUT /boot-source, ..., PUT /actions InstanceStart)",
              path(o.api_sock));
    add_switch("--no-api", "no API: boot from the config file and flags alone (the default)",
               [&o] { o.no_api = true; });
    add_value("--restore", "SNAPSHOT",
              "run the VM saved in SNAPSHOT (PUT /snapshot/create) instead of\n"
              "booting: its configuration, vCPU and device state; with\n"
              "--restore-mem or --restore-uffd, and without the flags that\n"
              "define a VM",
              path(o.restore));
    add_value("--restore-mem", "MEMFILE", "the memory file of the --restore snapshot", path(o.restore_mem));
    add_value("--restore-uffd", "SOCKET",
              "instead of --restore-mem: a page-fault handler listening on the\n"
              "Unix socket SOCKET serves the snapshot's memory over\n"
              "userfaultfd (mem_backend Uffd; examples/uffd_handler.cpp)",
              path(o.restore_uffd));
    add_value("--id", "ID", "instance id reported by GET / (default anonymous-instance)",
              [&o](std::string_view flag, const std::string& v) {
                  const std::string id = non_empty(flag, v);
                  if (id.size() > kMaxInstanceIdBytes) {
                      throw flag_error(flag, fmt::format("longer than {} bytes", kMaxInstanceIdBytes));
                  }
                  for (const char c : id) {
                      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
                          throw flag_error(flag, fmt::format("'{}' may hold only letters, digits, '-' and '_'", id));
                      }
                  }
                  o.instance_id = id;
              });
    add_switch("--no-seccomp",
               "no seccomp filters: every thread may make any system call\n"
               "(for debugging a SIGSYS; the filters are on by default)",
               [&o] { o.no_seccomp = true; });
    add_switch("--help,-h", "print this help and exit", [&o] { o.help = true; });
    add_switch("--version", "print the version and exit", [&o] { o.version = true; });

    app_.footer(R"(Flags take "--flag VALUE" or "--flag=VALUE". With --config, --kernel, --initrd,
--cmdline, --vcpus, --mem, --no-acpi, --enable-pci, --balloon, --vsock, --console, --log-level, --log-path and
--metrics-path override the file's fields, --drive, --net and --fs add devices;
without it, --kernel is required (unless --api-sock is given).

Exit status:
  0        the guest rebooted or powered off
  N        the status a test guest wrote to the debug-exit port
  1        VMM error
  2        bad configuration or command line
  128+N    the VMM was killed by signal N (159: SIGSYS, a system call outside a
           thread's seccomp allowlist; the log names the thread and the call)
)");
}

// The arguments as CLI11 is to read them, up to the first that breaks embervm's rules of syntax
// (then `stop` holds its error, thrown once CLI11 has read those before it). CLI11 alone would
// read some of them otherwise: it takes the next argument as a value even if it is a flag
// ("--kernel --vcpus 2"; here: --kernel is missing its value), it takes the next argument for an
// empty "--flag=" value, it reads "-hx" as -h -x, and it collects unknown flags and stray
// arguments to report them after all the others. Only the repeatable flags may be given twice.
std::vector<std::string> CommandLine::prepare(int argc, const char* const* argv, std::optional<CliError>& stop) {
    std::vector<std::string> args;
    std::map<const CLI::Option*, std::string_view> seen;  // flag -> the spelling first used
    for (int i = 1; i < argc && !stop; ++i) {
        const std::string_view arg = argv[i];
        if (!arg.starts_with("-")) {
            stop = CliError(fmt::format("unexpected argument '{}' (embervm takes only flags; see --help)", arg));
            break;
        }
        std::string_view name = arg;
        std::optional<std::string_view> value;
        if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
            name = arg.substr(0, eq);
            value = arg.substr(eq + 1);
        }
        const CLI::Option* opt = app_.get_option_no_throw(std::string(name));
        if (opt == nullptr) {
            stop = flag_error(name, "unknown flag (see --help)");
            break;
        }
        const bool repeatable = opt->get_multi_option_policy() == CLI::MultiOptionPolicy::TakeAll;
        if (const auto [it, inserted] = seen.emplace(opt, name); !inserted && !repeatable) {
            stop = it->second == name ? flag_error(name, "given more than once")
                                      : flag_error(name, fmt::format("given more than once (also as {})", it->second));
            break;
        }
        const bool takes_value = opt->get_items_expected_max() > 0;
        if (!takes_value && value) {
            stop = flag_error(name, "takes no value");
            break;
        }
        if (takes_value && !value) {
            if (i + 1 >= argc || std::string_view(argv[i + 1]).starts_with("--")) {
                stop = flag_error(name, "missing value");
                break;
            }
            value = argv[++i];
        }
        spellings_.emplace_back(name);
        args.emplace_back(name);
        if (value) args.emplace_back(*value);  // CLI11 takes the argument after a flag as it is
    }
    return args;
}

// --restore takes the VM from the snapshot: the flags that define one are refused next to it.
void check_restore(const CliOptions& o) {
    if (o.restore_mem && !o.restore) throw CliError("--restore-mem: needs --restore SNAPSHOT");
    if (o.restore_uffd && !o.restore) throw CliError("--restore-uffd: needs --restore SNAPSHOT");
    if (!o.restore) return;
    if (o.restore_mem && o.restore_uffd) {
        throw CliError("--restore-uffd: cannot be combined with --restore-mem (the memory comes from one of them)");
    }
    if (!o.restore_mem && !o.restore_uffd) {
        throw CliError("--restore: needs --restore-mem MEMFILE (the snapshot's memory file) or --restore-uffd SOCKET");
    }
    const std::pair<bool, const char*> defining[] = {
        {o.config_path.has_value(), "--config"}, {o.kernel.has_value(), "--kernel"},
        {o.initrd.has_value(), "--initrd"},      {o.cmdline.has_value(), "--cmdline"},
        {o.vcpus.has_value(), "--vcpus"},        {o.mem_mib.has_value(), "--mem"},
        {o.no_acpi, "--no-acpi"},                {o.enable_pci, "--enable-pci"},
        {!o.drives.empty(), "--drive"},          {!o.network_interfaces.empty(), "--net"},
        {o.balloon.has_value(), "--balloon"},    {o.vsock.has_value(), "--vsock"},
        {o.console.has_value(), "--console"},    {o.api_sock.has_value(), "--api-sock"},
    };
    for (const auto& [given, flag] : defining) {
        if (given) {
            throw CliError(fmt::format("{}: cannot be combined with --restore (the snapshot holds the VM's "
                                       "configuration; with the API use PUT /snapshot/load)", flag));
        }
    }
}

CliOptions CommandLine::parse(int argc, const char* const* argv) {
    std::optional<CliError> stop;
    std::vector<std::string> args = prepare(argc, argv, stop);
    std::reverse(args.begin(), args.end());  // CLI11 reads from the back
    try {
        app_.parse(args);
    } catch (const CLI::Error& e) {
        throw CliError(e.what());  // not expected: prepare() settled the syntax
    }
    if (stop) throw *stop;
    if (options_.api_sock && options_.no_api) throw CliError("--no-api: cannot be combined with --api-sock");
    check_restore(options_);
    return std::move(options_);
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

CliOptions parse_cli(int argc, const char* const* argv) { return CommandLine().parse(argc, argv); }

VmConfig resolve_config(const CliOptions& o) {
    VmConfig config;
    if (o.restore) return config;
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
    if (o.no_acpi) config.machine_config.acpi = false;
    if (o.enable_pci) config.enable_pci = true;
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
    if (o.vsock) config.vsock = o.vsock;
    if (!o.fs.empty()) {
        config.fs.insert(config.fs.end(), o.fs.begin(), o.fs.end());
        try {
            validate_fs(config.fs, "fs");
        } catch (const ConfigError& e) {
            throw CliError(fmt::format("--fs: {}", e.what()));
        }
    }
    if (o.console) config.console = ConsoleConfig{*o.console};
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

std::string usage_text() { return CommandLine().help(); }

}  // namespace embervm::vmm
