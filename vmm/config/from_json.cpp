// The JSON front door: Firecracker's --config-file schema read into the configuration model.
// Section by section (the HTTP API uses one section at a time), whole documents, config files.
#include "vmm/config/from_json.h"

#include <fcntl.h>
#include <strings.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <utility>

#include <fmt/format.h>

#include "vmm/config/field_checks.h"
#include "vmm/config/validate.h"
#include "vmm/sys/fd.h"

namespace embervm::vmm {

using nlohmann::json;

namespace {

// A JSON array of sections ("drives", "network-interfaces"): each element parsed by `element`
// with its index in the path ("drives[1]").
template <typename T>
std::vector<T> array_from_json(const json& j, const std::string& where,
                               T (*element)(const json& j, const std::string& where)) {
    if (!j.is_array()) throw field_error(where, fmt::format("expected an array, got {}", describe_json_value(j)));
    std::vector<T> out;
    for (size_t i = 0; i < j.size(); i++) out.push_back(element(j[i], fmt::format("{}[{}]", where, i)));
    return out;
}

// One top-level section of the config document. Adding a section means writing its parser here,
// its to_json in to_json.cpp, and adding a row to kSections.
struct Section {
    std::string_view key;
    void (*parse)(const json& j, const std::string& where, VmConfig& out);
};

const Section kSections[] = {
    {"boot-source",
     [](const json& j, const std::string& where, VmConfig& out) { out.boot_source = boot_source_from_json(j, where); }},
    {"machine-config",
     [](const json& j, const std::string& where, VmConfig& out) {
         out.machine_config = machine_config_from_json(j, where);
     }},
    {"drives",
     [](const json& j, const std::string& where, VmConfig& out) {
         out.drives = array_from_json(j, where, drive_from_json);
         validate_drives(out.drives, where);
     }},
    {"network-interfaces",
     [](const json& j, const std::string& where, VmConfig& out) {
         out.network_interfaces = array_from_json(j, where, network_interface_from_json);
         validate_network_interfaces(out.network_interfaces, where);
     }},
    {"balloon",
     [](const json& j, const std::string& where, VmConfig& out) { out.balloon = balloon_from_json(j, where); }},
    {"vsock", [](const json& j, const std::string& where, VmConfig& out) { out.vsock = vsock_from_json(j, where); }},
    {"fs",
     [](const json& j, const std::string& where, VmConfig& out) {
         out.fs = array_from_json(j, where, fs_from_json);
         validate_fs(out.fs, where);
     }},
    {"logger",
     [](const json& j, const std::string& where, VmConfig& out) { out.logger = logger_from_json(j, where); }},
    {"metrics",
     [](const json& j, const std::string& where, VmConfig& out) { out.metrics = metrics_from_json(j, where); }},
    {"console",
     [](const json& j, const std::string& where, VmConfig& out) { out.console = console_from_json(j, where); }},
    {"enable_pci",
     [](const json& j, const std::string& where, VmConfig& out) {
         if (!j.is_boolean()) throw field_error(where, "must be true or false");
         out.enable_pci = j.get<bool>();
     }},
};

}  // namespace

BootSourceConfig boot_source_from_json(const json& j, const std::string& where) {
    const JsonFields f(j, where, {"kernel_image_path", "initrd_path", "boot_args"});
    BootSourceConfig bs;
    bs.kernel_image_path = f.required_string("kernel_image_path");
    bs.initrd_path = f.optional_string("initrd_path");
    bs.boot_args = f.optional_string("boot_args");
    validate(bs, where);
    return bs;
}

MachineConfig machine_config_from_json(const json& j, const std::string& where) {
    // vcpu_count and mem_size_mib are required, as in Firecracker's PUT /machine-config.
    const JsonFields f(j, where, {"vcpu_count", "mem_size_mib", "smt", "track_dirty_pages", "acpi"});
    MachineConfig mc;
    mc.vcpu_count = static_cast<uint32_t>(f.required_uint("vcpu_count", kMinVcpus, kMaxVcpus));
    mc.mem_size_mib = f.required_uint("mem_size_mib", kMinMemSizeMib, kMaxMemSizeMib);
    mc.smt = f.optional_bool("smt").value_or(false);
    mc.track_dirty_pages = f.optional_bool("track_dirty_pages").value_or(false);
    mc.acpi = f.optional_bool("acpi").value_or(true);
    validate(mc, where);
    return mc;
}

DriveConfig drive_from_json(const json& j, const std::string& where) {
    const JsonFields f(j, where, {"drive_id", "path_on_host", "is_root_device", "is_read_only", "partuuid",
                                  "cache_type", "io_engine", "rate_limiter", "socket"});
    DriveConfig d;
    d.drive_id = f.required_string("drive_id");
    d.socket = f.optional_string("socket");
    // A vhost-user drive has no image of its own; validate() refuses the fields that need one.
    if (!d.socket || f.find("path_on_host") != nullptr) d.path_on_host = f.required_string("path_on_host");
    d.is_root_device = f.required_bool("is_root_device");
    d.is_read_only = f.optional_bool("is_read_only").value_or(false);
    d.partuuid = f.optional_string("partuuid");
    if (f.optional_choice("cache_type", {"Unsafe", "Writeback"}).value_or("Unsafe") == "Writeback") {
        d.cache_type = CacheType::Writeback;
    }
    if (const auto engine = f.optional_choice("io_engine", virtio::block::io_engine_names())) {
        d.io_engine = *virtio::block::io_engine_from_string(*engine);
    }
    d.rate_limiter = optional_rate_limiter(f, "rate_limiter");
    validate(d, where);
    return d;
}

NetworkInterfaceConfig network_interface_from_json(const json& j, const std::string& where) {
    const JsonFields f(j, where, {"iface_id", "host_dev_name", "guest_mac", "mtu", "rx_rate_limiter",
                                  "tx_rate_limiter", "vhost"});
    NetworkInterfaceConfig n;
    n.iface_id = f.required_string("iface_id");
    n.host_dev_name = f.required_string("host_dev_name");
    if (const auto mac = f.optional_string("guest_mac")) n.guest_mac = parse_mac(f.path("guest_mac"), *mac);
    if (const auto mtu = f.optional_uint("mtu", kMinMtu, kMaxMtu)) n.mtu = static_cast<uint32_t>(*mtu);
    n.rx_rate_limiter = optional_rate_limiter(f, "rx_rate_limiter");
    n.tx_rate_limiter = optional_rate_limiter(f, "tx_rate_limiter");
    n.vhost = f.optional_bool("vhost").value_or(false);
    validate(n, where);
    return n;
}

namespace {

std::optional<TokenBucketConfig> token_bucket_from_json(const JsonFields& parent, std::string_view key) {
    const json* j = parent.find(key);
    if (j == nullptr || j->is_null()) return std::nullopt;
    const JsonFields f(*j, parent.path(key), {"size", "one_time_burst", "refill_time"});
    TokenBucketConfig b;
    b.size = f.required_uint("size", 0, virtio::kMaxBucketTokens);
    b.one_time_burst = f.optional_uint("one_time_burst", 0, virtio::kMaxBucketTokens).value_or(0);
    b.refill_time_ms = f.required_uint("refill_time", 0, virtio::kMaxRefillTimeMs);
    return b;
}

}  // namespace

RateLimiterConfig rate_limiter_from_json(const json& j, const std::string& where) {
    const JsonFields f(j, where, {"bandwidth", "ops"});
    RateLimiterConfig r;
    r.bandwidth = token_bucket_from_json(f, "bandwidth");
    r.ops = token_bucket_from_json(f, "ops");
    validate(r, where);
    return r;
}

std::optional<RateLimiterConfig> optional_rate_limiter(const JsonFields& f, std::string_view key) {
    const json* j = f.find(key);
    if (j == nullptr || j->is_null()) return std::nullopt;
    return rate_limiter_from_json(*j, f.path(key));
}

BalloonConfig balloon_from_json(const json& j, const std::string& where) {
    // Firecracker requires amount_mib and deflate_on_oom; free_page_hinting is refused by name.
    const JsonFields f(j, where, {"amount_mib", "deflate_on_oom", "stats_polling_interval_s", "free_page_reporting",
                                  "free_page_hinting"});
    if (f.optional_bool("free_page_hinting").value_or(false)) {
        throw field_error(f.path("free_page_hinting"), "true is not supported by embervm (use free_page_reporting)");
    }
    BalloonConfig b;
    b.amount_mib = f.required_uint("amount_mib", 0, kMaxMemSizeMib);
    b.deflate_on_oom = f.required_bool("deflate_on_oom");
    b.stats_polling_interval_s =
        static_cast<uint32_t>(f.optional_uint("stats_polling_interval_s", 0, kMaxStatsPollingIntervalS).value_or(0));
    b.free_page_reporting = f.optional_bool("free_page_reporting").value_or(false);
    validate(b, where);
    return b;
}

VsockConfig vsock_from_json(const json& j, const std::string& where) {
    const JsonFields f(j, where, {"guest_cid", "uds_path", "vsock_id"});
    f.optional_string("vsock_id");  // Firecracker's deprecated device name: checked, not used
    VsockConfig v;
    v.guest_cid = f.required_uint("guest_cid", kMinVsockGuestCid, kMaxVsockGuestCid);
    v.uds_path = f.required_string("uds_path");
    validate(v, where);
    return v;
}

FsConfig fs_from_json(const json& j, const std::string& where) {
    const JsonFields f(j, where, {"tag", "socket", "num_request_queues", "queue_size"});
    FsConfig fs;
    fs.tag = f.required_string("tag");
    fs.socket = f.required_string("socket");
    fs.num_request_queues =
        static_cast<uint32_t>(f.optional_uint("num_request_queues", 1, kMaxFsRequestQueues).value_or(1));
    fs.queue_size =
        static_cast<uint32_t>(f.optional_uint("queue_size", 1, kMaxFsQueueSize).value_or(kDefaultFsQueueSize));
    validate(fs, where);
    return fs;
}

LoggerConfig logger_from_json(const json& j, const std::string& where) {
    const JsonFields f(j, where, {"log_path", "level", "show_level", "show_log_origin", "module"});
    if (const json* v = f.find("module"); v && !v->is_null()) {
        throw field_error(f.path("module"), "is not supported by embervm (its log lines carry no module to filter on)");
    }
    LoggerConfig l;
    l.log_path = f.optional_string("log_path");
    if (const json* v = f.find("level")) {
        static constexpr std::pair<std::string_view, LogLevel> kLevels[] = {
            {"Off", LogLevel::Off},     {"Error", LogLevel::Error}, {"Warning", LogLevel::Warning},
            {"Warn", LogLevel::Warning}, {"Info", LogLevel::Info},   {"Debug", LogLevel::Debug},
            {"Trace", LogLevel::Trace}};
        if (v->is_string()) {
            const auto text = v->get<std::string>();
            for (const auto& [name, level] : kLevels) {
                if (text.size() == name.size() && strncasecmp(text.c_str(), name.data(), name.size()) == 0) {
                    l.level = level;
                }
            }
        }
        if (!l.level) {
            const std::string got = v->is_string() ? fmt::format("\"{}\"", v->get<std::string>()) : describe_json_value(*v);
            throw field_error(f.path("level"),
                              fmt::format("expected one of Error, Warning, Info, Debug, Trace, Off, got {}", got));
        }
    }
    l.show_level = f.optional_bool("show_level");
    l.show_log_origin = f.optional_bool("show_log_origin");
    validate(l, where);
    return l;
}

MetricsConfig metrics_from_json(const json& j, const std::string& where) {
    const JsonFields f(j, where, {"metrics_path", "interval_s"});
    MetricsConfig m;
    m.metrics_path = f.required_string("metrics_path");
    m.interval_s = static_cast<uint32_t>(
        f.optional_uint("interval_s", 0, kMaxMetricsIntervalS).value_or(kDefaultMetricsIntervalS));
    validate(m, where);
    return m;
}

ConsoleConfig console_from_json(const json& j, const std::string& where) {
    const JsonFields f(j, where, {"type"});
    ConsoleConfig c;
    if (f.optional_choice("type", {"serial", "virtio"}).value_or("serial") == "virtio") c.type = ConsoleType::Virtio;
    return c;
}

VmConfig parse_config_json(std::string_view text) {
    const json doc = parse_json_document(text, "config", "");

    std::vector<std::string_view> keys;
    for (const Section& s : kSections) keys.push_back(s.key);
    const JsonFields top(doc, "", keys);

    VmConfig config;
    for (const Section& s : kSections) {
        if (const json* j = top.find(s.key)) s.parse(*j, std::string(s.key), config);
    }
    validate(config);  // each section validated itself; checks across sections belong here
    return config;
}

VmConfig load_config_file(const std::string& path) {
    const auto fail = [&](std::string_view what) { return ConfigError(fmt::format("config file {}: {}", path, what)); };
    const FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw fail(std::strerror(errno));
    std::string text;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw fail(std::strerror(errno));
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
    }
    try {
        return parse_config_json(text);
    } catch (const ConfigError& e) {
        std::string msg = e.what();
        // "config: JSON syntax error ..." reads better as "config file X: JSON syntax error ...".
        if (msg.starts_with("config: ")) msg.erase(0, 8);
        throw fail(msg);
    }
}

}  // namespace embervm::vmm
