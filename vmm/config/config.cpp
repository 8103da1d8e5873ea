// The configuration model's validation and its JSON front door (Firecracker's --config-file
// schema). Each top-level section is one row in kSections: a parser and a serializer.
#include "vmm/config/config.h"

#include <fcntl.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "vmm/sys/fd.h"
#include "vmm/sys/log.h"

namespace embervm::vmm {

using nlohmann::json;

namespace {

ConfigError field_error(std::string_view path, std::string_view what) {
    return ConfigError(fmt::format("{}: {}", path, what));
}

void check_range(std::string_view path, uint64_t value, uint64_t min, uint64_t max) {
    if (value < min || value > max) {
        throw field_error(path, fmt::format("{} is out of range {}..{}", value, min, max));
    }
}

// Paths and the command line end up as C strings; an embedded NUL would silently cut them.
void check_no_nul(std::string_view path, const std::string& value) {
    if (value.find('\0') != std::string::npos) throw field_error(path, "contains a NUL byte");
}

// Device ids (drive_id, iface_id) appear in logs, API paths and guest-visible serials.
void check_id(std::string_view path, const std::string& id) {
    if (id.empty()) throw field_error(path, "must not be empty");
    if (id.size() > kMaxDriveIdBytes) throw field_error(path, fmt::format("longer than {} bytes", kMaxDriveIdBytes));
    for (const char c : id) {
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) {
            throw field_error(path, fmt::format("'{}' may contain only letters, digits, '_' and '-'", id));
        }
    }
}

std::string join_keys(const std::vector<std::string_view>& keys) {
    std::string out;
    for (const auto key : keys) {
        if (!out.empty()) out += ", ";
        out += key;
    }
    return out;
}

}  // namespace

// ---- Validation --------------------------------------------------------------------------

void validate(const BootSourceConfig& bs, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    if (bs.kernel_image_path.empty()) throw field_error(path("kernel_image_path"), "must not be empty");
    check_no_nul(path("kernel_image_path"), bs.kernel_image_path);
    if (bs.initrd_path) {
        if (bs.initrd_path->empty()) throw field_error(path("initrd_path"), "must not be empty");
        check_no_nul(path("initrd_path"), *bs.initrd_path);
    }
    if (bs.boot_args) {
        if (bs.boot_args->size() > kMaxBootArgsBytes) {
            throw field_error(path("boot_args"), fmt::format("{} bytes is longer than the limit of {}",
                                                             bs.boot_args->size(), kMaxBootArgsBytes));
        }
        check_no_nul(path("boot_args"), *bs.boot_args);
    }
}

void validate(const MachineConfig& mc, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    check_range(path("vcpu_count"), mc.vcpu_count, kMinVcpus, kMaxVcpus);
    check_range(path("mem_size_mib"), mc.mem_size_mib, kMinMemSizeMib, kMaxMemSizeMib);
    if (mc.smt) throw field_error(path("smt"), "true is not supported (embervm does not emulate SMT topology)");
}

const char* to_string(CacheType type) { return type == CacheType::Writeback ? "Writeback" : "Unsafe"; }

void validate(const DriveConfig& d, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    // The id is also the virtio-blk serial (GET_ID) and appears in logs and API paths.
    check_id(path("drive_id"), d.drive_id);
    if (d.path_on_host.empty()) throw field_error(path("path_on_host"), "must not be empty");
    check_no_nul(path("path_on_host"), d.path_on_host);
    if (d.partuuid) {
        if (!d.is_root_device) throw field_error(path("partuuid"), "is only meaningful with is_root_device: true");
        if (d.partuuid->empty()) throw field_error(path("partuuid"), "must not be empty");
        for (const char c : *d.partuuid) {
            if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == '-')) {
                throw field_error(path("partuuid"), fmt::format("'{}' is not a partition UUID", *d.partuuid));
            }
        }
    }
}

