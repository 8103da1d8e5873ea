// The JSON front door: Firecracker's --config-file schema into the configuration model, whole
// documents (config files, Vm::from_json) and one section at a time (the HTTP API).
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "vmm/config/config.h"
#include "vmm/config/json_reader.h"

namespace embervm::vmm {

// Parses a Firecracker-style config document and runs the structural validation; does not
// touch the filesystem (call validate_files for that, once all overrides are applied).
// Throws ConfigError, e.g. "config: JSON syntax error at byte 57 (line 3, column 5): ...".
VmConfig parse_config_json(std::string_view text);

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
// A "rate_limiter" object; a bucket that is absent or null is nullopt.
RateLimiterConfig rate_limiter_from_json(const nlohmann::json& j, const std::string& where);
// An optional "rate_limiter" field of `f`'s object (absent or null: nullopt).
std::optional<RateLimiterConfig> optional_rate_limiter(const JsonFields& f, std::string_view key);
NetworkInterfaceConfig network_interface_from_json(const nlohmann::json& j, const std::string& where);
BalloonConfig balloon_from_json(const nlohmann::json& j, const std::string& where);
VsockConfig vsock_from_json(const nlohmann::json& j, const std::string& where);
FsConfig fs_from_json(const nlohmann::json& j, const std::string& where);
// "level" is matched case-insensitively ("info", "Warning"; "warn" is accepted too).
LoggerConfig logger_from_json(const nlohmann::json& j, const std::string& where);
MetricsConfig metrics_from_json(const nlohmann::json& j, const std::string& where);
ConsoleConfig console_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace embervm::vmm
