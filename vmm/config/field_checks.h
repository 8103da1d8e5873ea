// Helpers shared by the config code for one-line errors that name a field
// ("machine-config.vcpu_count: 0 is out of range 1..32"). Internal to vmm/config/.
#pragma once

#include <cstdint>
#include <string_view>

#include <fmt/format.h>

#include "vmm/config/config.h"

namespace embervm::vmm {

inline ConfigError field_error(std::string_view path, std::string_view what) {
    return ConfigError(fmt::format("{}: {}", path, what));
}

inline void check_range(std::string_view path, uint64_t value, uint64_t min, uint64_t max) {
    if (value < min || value > max) {
        throw field_error(path, fmt::format("{} is out of range {}..{}", value, min, max));
    }
}

}  // namespace embervm::vmm
