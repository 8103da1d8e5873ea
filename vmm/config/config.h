// The VM configuration model: plain structs filled in by the JSON config file, the command
// line and (later) the HTTP API, plus the validation that every front door shares.
//
// Field names and section keys follow Firecracker ("boot-source", "machine-config", ...), so a
// Firecracker --config-file works unchanged for the sections embervm implements. Errors are
// one line, name the field by a JSON-pointer-ish path ("machine-config.vcpu_count") and say
// what was expected.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "vmm/sys/error.h"

namespace embervm::vmm {

// A bad configuration (from a file, the command line or an API request).
class ConfigError : public Error {
public:
    using Error::Error;
};

inline constexpr uint32_t kMinVcpus = 1;
inline constexpr uint32_t kMaxVcpus = 32;
inline constexpr uint64_t kMinMemSizeMib = 16;
inline constexpr uint64_t kMaxMemSizeMib = uint64_t{1} << 20;  // 1 TiB
inline constexpr size_t kMaxBootArgsBytes = 4096;

// "boot-source": the guest kernel and what it boots with.
struct BootSourceConfig {
    std::string kernel_image_path;
    std::optional<std::string> initrd_path;
    std::optional<std::string> boot_args;

    bool operator==(const BootSourceConfig&) const = default;
};

// "machine-config": vCPUs and memory.
struct MachineConfig {
    uint32_t vcpu_count = 1;
    uint64_t mem_size_mib = 128;
    bool smt = false;                // refused: embervm does not emulate SMT topology
    bool track_dirty_pages = false;  // accepted and stored

    bool operator==(const MachineConfig&) const = default;
};

// "drives": virtio-blk devices backed by raw image files (Firecracker's schema).
enum class CacheType { Unsafe, Writeback };  // Writeback: FLUSH is offered and made durable
enum class IoEngineKind { Sync, Async };     // Async: io_uring

inline constexpr size_t kMaxDrives = 16;
inline constexpr size_t kMaxDriveIdBytes = 64;

struct DriveConfig {
    std::string drive_id;
    std::string path_on_host;
    bool is_root_device = false;
    bool is_read_only = false;
    std::optional<std::string> partuuid;  // root device: root=PARTUUID=... instead of /dev/vda
    CacheType cache_type = CacheType::Unsafe;
    IoEngineKind io_engine = IoEngineKind::Sync;

    bool operator==(const DriveConfig&) const = default;
};

const char* to_string(CacheType type);
const char* to_string(IoEngineKind engine);

// "network-interfaces": virtio-net devices backed by existing host TAP devices (Firecracker's
// schema; `mtu` is an embervm extension: offered to the guest as VIRTIO_NET_F_MTU).
inline constexpr size_t kMaxNetworkInterfaces = 8;
inline constexpr size_t kMaxHostDevNameBytes = 15;  // IFNAMSIZ - 1
inline constexpr uint32_t kMinMtu = 68;
inline constexpr uint32_t kMaxMtu = 65535;

using MacAddress = std::array<uint8_t, 6>;

struct NetworkInterfaceConfig {
    std::string iface_id;
    std::string host_dev_name;
    std::optional<MacAddress> guest_mac;  // generated (locally administered) when absent
    std::optional<uint32_t> mtu;

    bool operator==(const NetworkInterfaceConfig&) const = default;
};

// "aa:bb:cc:dd:ee:ff" (hex digits in either case). Throws ConfigError naming `field`.
MacAddress parse_mac(std::string_view field, std::string_view text);
std::string format_mac(const MacAddress& mac);

// "balloon": a virtio-balloon device (Firecracker's schema).
inline constexpr uint32_t kMaxStatsPollingIntervalS = 3600;

struct BalloonConfig {
    uint64_t amount_mib = 0;           // target size of the balloon
    bool deflate_on_oom = false;       // VIRTIO_BALLOON_F_DEFLATE_ON_OOM
    uint32_t stats_polling_interval_s = 0;  // 0: no statistics queue
    bool free_page_reporting = false;  // VIRTIO_BALLOON_F_PAGE_REPORTING

