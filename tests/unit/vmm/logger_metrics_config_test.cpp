// Tests for the "logger" and "metrics" sections of vmm/config (Firecracker's schemas plus
// metrics.interval_s), apply_logger_config, and the command-line flags --log-path and
// --metrics-path: accepted forms, each bad field with its one-line message, round trips.
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tests/unit/temp_dir.h"
#include "tests/unit/vmm/test_support.h"
#include "vmm/config/apply_logger.h"
#include "vmm/config/cli.h"
#include "vmm/config/config.h"
#include "vmm/config/to_json.h"
#include "vmm/config/validate.h"
#include "vmm/sys/log.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_logger_metrics_config_test {

namespace vmm = embervm::vmm;
namespace elog = embervm::log;
using nlohmann::json;

namespace {

using embervm::test::config_error;

std::string logger_error(std::string_view body) { return config_error(fmt::format(R"({{"logger": {}}})", body)); }
std::string metrics_error(std::string_view body) { return config_error(fmt::format(R"({{"metrics": {}}})", body)); }


using embervm::test::TempDir;
constexpr auto parse = embervm::test::parse_args;

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

using embervm::test::LoggerRestore;

}  // namespace

TEST_CASE("logger: Firecracker's object is accepted, level in any case", "[config][logger]") {
    const auto config = vmm::parse_config_json(
        R"({"logger": {"log_path": "/tmp/vmm.log", "level": "Warning", "show_level": false, "show_log_origin": true}})");
    REQUIRE(config.logger);
    CHECK(config.logger->log_path == "/tmp/vmm.log");
    CHECK(config.logger->level == vmm::LogLevel::Warning);
    CHECK(config.logger->show_level == false);
    CHECK(config.logger->show_log_origin == true);
    CHECK(vmm::parse_config_json(vmm::to_json(config).dump()) == config);

    const std::pair<const char*, vmm::LogLevel> levels[] = {
        {"Error", vmm::LogLevel::Error}, {"warning", vmm::LogLevel::Warning}, {"WARN", vmm::LogLevel::Warning},
        {"info", vmm::LogLevel::Info},   {"DEBUG", vmm::LogLevel::Debug},     {"Trace", vmm::LogLevel::Trace},
        {"off", vmm::LogLevel::Off}};
    for (const auto& [text, level] : levels) {
        INFO(text);
        const auto l = vmm::logger_from_json(json{{"level", text}}, "logger");
        CHECK(l.level == level);
        CHECK(vmm::to_json(l) == json{{"level", vmm::to_string(level)}});
    }

    // Every field is optional; absent ones stay unset (the logger keeps what it has). A null
    // log_path or module is the same as none.
    const auto empty = vmm::logger_from_json(json::parse(R"({"log_path": null, "module": null})"), "logger");
    CHECK(empty == vmm::LoggerConfig{});
    CHECK(vmm::to_json(empty) == json::object());
    CHECK_FALSE(vmm::parse_config_json("{}").logger);
    CHECK_FALSE(vmm::to_json(vmm::parse_config_json("{}")).contains("logger"));
}

TEST_CASE("logger: bad fields name the field", "[config][logger]") {
    CHECK(logger_error("[]") == "logger: expected an object, got array");
    CHECK(logger_error(R"({"log_path": ""})") == "logger.log_path: must not be empty");
    CHECK(logger_error(R"({"log_path": 7})") == "logger.log_path: expected a string, got number 7");
    CHECK(logger_error(R"({"level": "Loud"})") ==
          "logger.level: expected one of Error, Warning, Info, Debug, Trace, Off, got \"Loud\"");
    CHECK(logger_error(R"({"level": 3})") ==
          "logger.level: expected one of Error, Warning, Info, Debug, Trace, Off, got number 3");
    CHECK(logger_error(R"({"level": null})") ==
          "logger.level: expected one of Error, Warning, Info, Debug, Trace, Off, got null");
    CHECK(logger_error(R"({"show_level": "yes"})") == "logger.show_level: expected a boolean, got string");
    CHECK(logger_error(R"({"show_log_origin": 1})") == "logger.show_log_origin: expected a boolean, got number 1");
    CHECK(logger_error(R"({"module": "vmm::devices"})") ==
          "logger.module: is not supported by embervm (its log lines carry no module to filter on)");
    CHECK(logger_error(R"({"options": []})").starts_with("logger.options: unknown key (known keys: log_path, level"));
    vmm::LoggerConfig nul;
    nul.log_path = std::string("a\0b", 3);
    CHECK_THROWS_WITH(vmm::validate(nul), "logger.log_path: contains a NUL byte");
}

TEST_CASE("metrics: Firecracker's object and interval_s", "[config][metrics]") {
    auto config = vmm::parse_config_json(R"({"metrics": {"metrics_path": "/tmp/metrics.fifo"}})");
    REQUIRE(config.metrics);
    CHECK(config.metrics->metrics_path == "/tmp/metrics.fifo");
    CHECK(config.metrics->interval_s == 60u);  // as Firecracker
    CHECK(vmm::parse_config_json(vmm::to_json(config).dump()) == config);
    CHECK(vmm::to_json(*config.metrics) == json{{"metrics_path", "/tmp/metrics.fifo"}, {"interval_s", 60}});

    config = vmm::parse_config_json(R"({"metrics": {"metrics_path": "m.json", "interval_s": 0}})");
    CHECK(config.metrics->interval_s == 0u);
    config = vmm::parse_config_json(R"({"metrics": {"metrics_path": "m.json", "interval_s": 86400}})");
    CHECK(config.metrics->interval_s == 86400u);
}