void validate_drives(const std::vector<DriveConfig>& drives, std::string_view where) {
    if (drives.size() > kMaxDrives) {
        throw field_error(where, fmt::format("{} drives is more than the limit of {}", drives.size(), kMaxDrives));
    }
    std::set<std::string> ids;
    const DriveConfig* root = nullptr;
    for (size_t i = 0; i < drives.size(); i++) {
        const std::string at = fmt::format("{}[{}]", where, i);
        validate(drives[i], at);
        if (!ids.insert(drives[i].drive_id).second) {
            throw field_error(at + ".drive_id", fmt::format("'{}' is used by another drive", drives[i].drive_id));
        }
        if (drives[i].is_root_device) {
            if (root) {
                throw field_error(at + ".is_root_device",
                                  fmt::format("drive '{}' is already the root device", root->drive_id));
            }
            root = &drives[i];
        }
    }
}

MacAddress parse_mac(std::string_view field, std::string_view text) {
    MacAddress mac{};
    const auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    bool ok = text.size() == 17;
    for (size_t i = 0; ok && i < 6; i++) {
        const int hi = hex(text[i * 3]), lo = hex(text[i * 3 + 1]);
        ok = hi >= 0 && lo >= 0 && (i == 5 || text[i * 3 + 2] == ':');
        mac[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    if (!ok) throw field_error(field, fmt::format("'{}' is not a MAC address (expected aa:bb:cc:dd:ee:ff)", text));
    return mac;
}

std::string format_mac(const MacAddress& m) {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
}

void validate(const NetworkInterfaceConfig& n, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    check_id(path("iface_id"), n.iface_id);
    if (n.host_dev_name.empty()) throw field_error(path("host_dev_name"), "must not be empty");
    if (n.host_dev_name.size() > kMaxHostDevNameBytes) {
        throw field_error(path("host_dev_name"), fmt::format("'{}' is longer than the {} bytes of a Linux interface name",
                                                             n.host_dev_name, kMaxHostDevNameBytes));
    }
    for (const char c : n.host_dev_name) {
        if (c == '/' || c == ':' || c == '\0' || std::isspace(static_cast<unsigned char>(c))) {
            throw field_error(path("host_dev_name"), fmt::format("'{}' is not a valid interface name", n.host_dev_name));
        }
    }
    if (n.host_dev_name == "." || n.host_dev_name == "..") {
        throw field_error(path("host_dev_name"), fmt::format("'{}' is not a valid interface name", n.host_dev_name));
    }
    if (n.guest_mac) {
        if ((*n.guest_mac)[0] & 1) {
            throw field_error(path("guest_mac"), fmt::format("{} is a multicast address", format_mac(*n.guest_mac)));
        }
        if (*n.guest_mac == MacAddress{}) throw field_error(path("guest_mac"), "00:00:00:00:00:00 is not usable");
    }
    if (n.mtu) check_range(path("mtu"), *n.mtu, kMinMtu, kMaxMtu);
}

void validate_network_interfaces(const std::vector<NetworkInterfaceConfig>& ifaces, std::string_view where) {
    if (ifaces.size() > kMaxNetworkInterfaces) {
        throw field_error(where, fmt::format("{} network interfaces is more than the limit of {}", ifaces.size(),
                                             kMaxNetworkInterfaces));
    }
    std::set<std::string> ids, devs;
    std::set<MacAddress> macs;
    for (size_t i = 0; i < ifaces.size(); i++) {
        const std::string at = fmt::format("{}[{}]", where, i);
        const auto& n = ifaces[i];
        validate(n, at);
        if (!ids.insert(n.iface_id).second) {
            throw field_error(at + ".iface_id", fmt::format("'{}' is used by another interface", n.iface_id));
        }
        if (!devs.insert(n.host_dev_name).second) {
            throw field_error(at + ".host_dev_name", fmt::format("'{}' is used by another interface", n.host_dev_name));
        }
        if (n.guest_mac && !macs.insert(*n.guest_mac).second) {
            throw field_error(at + ".guest_mac", fmt::format("{} is used by another interface", format_mac(*n.guest_mac)));
        }
    }
}

void validate(const BalloonConfig& b, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    check_range(path("amount_mib"), b.amount_mib, 0, kMaxMemSizeMib);
    check_range(path("stats_polling_interval_s"), b.stats_polling_interval_s, 0, kMaxStatsPollingIntervalS);
}

void validate(const LoggerConfig& l, std::string_view where) {
    if (l.log_path) {
        const std::string path = fmt::format("{}.log_path", where);
        if (l.log_path->empty()) throw field_error(path, "must not be empty");
        check_no_nul(path, *l.log_path);
    }
}

void validate(const MetricsConfig& m, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    if (m.metrics_path.empty()) throw field_error(path("metrics_path"), "must not be empty");
    check_no_nul(path("metrics_path"), m.metrics_path);
    check_range(path("interval_s"), m.interval_s, 0, kMaxMetricsIntervalS);
}

void validate(const VmConfig& config) {
    if (config.boot_source) validate(*config.boot_source);
    validate(config.machine_config);
    validate_drives(config.drives);
    validate_network_interfaces(config.network_interfaces);
    if (config.logger) validate(*config.logger);
    if (config.metrics) validate(*config.metrics);
    if (config.balloon) {
        validate(*config.balloon);
        if (config.balloon->amount_mib > config.machine_config.mem_size_mib) {
            throw field_error("balloon.amount_mib",
                              fmt::format("{} MiB is more than the guest's memory (machine-config.mem_size_mib {})",
                                          config.balloon->amount_mib, config.machine_config.mem_size_mib));
        }
    }
}

void check_readable_file(std::string_view field, const std::string& path) {
    const FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw field_error(field, fmt::format("{}: {}", path, std::strerror(errno)));
    struct stat st {};
    const bool is_dir = ::fstat(fd.get(), &st) == 0 && S_ISDIR(st.st_mode);
    if (is_dir) throw field_error(field, fmt::format("{}: {}", path, std::strerror(EISDIR)));
}

void validate_files(const BootSourceConfig& bs, std::string_view where) {
    check_readable_file(fmt::format("{}.kernel_image_path", where), bs.kernel_image_path);
    if (bs.initrd_path) check_readable_file(fmt::format("{}.initrd_path", where), *bs.initrd_path);
}

void validate_files(const DriveConfig& d, std::string_view where) {
    const std::string field = fmt::format("{}.path_on_host", where);
    const FileDescriptor fd(::open(d.path_on_host.c_str(), (d.is_read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!fd) {
        const int err = errno;
        throw field_error(field, fmt::format("{}: {}{}", d.path_on_host, std::strerror(err),
                                             err == EACCES || err == EROFS ? " (set is_read_only: true?)" : ""));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
        throw field_error(field, fmt::format("{}: not a regular file or block device", d.path_on_host));
    }
}

void validate_files(const VmConfig& config) {
    if (config.boot_source) validate_files(*config.boot_source);
    for (size_t i = 0; i < config.drives.size(); i++) {
        validate_files(config.drives[i], fmt::format("drives[{}]", i));
    }
}

// ---- JsonFields --------------------------------------------------------------------------

std::string describe_json_value(const json& v) {
    switch (v.type()) {
        case json::value_t::null: return "null";
        case json::value_t::boolean: return "boolean";
        case json::value_t::string: return "string";
        case json::value_t::array: return "array";
        case json::value_t::object: return "object";
        case json::value_t::number_unsigned: return fmt::format("number {}", v.get<uint64_t>());
        case json::value_t::number_integer: {
            const auto n = v.get<int64_t>();
            return n < 0 ? fmt::format("negative number {}", n) : fmt::format("number {}", n);
        }
        case json::value_t::number_float: {
            // nlohmann stores integers beyond 64 bits as doubles.
            const double d = v.get<double>();
            if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) >= 0x1p63) {
                return fmt::format("number {} (too large)", v.dump());
            }
            return fmt::format("floating-point number {}", v.dump());
        }
        default: return "unsupported value";
    }
}

JsonFields::JsonFields(const json& object, std::string where, const std::vector<std::string_view>& known_keys)
    : object_(object), where_(std::move(where)) {
    if (!object_.is_object()) {
        throw field_error(where_.empty() ? "config" : where_,
                          fmt::format("expected an object, got {}", describe_json_value(object_)));
    }
    for (const auto& [key, value] : object_.items()) {
        if (std::find(known_keys.begin(), known_keys.end(), key) == known_keys.end()) {
            throw field_error(path(key), fmt::format("unknown key (known keys: {})", join_keys(known_keys)));
        }
    }
}

std::string JsonFields::path(std::string_view key) const {
    return where_.empty() ? std::string(key) : fmt::format("{}.{}", where_, key);
}

const json* JsonFields::find(std::string_view key) const {
    const auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
}

std::string JsonFields::required_string(std::string_view key) const {
    const json* v = find(key);
    if (v == nullptr) throw field_error(path(key), "required");
    if (!v->is_string()) throw field_error(path(key), fmt::format("expected a string, got {}", describe_json_value(*v)));
    return v->get<std::string>();
}

std::optional<std::string> JsonFields::optional_string(std::string_view key) const {
    const json* v = find(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    if (!v->is_string()) throw field_error(path(key), fmt::format("expected a string, got {}", describe_json_value(*v)));
    return v->get<std::string>();
}

uint64_t JsonFields::required_uint(std::string_view key, uint64_t min, uint64_t max) const {
    if (find(key) == nullptr) throw field_error(path(key), "required");
    return *optional_uint(key, min, max);
}

std::optional<uint64_t> JsonFields::optional_uint(std::string_view key, uint64_t min, uint64_t max) const {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    uint64_t n = 0;
    if (v->is_number_unsigned()) {
        n = v->get<uint64_t>();
    } else if (v->is_number_integer() && v->get<int64_t>() >= 0) {
        n = static_cast<uint64_t>(v->get<int64_t>());
    } else {
        throw field_error(path(key), fmt::format("expected an unsigned integer, got {}", describe_json_value(*v)));
    }
    check_range(path(key), n, min, max);
    return n;
}

bool JsonFields::required_bool(std::string_view key) const {
    if (!find(key)) throw field_error(path(key), "required (true or false)");
    return *optional_bool(key);
}

std::optional<std::string> JsonFields::optional_choice(std::string_view key,
                                                       const std::vector<std::string_view>& choices) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (v->is_string()) {
        const auto s = v->get<std::string>();
        if (std::find(choices.begin(), choices.end(), s) != choices.end()) return s;
    }
    const std::string got = v->is_string() ? fmt::format("\"{}\"", v->get<std::string>()) : describe_json_value(*v);
    throw field_error(path(key), fmt::format("expected one of {}, got {}", join_keys(choices), got));
}

std::optional<bool> JsonFields::optional_bool(std::string_view key) const {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) throw field_error(path(key), fmt::format("expected a boolean, got {}", describe_json_value(*v)));
    return v->get<bool>();
}

// ---- Sections ----------------------------------------------------------------------------

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
    const JsonFields f(j, where, {"vcpu_count", "mem_size_mib", "smt", "track_dirty_pages"});
    MachineConfig mc;
    mc.vcpu_count = static_cast<uint32_t>(f.required_uint("vcpu_count", kMinVcpus, kMaxVcpus));
    mc.mem_size_mib = f.required_uint("mem_size_mib", kMinMemSizeMib, kMaxMemSizeMib);
    mc.smt = f.optional_bool("smt").value_or(false);
    mc.track_dirty_pages = f.optional_bool("track_dirty_pages").value_or(false);
    validate(mc, where);
    return mc;
}