    bool operator==(const BalloonConfig&) const = default;
};

// "logger": where the VMM's log lines go and what they show (Firecracker's schema). The logger
// is process-wide: applying a LoggerConfig (apply_logger_config) changes it for every VM in the
// process. Absent fields leave the logger as it is (embervm's defaults: stderr, Info, the
// level shown, the origin not). Firecracker's `module` filter is refused by name: embervm's
// log lines carry no module to filter on.
enum class LogLevel { Off, Error, Warning, Info, Debug, Trace };
const char* to_string(LogLevel level);  // "Off", "Error", "Warning", ...

struct LoggerConfig {
    std::optional<std::string> log_path;  // a file (appended to, created 0600) or a named pipe
    std::optional<LogLevel> level;
    std::optional<bool> show_level;       // the level in each line
    std::optional<bool> show_log_origin;  // the source file and line in each line

    bool operator==(const LoggerConfig&) const = default;
};

// "metrics": one JSON object per line appended to metrics_path (a file or a named pipe) every
// interval_s seconds, on request (flush) and when the VM ends. interval_s is an embervm
// extension (Firecracker writes every 60 s); 0 writes only on request and at the end.
inline constexpr uint32_t kDefaultMetricsIntervalS = 60;
inline constexpr uint32_t kMaxMetricsIntervalS = 86400;

struct MetricsConfig {
    std::string metrics_path;
    uint32_t interval_s = kDefaultMetricsIntervalS;

    bool operator==(const MetricsConfig&) const = default;
};

// Everything needed to build and boot one VM. Later sections (drives, network interfaces,
// balloon, logger, metrics) are added here as members.
struct VmConfig {
    std::optional<BootSourceConfig> boot_source;
    MachineConfig machine_config;
    std::vector<DriveConfig> drives;  // in the order given; the root device is attached first
    std::vector<NetworkInterfaceConfig> network_interfaces;
    std::optional<BalloonConfig> balloon;
    std::optional<LoggerConfig> logger;
    std::optional<MetricsConfig> metrics;

