// Tests for the "console" section of vmm/config (an embervm extension: which device is the
// guest's console) and the --console flag: accepted forms, bad fields with their one-line
// message, the round trip through to_json, the flag over a config file.
#include <catch2/catch.hpp>

#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tests/unit/temp_dir.h"
#include "tests/unit/vmm/test_support.h"
#include "vmm/config/cli.h"
#include "vmm/config/config.h"
#include "vmm/config/from_json.h"
#include "vmm/config/to_json.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_console_config_test {

namespace vmm = embervm::vmm;
using embervm::test::config_error;
using embervm::test::TempDir;
constexpr auto parse = embervm::test::parse_args;

TEST_CASE("console: the section selects the device, the UART by default", "[config][console]") {
    CHECK_FALSE(vmm::parse_config_json("{}").console);
    auto c = vmm::parse_config_json(R"({"console": {"type": "virtio"}})");
    REQUIRE(c.console);
    CHECK(c.console->type == vmm::ConsoleType::Virtio);
    c = vmm::parse_config_json(R"({"console": {"type": "serial"}})");
    CHECK(c.console->type == vmm::ConsoleType::Serial);
    c = vmm::parse_config_json(R"({"console": {}})");
    CHECK(c.console->type == vmm::ConsoleType::Serial);

    // Round trip (GET /vm/config).
    const auto virtio = vmm::parse_config_json(R"({"console": {"type": "virtio"}})");
    CHECK(vmm::to_json(virtio)["console"] == nlohmann::json{{"type", "virtio"}});
    CHECK(vmm::parse_config_json(vmm::to_json(virtio).dump()) == virtio);
    CHECK_FALSE(vmm::to_json(vmm::parse_config_json("{}")).contains("console"));
}

TEST_CASE("console: bad fields name the field", "[config][console]") {
    CHECK(config_error(R"({"console": {"type": "hvc"}})").starts_with("console.type: "));
    CHECK(config_error(R"({"console": {"type": 3}})").starts_with("console.type: "));
    CHECK(config_error(R"({"console": {"type": null}})").starts_with("console.type: "));
    CHECK(config_error(R"({"console": {"output": "stdout"}})").starts_with("console.output: unknown key"));
    CHECK(config_error(R"({"console": "virtio"})").starts_with("console: expected an object"));
}

TEST_CASE("cli: --console", "[cli][console]") {
    TempDir dir;
    const std::string kernel = dir.file("vmlinux");
    std::ofstream(kernel) << "not really a kernel";
    auto config = vmm::resolve_config(parse({"--kernel", kernel.c_str(), "--console", "virtio"}));
    REQUIRE(config.console);
    CHECK(config.console->type == vmm::ConsoleType::Virtio);
    CHECK_FALSE(vmm::resolve_config(parse({"--kernel", kernel.c_str()})).console);

    // Over a config file's section.
    const std::string file = dir.file("vm.json");
    std::ofstream(file) << fmt::format(R"({{"boot-source": {{"kernel_image_path": "{}"}}, "console": {{"type": "virtio"}}}})",
                                       kernel);
    config = vmm::resolve_config(parse({"--config", file.c_str(), "--console", "serial"}));
    CHECK(config.console->type == vmm::ConsoleType::Serial);
    config = vmm::resolve_config(parse({"--config", file.c_str()}));
    CHECK(config.console->type == vmm::ConsoleType::Virtio);

    CHECK_THROWS_WITH(parse({"--console", "hvc0"}), "--console: unknown console 'hvc0' (expected serial or virtio)");
    CHECK_THROWS_WITH(parse({"--console"}), "--console: missing value");
    CHECK(vmm::usage_text().find("--console TYPE") != std::string::npos);
}

}  // namespace unit_console_config_test