DriveConfig drive_from_json(const json& j, const std::string& where) {
    // rate_limiter and socket (vhost-user) are Firecracker keys embervm does not implement:
    // refused by name rather than silently ignored.
    const JsonFields f(j, where, {"drive_id", "path_on_host", "is_root_device", "is_read_only", "partuuid",
                                  "cache_type", "io_engine", "rate_limiter", "socket"});
    for (const char* unsupported : {"rate_limiter", "socket"}) {
        if (const json* v = f.find(unsupported); v && !v->is_null()) {
            throw field_error(f.path(unsupported), "is not supported by embervm");
        }
    }
    DriveConfig d;
    d.drive_id = f.required_string("drive_id");
    d.path_on_host = f.required_string("path_on_host");
    d.is_root_device = f.required_bool("is_root_device");
    d.is_read_only = f.optional_bool("is_read_only").value_or(false);
    d.partuuid = f.optional_string("partuuid");
    if (f.optional_choice("cache_type", {"Unsafe", "Writeback"}).value_or("Unsafe") == "Writeback") {
        d.cache_type = CacheType::Writeback;
    }
    if (const auto engine = f.optional_choice("io_engine", virtio::block::io_engine_names())) {
        d.io_engine = *virtio::block::io_engine_from_string(*engine);
    }
    validate(d, where);
    return d;
}

