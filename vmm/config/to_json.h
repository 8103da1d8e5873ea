// The configuration model as the JSON document from_json.h reads (GET /vm/config).
#pragma once

#include <nlohmann/json.hpp>

#include "vmm/config/config.h"

namespace embervm::vmm {

// The config document that parse_config_json accepts (for GET /vm/config); absent optional
// fields and an unset boot source are omitted.
nlohmann::json to_json(const BootSourceConfig& boot_source);
nlohmann::json to_json(const MachineConfig& machine_config);
nlohmann::json to_json(const DriveConfig& drive);
nlohmann::json to_json(const NetworkInterfaceConfig& iface);
nlohmann::json to_json(const BalloonConfig& balloon);
nlohmann::json to_json(const LoggerConfig& logger);
nlohmann::json to_json(const MetricsConfig& metrics);
nlohmann::json to_json(const ConsoleConfig& console);
nlohmann::json to_json(const VmConfig& config);

}  // namespace embervm::vmm