    bool operator==(const VmConfig&) const = default;
};

// The drive `drive_id` of `config`: the one "no such drive" lookup (the Vmm's run-time
// configuration, the API). Throws ConfigError "drives.<id>: no such drive".
inline const DriveConfig& find_drive(const VmConfig& config, std::string_view drive_id) {
    for (const DriveConfig& d : config.drives) {
        if (d.drive_id == drive_id) return d;
    }
    throw ConfigError(std::string("drives.").append(drive_id).append(": no such drive"));
}
inline DriveConfig& find_drive(VmConfig& config, std::string_view drive_id) {
    return const_cast<DriveConfig&>(find_drive(std::as_const(config), drive_id));
}

// ---- Validation --------------------------------------------------------------------------
// Structural checks (ranges, lengths, empty strings, NUL bytes, refused features); no
// filesystem access. `where` prefixes the field paths in error messages.
void validate(const BootSourceConfig& boot_source, std::string_view where = "boot-source");
void validate(const MachineConfig& machine_config, std::string_view where = "machine-config");
void validate(const DriveConfig& drive, std::string_view where);
// Also checks across drives: unique drive_id, at most one root device, at most kMaxDrives.
void validate_drives(const std::vector<DriveConfig>& drives, std::string_view where = "drives");
void validate(const NetworkInterfaceConfig& iface, std::string_view where);
// Also checks across interfaces: unique iface_id, host_dev_name and guest_mac, at most
// kMaxNetworkInterfaces.
void validate_network_interfaces(const std::vector<NetworkInterfaceConfig>& ifaces,
                                 std::string_view where = "network-interfaces");
void validate(const BalloonConfig& balloon, std::string_view where = "balloon");
void validate(const LoggerConfig& logger, std::string_view where = "logger");
void validate(const MetricsConfig& metrics, std::string_view where = "metrics");
void validate(const VmConfig& config);

// Filesystem checks: every path names a file that exists and can be opened for reading.
// Error: "boot-source.kernel_image_path: /x/vmlinux: No such file or directory".
void validate_files(const BootSourceConfig& boot_source, std::string_view where = "boot-source");
// A drive's image must be a regular file or block device, readable, and writable unless
// is_read_only.
void validate_files(const DriveConfig& drive, std::string_view where);
void validate_files(const VmConfig& config);

// Opens `path` read-only and closes it again; throws "<field>: <path>: <strerror>" on failure
// (a directory fails with "Is a directory").
void check_readable_file(std::string_view field, const std::string& path);

// ---- JSON front door ---------------------------------------------------------------------
// Parses a Firecracker-style config document and runs the structural validation; does not
// touch the filesystem (call validate_files for that, once all overrides are applied).
// Throws ConfigError, e.g. "config: JSON syntax error at byte 57 (line 3, column 5): ...".
VmConfig parse_config_json(std::string_view text);

// Parses one JSON document (duplicate keys refused). Throws ConfigError "<what>: JSON syntax
// error at byte N (line L, column C): ...".
nlohmann::json parse_json_document(std::string_view text, std::string_view what);

// Reads and parses a config file. Errors are prefixed by the file:
// "config file /x/vm.json: No such file or directory",
// "config file /x/vm.json: machine-config.vcpus: unknown key".
VmConfig load_config_file(const std::string& path);

// Per-section parsers, shared with the HTTP API (PUT /boot-source, PUT /machine-config).
// `where` prefixes error paths ("boot-source"). They run validate() on the section but do
// not touch the filesystem.
BootSourceConfig boot_source_from_json(const nlohmann::json& j, const std::string& where);
MachineConfig machine_config_from_json(const nlohmann::json& j, const std::string& where);
DriveConfig drive_from_json(const nlohmann::json& j, const std::string& where);
NetworkInterfaceConfig network_interface_from_json(const nlohmann::json& j, const std::string& where);
BalloonConfig balloon_from_json(const nlohmann::json& j, const std::string& where);
// "level" is matched case-insensitively ("info", "Warning"; "warn" is accepted too).
LoggerConfig logger_from_json(const nlohmann::json& j, const std::string& where);
MetricsConfig metrics_from_json(const nlohmann::json& j, const std::string& where);

// Applies `logger` to the process logger (vmm/sys/log.h): opens log_path first (throws
// ConfigError "<where>.log_path: /x/vmm.log: Permission denied", changing nothing), then sets
// the output, level and line shape that are given. For the config file at start-up and for
// PUT /logger.
void apply_logger_config(const LoggerConfig& logger, std::string_view where = "logger");

// The config document that parse_config_json accepts (for GET /vm/config); absent optional
// fields and an unset boot source are omitted.
nlohmann::json to_json(const BootSourceConfig& boot_source);
nlohmann::json to_json(const MachineConfig& machine_config);
nlohmann::json to_json(const DriveConfig& drive);
nlohmann::json to_json(const NetworkInterfaceConfig& iface);
nlohmann::json to_json(const BalloonConfig& balloon);
nlohmann::json to_json(const LoggerConfig& logger);
nlohmann::json to_json(const MetricsConfig& metrics);
nlohmann::json to_json(const VmConfig& config);

// Reads the fields of one JSON object with typed, range-checked accessors. Unknown keys are
// refused on construction, so a typo is reported as such rather than as a missing field.
// Optional accessors treat an absent key like JSON null only where noted.
class JsonFields {
public:
    // Throws "<where>: expected an object, got <type>" or "<where>.<key>: unknown key (...)".
    JsonFields(const nlohmann::json& object, std::string where, const std::vector<std::string_view>& known_keys);

    // "<where>.<key>", or "<key>" at the top level (where == "").
    std::string path(std::string_view key) const;
    // The raw value, or nullptr if the key is absent.
    const nlohmann::json* find(std::string_view key) const;

    std::string required_string(std::string_view key) const;
    // Absent or null -> nullopt (Firecracker's Option<String>).
    std::optional<std::string> optional_string(std::string_view key) const;
    uint64_t required_uint(std::string_view key, uint64_t min, uint64_t max) const;
    // Absent -> nullopt; null is refused.
    std::optional<uint64_t> optional_uint(std::string_view key, uint64_t min, uint64_t max) const;
    // Absent -> nullopt; null is refused.
    std::optional<bool> optional_bool(std::string_view key) const;
    bool required_bool(std::string_view key) const;
    // A string that must be one of `choices`; absent -> nullopt; null is refused.
    std::optional<std::string> optional_choice(std::string_view key, const std::vector<std::string_view>& choices) const;

private:
    const nlohmann::json& object_;
    std::string where_;
};

// Describes a JSON value for "got ..." in error messages: "string", "null", "-1", "2.5".
std::string describe_json_value(const nlohmann::json& value);

}  // namespace embervm::vmm