json to_json(const DriveConfig& d) {
    json j = {{"drive_id", d.drive_id},         {"path_on_host", d.path_on_host},
              {"is_root_device", d.is_root_device}, {"is_read_only", d.is_read_only},
              {"cache_type", to_string(d.cache_type)}, {"io_engine", to_string(d.io_engine)}};
    if (d.partuuid) j["partuuid"] = *d.partuuid;
    return j;
}

NetworkInterfaceConfig network_interface_from_json(const json& j, const std::string& where) {
    const JsonFields f(j, where, {"iface_id", "host_dev_name", "guest_mac", "mtu", "rx_rate_limiter",
                                  "tx_rate_limiter"});
    for (const char* unsupported : {"rx_rate_limiter", "tx_rate_limiter"}) {
        if (const json* v = f.find(unsupported); v && !v->is_null()) {
            throw field_error(f.path(unsupported), "is not supported by embervm");
        }
    }
    NetworkInterfaceConfig n;
    n.iface_id = f.required_string("iface_id");
    n.host_dev_name = f.required_string("host_dev_name");
    if (const auto mac = f.optional_string("guest_mac")) n.guest_mac = parse_mac(f.path("guest_mac"), *mac);
    if (const auto mtu = f.optional_uint("mtu", kMinMtu, kMaxMtu)) n.mtu = static_cast<uint32_t>(*mtu);
    validate(n, where);
    return n;
}

