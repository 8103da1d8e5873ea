// Fuzz target config_json: a config file (Firecracker's --config-file schema) through
// parse_config_json. A bad document must end in ConfigError (the one-line message naming the
// field); any other exception or a crash is a bug. An accepted document must pass validate()
// and survive the round trip through to_json (GET /vm/config's document) unchanged.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <string_view>

#include "tests/fuzz/boot_harness.h"
#include "vmm/config/from_json.h"
#include "vmm/config/to_json.h"
#include "vmm/config/validate.h"

using namespace embervm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    std::optional<vmm::VmConfig> config;
    try {
        config = vmm::parse_config_json(text);
    } catch (const vmm::ConfigError&) {
        return 0;
    } catch (const std::exception& e) {
        fuzz::fuzz_fail("parse_config_json threw something other than ConfigError:", e.what());
    }
    std::string again;
    try {
        vmm::validate(*config);
        again = vmm::to_json(*config).dump();
        if (vmm::parse_config_json(again) != *config) fuzz::fuzz_fail("round trip changed the config:", again);
    } catch (const std::exception& e) {
        fuzz::fuzz_fail("an accepted config fails validation or its round trip:", std::string(e.what()) + " " + again);
    }
    return 0;
}
