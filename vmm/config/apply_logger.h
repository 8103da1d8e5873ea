// The configuration's one side effect: its "logger" section applied to the process logger.
#pragma once

#include <string_view>

#include "vmm/config/config.h"

namespace embervm::vmm {

// Applies `logger` to the process logger (vmm/sys/log.h): opens log_path first (throws
// ConfigError "<where>.log_path: /x/vmm.log: Permission denied", changing nothing), then sets
// the output, level and line shape that are given. For the config file at start-up and for
// PUT /logger.
void apply_logger_config(const LoggerConfig& logger, std::string_view where = "logger");

}  // namespace embervm::vmm