json to_json(const NetworkInterfaceConfig& n) {
    json j = {{"iface_id", n.iface_id}, {"host_dev_name", n.host_dev_name}};
    if (n.guest_mac) j["guest_mac"] = format_mac(*n.guest_mac);
    if (n.mtu) j["mtu"] = *n.mtu;
    return j;
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

json to_json(const BalloonConfig& b) {
    return {{"amount_mib", b.amount_mib},
            {"deflate_on_oom", b.deflate_on_oom},
            {"stats_polling_interval_s", b.stats_polling_interval_s},
            {"free_page_reporting", b.free_page_reporting}};
}

const char* to_string(LogLevel level) {
    switch (level) {
        case LogLevel::Off: return "Off";
        case LogLevel::Error: return "Error";
        case LogLevel::Warning: return "Warning";
        case LogLevel::Info: return "Info";
        case LogLevel::Debug: return "Debug";
        case LogLevel::Trace: return "Trace";
    }
    return "?";
}

namespace {

log::Level to_log_level(LogLevel level) {
    switch (level) {
        case LogLevel::Off: return log::Level::Off;
        case LogLevel::Error: return log::Level::Error;
        case LogLevel::Warning: return log::Level::Warn;
        case LogLevel::Info: return log::Level::Info;
        case LogLevel::Debug: return log::Level::Debug;
        case LogLevel::Trace: return log::Level::Trace;
    }
    return log::Level::Info;
}

}  // namespace

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

json to_json(const LoggerConfig& l) {
    json j = json::object();
    if (l.log_path) j["log_path"] = *l.log_path;
    if (l.level) j["level"] = to_string(*l.level);
    if (l.show_level) j["show_level"] = *l.show_level;
    if (l.show_log_origin) j["show_log_origin"] = *l.show_log_origin;
    return j;
}

void apply_logger_config(const LoggerConfig& l, std::string_view where) {
    validate(l, where);
    if (l.log_path) {
        try {
            log::set_output_path(*l.log_path);
        } catch (const std::exception& e) {
            throw field_error(fmt::format("{}.log_path", where), e.what());
        }
    }
    if (l.level) log::set_level(to_log_level(*l.level));
    if (l.show_level) log::set_show_level(*l.show_level);
    if (l.show_log_origin) log::set_show_origin(*l.show_log_origin);
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

json to_json(const MetricsConfig& m) { return {{"metrics_path", m.metrics_path}, {"interval_s", m.interval_s}}; }

json to_json(const BootSourceConfig& bs) {
    json j = {{"kernel_image_path", bs.kernel_image_path}};
    if (bs.initrd_path) j["initrd_path"] = *bs.initrd_path;
    if (bs.boot_args) j["boot_args"] = *bs.boot_args;
    return j;
}

json to_json(const MachineConfig& mc) {
    return {{"vcpu_count", mc.vcpu_count},
            {"mem_size_mib", mc.mem_size_mib},
            {"smt", mc.smt},
            {"track_dirty_pages", mc.track_dirty_pages}};
}

namespace {

// One top-level section of the config document. Adding a section (drives, network-interfaces,
// balloon, logger, metrics) means writing its parse/emit pair and adding a row to kSections.
struct Section {
    std::string_view key;
    void (*parse)(const json& j, const std::string& where, VmConfig& out);
    // Returns null to leave the section out of the document.
    json (*emit)(const VmConfig& config);
};

const Section kSections[] = {
    {"boot-source",
     [](const json& j, const std::string& where, VmConfig& out) { out.boot_source = boot_source_from_json(j, where); },
     [](const VmConfig& c) { return c.boot_source ? to_json(*c.boot_source) : json(nullptr); }},
    {"machine-config",
     [](const json& j, const std::string& where, VmConfig& out) {
         out.machine_config = machine_config_from_json(j, where);
     },
     [](const VmConfig& c) { return to_json(c.machine_config); }},
    {"drives",
     [](const json& j, const std::string& where, VmConfig& out) {
         if (!j.is_array()) throw field_error(where, fmt::format("expected an array, got {}", describe_json_value(j)));
         out.drives.clear();
         for (size_t i = 0; i < j.size(); i++) out.drives.push_back(drive_from_json(j[i], fmt::format("{}[{}]", where, i)));
         validate_drives(out.drives, where);
     },
     [](const VmConfig& c) {
         if (c.drives.empty()) return json(nullptr);
         json a = json::array();
         for (const auto& d : c.drives) a.push_back(to_json(d));
         return a;
     }},
    {"network-interfaces",
     [](const json& j, const std::string& where, VmConfig& out) {
         if (!j.is_array()) throw field_error(where, fmt::format("expected an array, got {}", describe_json_value(j)));
         out.network_interfaces.clear();
         for (size_t i = 0; i < j.size(); i++) {
             out.network_interfaces.push_back(network_interface_from_json(j[i], fmt::format("{}[{}]", where, i)));
         }
         validate_network_interfaces(out.network_interfaces, where);
     },
     [](const VmConfig& c) {
         if (c.network_interfaces.empty()) return json(nullptr);
         json a = json::array();
         for (const auto& n : c.network_interfaces) a.push_back(to_json(n));
         return a;
     }},
    {"balloon",
     [](const json& j, const std::string& where, VmConfig& out) { out.balloon = balloon_from_json(j, where); },
     [](const VmConfig& c) { return c.balloon ? to_json(*c.balloon) : json(nullptr); }},
    {"logger",
     [](const json& j, const std::string& where, VmConfig& out) { out.logger = logger_from_json(j, where); },
     [](const VmConfig& c) { return c.logger ? to_json(*c.logger) : json(nullptr); }},
    {"metrics",
     [](const json& j, const std::string& where, VmConfig& out) { out.metrics = metrics_from_json(j, where); },
     [](const VmConfig& c) { return c.metrics ? to_json(*c.metrics) : json(nullptr); }},
};

// Tracks the path of the value being parsed so duplicate object keys can be refused: nlohmann
// would silently keep the last one, serde (and so Firecracker) refuses them.
class DuplicateKeyCheck {
public:
    bool operator()(int /*depth*/, json::parse_event_t event, json& parsed) {
        switch (event) {
            case json::parse_event_t::object_start:
            case json::parse_event_t::array_start:
                frames_.push_back(Frame{event == json::parse_event_t::object_start, {}, {}, 0});
                break;
            case json::parse_event_t::key: {
                Frame& top = frames_.back();
                top.key = parsed.get<std::string>();
                if (!top.keys.insert(top.key).second) throw ConfigError(fmt::format("{}: duplicate key", current_path()));
                break;
            }
            case json::parse_event_t::object_end:
            case json::parse_event_t::array_end:
                frames_.pop_back();
                element_done();
                break;
            case json::parse_event_t::value:
                element_done();
                break;
        }
        return true;
    }

private:
    struct Frame {
        bool is_object;
        std::set<std::string> keys;
        std::string key;   // objects: the current key
        size_t index;      // arrays: the current element
    };

    void element_done() {
        if (!frames_.empty() && !frames_.back().is_object) ++frames_.back().index;
    }

    std::string current_path() const {
        std::string out;
        for (const Frame& f : frames_) {
            if (f.is_object) {
                if (!out.empty()) out += '.';
                out += f.key;
            } else {
                out += fmt::format("[{}]", f.index);
            }
        }
        return out;
    }

    std::vector<Frame> frames_;
};

// "parse error at line 1, column 5: syntax error while parsing ..." -> "syntax error while ...".
std::string syntax_error_detail(const json::parse_error& e) {
    std::string what = e.what();
    const auto at = what.find("parse error");
    if (at != std::string::npos) {
        const auto colon = what.find(": ", at);
        if (colon != std::string::npos) return what.substr(colon + 2);
    }
    return what;
}

// Line and column (1-based) of nlohmann's 1-based byte position (the offending character, or one
// past the end for a truncated document), for humans editing the file.
std::pair<size_t, size_t> line_and_column(std::string_view text, size_t byte) {
    size_t line = 1, column = 1;
    for (size_t i = 0; i + 1 < byte && i < text.size(); ++i) {
        if (text[i] == '\n') {
            ++line;
            column = 1;
        } else {
            ++column;
        }
    }
    return {line, column};
}

}  // namespace

json to_json(const VmConfig& config) {
    json j = json::object();
    for (const Section& s : kSections) {
        json section = s.emit(config);
        if (!section.is_null()) j[std::string(s.key)] = std::move(section);
    }
    return j;
}

json parse_json_document(std::string_view text, std::string_view what) {
    try {
        return json::parse(text.begin(), text.end(), DuplicateKeyCheck{});
    } catch (const json::parse_error& e) {
        const auto [line, column] = line_and_column(text, e.byte);
        throw ConfigError(fmt::format("{}: JSON syntax error at byte {} (line {}, column {}): {}", what, e.byte, line,
                                      column, syntax_error_detail(e)));
    }
}

VmConfig parse_config_json(std::string_view text) {
    const json doc = parse_json_document(text, "config");

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