TEST_CASE("metrics: bad fields name the field", "[config][metrics]") {
    CHECK(metrics_error(R"("m.json")") == "metrics: expected an object, got string");
    CHECK(metrics_error("{}") == "metrics.metrics_path: required");
    CHECK(metrics_error(R"({"metrics_path": null})") == "metrics.metrics_path: expected a string, got null");
    CHECK(metrics_error(R"({"metrics_path": ""})") == "metrics.metrics_path: must not be empty");
    CHECK(metrics_error(R"({"metrics_path": ["a"]})") == "metrics.metrics_path: expected a string, got array");
    CHECK(metrics_error(R"({"metrics_path": "m", "interval_s": 86401})") ==
          "metrics.interval_s: 86401 is out of range 0..86400");
    CHECK(metrics_error(R"({"metrics_path": "m", "interval_s": -1})") ==
          "metrics.interval_s: expected an unsigned integer, got negative number -1");
    CHECK(metrics_error(R"({"metrics_path": "m", "interval_s": 1.5})") ==
          "metrics.interval_s: expected an unsigned integer, got floating-point number 1.5");
    CHECK(metrics_error(R"({"metrics_path": "m", "flush": true})").starts_with("metrics.flush: unknown key"));
    vmm::MetricsConfig m;
    m.metrics_path = std::string("m\0", 2);
    CHECK_THROWS_WITH(vmm::validate(m, "metrics"), "metrics.metrics_path: contains a NUL byte");
}

TEST_CASE("logger: apply_logger_config sets the process logger", "[config][logger]") {
    LoggerRestore restore;
    TempDir dir;
    const std::string path = dir.file("vmm.log");
    vmm::LoggerConfig l;
    l.log_path = path;
    l.level = vmm::LogLevel::Debug;
    l.show_level = false;
    vmm::apply_logger_config(l);
    CHECK(elog::output_path() == path);
    CHECK(elog::level() == elog::Level::Debug);
    CHECK_FALSE(elog::show_level());
    CHECK_FALSE(elog::show_origin());  // not given: unchanged
    elog::debug("applied-logger-line");
    const std::string text = read_file(path);
    CHECK(text.find(": applied-logger-line\n") != std::string::npos);
    CHECK(text.find("DEBUG") == std::string::npos);

    // Only the given fields change.
    vmm::LoggerConfig origin_only;
    origin_only.show_log_origin = true;
    vmm::apply_logger_config(origin_only);
    CHECK(elog::output_path() == path);
    CHECK(elog::level() == elog::Level::Debug);
    CHECK(elog::show_origin());

    // A path that cannot be opened changes nothing and names the field.
    vmm::LoggerConfig bad;
    bad.log_path = dir.file("missing-dir/vmm.log");
    bad.level = vmm::LogLevel::Error;
    CHECK_THROWS_WITH(vmm::apply_logger_config(bad),
                      fmt::format("logger.log_path: {}: No such file or directory", *bad.log_path));
    CHECK(elog::output_path() == path);
    CHECK(elog::level() == elog::Level::Debug);
}

TEST_CASE("cli: --log-path and --metrics-path", "[cli][logger][metrics]") {
    LoggerRestore restore;
    TempDir dir;
    const std::string kernel = dir.file("vmlinux");
    std::ofstream(kernel) << "not really a kernel";

    auto o = parse({"--kernel", kernel.c_str(), "--metrics-path", "/tmp/m.json", "--log-path=/tmp/l.log"});
    CHECK(o.metrics_path == "/tmp/m.json");
    CHECK(o.log_path == "/tmp/l.log");
    auto config = vmm::resolve_config(o);
    REQUIRE(config.metrics);
    CHECK(config.metrics->metrics_path == "/tmp/m.json");
    CHECK(config.metrics->interval_s == 60u);

    // Over a config file's metrics section: the path changes, the interval stays.
    const std::string file = dir.file("vm.json");
    std::ofstream(file) << fmt::format(
        R"({{"boot-source": {{"kernel_image_path": "{}"}}, "metrics": {{"metrics_path": "a", "interval_s": 5}},
            "logger": {{"level": "Debug", "log_path": "{}"}}}})",
        kernel, dir.file("from-file.log"));
    o = parse({"--config", file.c_str(), "--metrics-path", "b"});
    config = vmm::resolve_config(o);
    CHECK(config.metrics == vmm::MetricsConfig{"b", 5});

    // apply_cli_logging: the file's logger, then --log-path and --log-level over it.
    o = parse({"--config", file.c_str(), "--log-path", dir.file("from-flag.log").c_str(), "--log-level", "warn"});
    config = vmm::resolve_config(o);
    vmm::apply_cli_logging(o, config);
    CHECK(elog::output_path() == dir.file("from-flag.log"));
    CHECK(elog::level() == elog::Level::Warn);
    CHECK(std::filesystem::exists(dir.file("from-file.log")));

    o = parse({"--kernel", kernel.c_str(), "--log-path", dir.file("no/such/dir.log").c_str()});
    config = vmm::resolve_config(o);
    CHECK_THROWS_WITH(vmm::apply_cli_logging(o, config),
                      fmt::format("--log-path: {}: No such file or directory", dir.file("no/such/dir.log")));

    CHECK_THROWS_WITH(parse({"--metrics-path", ""}), "--metrics-path: empty value");
    CHECK_THROWS_WITH(parse({"--log-path"}), "--log-path: missing value");
    CHECK(vmm::usage_text().find("--metrics-path PATH") != std::string::npos);
    CHECK(vmm::usage_text().find("--log-path PATH") != std::string::npos);
}

}  // namespace unit_logger_metrics_config_test
