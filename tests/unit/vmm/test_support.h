// Helpers shared by the vmm/ unit tests.
#pragma once

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "vmm/config/cli.h"
#include "vmm/config/from_json.h"
#include "vmm/sys/log.h"

namespace embervm::test {

// The ConfigError message parse_config_json gives for `doc`; fails the test if it accepts it.
inline std::string config_error(const std::string& doc) {
    try {
        vmm::parse_config_json(doc);
    } catch (const vmm::ConfigError& e) {
        return e.what();
    }
    FAIL("parse_config_json accepted: " << doc);
    return {};
}

// parse_cli of `embervm ARGS...`.
inline vmm::CliOptions parse_args(std::vector<const char*> args) {
    args.insert(args.begin(), "embervm");
    return vmm::parse_cli(static_cast<int>(args.size()), args.data());
}

// Puts the process logger back as the other tests expect it (stderr, Info, level shown, no
// origin) when the test ends.
struct LoggerRestore {
    ~LoggerRestore() {
        log::set_output_stderr();
        log::set_level(log::Level::Info);
        log::set_show_level(true);
        log::set_show_origin(false);
    }
};

}  // namespace embervm::test
