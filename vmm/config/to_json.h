// The configuration model as the JSON document from_json.h reads (GET /vm/config).
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "vmm/config/config.h"

namespace embervm::vmm {

// A string field of the document. JSON text is UTF-8, but paths, boot_args and interface names
// from the command line are bytes: a value that is valid UTF-8 is kept as is; in one that is
// not, each byte outside a valid UTF-8 sequence is written as the four characters \xHH, and
// each backslash as \x5c, so the bytes can be recovered (README, "HTTP API").
std::string json_text(std::string_view bytes);

// The config document that parse_config_json accepts (for GET /vm/config); absent optional
// fields and an unset boot source are omitted.
nlohmann::json to_json(const BootSourceConfig& boot_source);
nlohmann::json to_json(const MachineConfig& machine_config);
nlohmann::json to_json(const RateLimiterConfig& limiter);
nlohmann::json to_json(const DriveConfig& drive);
nlohmann::json to_json(const NetworkInterfaceConfig& iface);
nlohmann::json to_json(const BalloonConfig& balloon);
nlohmann::json to_json(const VsockConfig& vsock);
nlohmann::json to_json(const FsConfig& fs);
nlohmann::json to_json(const LoggerConfig& logger);
nlohmann::json to_json(const MetricsConfig& metrics);
nlohmann::json to_json(const ConsoleConfig& console);
nlohmann::json to_json(const VmConfig& config);

}  // namespace embervm::vmm
