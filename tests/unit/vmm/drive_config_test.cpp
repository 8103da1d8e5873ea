// Tests for the "drives" section of vmm/config (Firecracker's schema): accepted forms,
// every bad input with its one-line message, cross-drive checks, file checks and round trip.
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include "tests/unit/vmm/test_support.h"
#include "vmm/config/config.h"
#include "vmm/config/to_json.h"
#include "vmm/config/validate.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_drive_config_test {

namespace vmm = embervm::vmm;

namespace {

std::string drives_error(std::string_view drives_json) {
    return embervm::test::config_error(fmt::format(R"({{"drives": {}}})", drives_json));
}

std::string drive(std::string_view extra = "", std::string_view id = "rootfs") {
    return fmt::format(R"({{"drive_id": "{}", "path_on_host": "/tmp/x.img", "is_root_device": false{}{}}})", id,
                       extra.empty() ? "" : ", ", extra);
}

}  // namespace

TEST_CASE("drives: Firecracker's drive objects are accepted with their defaults", "[config][drives]") {
    const auto config = vmm::parse_config_json(R"({"drives": [
        {"drive_id": "rootfs", "path_on_host": "/img/root.ext4", "is_root_device": true, "is_read_only": false},
        {"drive_id": "data_1", "path_on_host": "/img/data.raw", "is_root_device": false, "is_read_only": true,
         "cache_type": "Writeback", "io_engine": "Async", "rate_limiter": null}]})");
    REQUIRE(config.drives.size() == 2);
    CHECK(config.drives[0].drive_id == "rootfs");
    CHECK(config.drives[0].path_on_host == "/img/root.ext4");
    CHECK(config.drives[0].is_root_device);
    CHECK_FALSE(config.drives[0].is_read_only);
    CHECK(config.drives[0].cache_type == vmm::CacheType::Unsafe);
    CHECK(config.drives[0].io_engine == vmm::IoEngine::Sync);
    CHECK(config.drives[1].is_read_only);
    CHECK(config.drives[1].cache_type == vmm::CacheType::Writeback);
    CHECK(config.drives[1].io_engine == vmm::IoEngine::Async);
}

TEST_CASE("drives: to_json round trip", "[config][drives]") {
    const auto config = vmm::parse_config_json(R"({"drives": [
        {"drive_id": "rootfs", "path_on_host": "/img/root.ext4", "is_root_device": true,
         "partuuid": "0eaa91a0-01", "cache_type": "Writeback", "io_engine": "Async"}]})");
    CHECK(vmm::parse_config_json(vmm::to_json(config).dump()) == config);
    CHECK(vmm::to_json(vmm::VmConfig{}).count("drives") == 0);
}

TEST_CASE("drives: every bad input names the field", "[config][drives]") {
    CHECK(drives_error("{}") == "drives: expected an array, got object");
    CHECK(drives_error("[5]") == "drives[0]: expected an object, got number 5");
    CHECK_THAT(drives_error(R"([{"path_on_host": "/x", "is_root_device": false}])"),
               Catch::StartsWith("drives[0].drive_id: required"));
    CHECK_THAT(drives_error(R"([{"drive_id": "a", "is_root_device": false}])"),
               Catch::StartsWith("drives[0].path_on_host: required"));
    CHECK_THAT(drives_error(R"([{"drive_id": "a", "path_on_host": "/x"}])"),
               Catch::StartsWith("drives[0].is_root_device: required"));
    CHECK_THAT(drives_error("[" + drive(R"("is_read_only": "yes")") + "]"),
               Catch::StartsWith("drives[0].is_read_only:"));
    CHECK(drives_error("[" + drive(R"("cache_type": "WriteBack")") + "]") ==
          "drives[0].cache_type: expected one of Unsafe, Writeback, got \"WriteBack\"");
    CHECK(drives_error("[" + drive(R"("io_engine": 1)") + "]") ==
          "drives[0].io_engine: expected one of Sync, Async, got number 1");
    CHECK_THAT(drives_error("[" + drive(R"("bogus": 1)") + "]"), Catch::StartsWith("drives[0].bogus: unknown key"));
    CHECK(drives_error("[" + drive(R"("rate_limiter": {"bandwidth": {"size": 1, "refill_time": 0}})") + "]") ==
          "drives[0].rate_limiter.bandwidth.refill_time: must not be 0 when size is not 0 (size 0 means no limit)");
    CHECK_THAT(drives_error("[" + drive(R"("rate_limiter": {"ops": {"size": -1, "refill_time": 100}})") + "]"),
               Catch::StartsWith("drives[0].rate_limiter.ops.size:"));
    CHECK_THAT(drives_error("[" + drive(R"("rate_limiter": {"ops": {"refill_time": 100}})") + "]"),
               Catch::StartsWith("drives[0].rate_limiter.ops.size: required"));
    CHECK_THAT(drives_error("[" + drive(R"("rate_limiter": {"ops": {"size": 1, "refill_time": 1, "burst": 2}})") + "]"),
               Catch::StartsWith("drives[0].rate_limiter.ops.burst: unknown key"));
    CHECK_THAT(drives_error("[" + drive(R"("rate_limiter": {"iops": {"size": 1, "refill_time": 1}})") + "]"),
               Catch::StartsWith("drives[0].rate_limiter.iops: unknown key"));
    CHECK_THAT(drives_error("[" + drive(R"("rate_limiter": {"bandwidth": {"size": 1.5, "refill_time": 1}})") + "]"),
               Catch::StartsWith("drives[0].rate_limiter.bandwidth.size:"));
    CHECK_THAT(drives_error("[" + drive(R"("rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1, "one_time_burst": -5}})") + "]"),
               Catch::StartsWith("drives[0].rate_limiter.bandwidth.one_time_burst:"));
    CHECK_THAT(drives_error("[" + drive(R"("rate_limiter": 5)") + "]"),
               Catch::StartsWith("drives[0].rate_limiter: expected an object"));
    CHECK(drives_error("[" + drive(R"("socket": "/tmp/vhost.sock")") + "]") ==
          "drives[0].path_on_host: is not allowed with socket (vhost-user)");
    CHECK_THAT(drives_error("[" + drive("", "") + "]"), Catch::StartsWith("drives[0].drive_id: must not be empty"));
    CHECK_THAT(drives_error("[" + drive("", "a b") + "]"), Catch::Contains("drives[0].drive_id: 'a b' may contain only"));
    CHECK_THAT(drives_error("[" + drive("", std::string(65, 'a')) + "]"),
               Catch::StartsWith("drives[0].drive_id: longer than 64 bytes"));
    CHECK_THAT(drives_error(R"([{"drive_id": "a", "path_on_host": "", "is_root_device": false}])"),
               Catch::StartsWith("drives[0].path_on_host: must not be empty"));
    CHECK(drives_error("[" + drive(R"("partuuid": "0eaa91a0-01")") + "]") ==
          "drives[0].partuuid: is only meaningful with is_root_device: true");
}

TEST_CASE("drives: checks across drives", "[config][drives]") {
    CHECK(drives_error("[" + drive("", "a") + ", " + drive("", "a") + "]") ==
          "drives[1].drive_id: 'a' is used by another drive");
    const std::string root_a = R"({"drive_id": "a", "path_on_host": "/x", "is_root_device": true})";
    const std::string root_b = R"({"drive_id": "b", "path_on_host": "/y", "is_root_device": true})";
    CHECK(drives_error("[" + root_a + ", " + root_b + "]") ==
          "drives[1].is_root_device: drive 'a' is already the root device");
    std::string many = "[";
    for (size_t i = 0; i <= vmm::kMaxDrives; i++) many += (i ? ", " : "") + drive("", fmt::format("d{}", i));
    many += "]";
    CHECK(drives_error(many) == fmt::format("drives: {} drives is more than the limit of {}", vmm::kMaxDrives + 1,
                                            vmm::kMaxDrives));
}

TEST_CASE("drives: file checks", "[config][drives]") {
    char tmpl[] = "/tmp/embervm-drive-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    const std::string dir = tmpl;
    const std::string image = dir + "/disk.img";
    std::ofstream(image) << std::string(4096, '\0');

    vmm::DriveConfig d;
    d.drive_id = "disk";
    d.path_on_host = image;
    CHECK_NOTHROW(vmm::validate_files(d, "drives[0]"));

    d.path_on_host = dir + "/missing.img";
    CHECK_THROWS_WITH(vmm::validate_files(d, "drives[0]"),
                      "drives[0].path_on_host: " + dir + "/missing.img: No such file or directory");
    d.path_on_host = dir;
    d.is_read_only = true;
    CHECK_THROWS_WITH(vmm::validate_files(d, "drives[0]"),
                      "drives[0].path_on_host: " + dir + ": not a regular file or block device");

    // A file the VMM may only read is fine for a read-only drive, refused for a writable one
    // (unless running as root, which can open it anyway).
    REQUIRE(::chmod(image.c_str(), 0444) == 0);
    d.path_on_host = image;
    d.is_read_only = true;
    CHECK_NOTHROW(vmm::validate_files(d, "drives[0]"));
    if (::geteuid() != 0) {
        d.is_read_only = false;
        CHECK_THROWS_WITH(vmm::validate_files(d, "drives[0]"), Catch::Contains("set is_read_only: true?"));
    }
    std::filesystem::remove_all(dir);
}

TEST_CASE("drives: rate_limiter in Firecracker's shape, both ways", "[config][drives][rate_limiter]") {
    const auto config = embervm::vmm::parse_config_json(
        R"({"drives": [{"drive_id": "a", "path_on_host": "/x", "is_root_device": false,
             "rate_limiter": {"bandwidth": {"size": 4194304, "one_time_burst": 1048576, "refill_time": 1000},
                              "ops": {"size": 200, "refill_time": 1000}}},
            {"drive_id": "b", "path_on_host": "/y", "is_root_device": false, "rate_limiter": {"ops": null}},
            {"drive_id": "c", "path_on_host": "/z", "is_root_device": false, "rate_limiter": null}]})");
    REQUIRE(config.drives.size() == 3);
    const auto& a = config.drives[0].rate_limiter;
    REQUIRE(a.has_value());
    CHECK(a->bandwidth == embervm::vmm::TokenBucketConfig{4194304, 1048576, 1000});
    CHECK(a->ops == embervm::vmm::TokenBucketConfig{200, 0, 1000});
    CHECK(config.drives[1].rate_limiter == embervm::vmm::RateLimiterConfig{});
    CHECK_FALSE(config.drives[2].rate_limiter.has_value());
    const auto j = embervm::vmm::to_json(config.drives[0]);
    CHECK(j["rate_limiter"] == nlohmann::json::parse(R"({"bandwidth": {"size": 4194304, "one_time_burst": 1048576,
        "refill_time": 1000}, "ops": {"size": 200, "one_time_burst": 0, "refill_time": 1000}})"));
    CHECK(embervm::vmm::parse_config_json(embervm::vmm::to_json(config).dump()) == config);  // round trip
    CHECK_FALSE(embervm::vmm::to_json(config.drives[2]).contains("rate_limiter"));
    // size 0 is no limit (as in Firecracker), with any refill_time.
    CHECK_NOTHROW(embervm::vmm::parse_config_json(
        R"({"drives": [{"drive_id": "a", "path_on_host": "/x", "is_root_device": false,
             "rate_limiter": {"bandwidth": {"size": 0, "refill_time": 0}}}]})"));
}

TEST_CASE("drives: a vhost-user drive has a socket instead of an image", "[config][drives]") {
    const auto config = vmm::parse_config_json(R"({"drives": [
        {"drive_id": "vu", "socket": "/run/qsd.sock", "is_root_device": true, "cache_type": "Writeback"}]})");
    REQUIRE(config.drives.size() == 1);
    CHECK(config.drives[0].socket == "/run/qsd.sock");
    CHECK(config.drives[0].path_on_host.empty());
    CHECK(config.drives[0].cache_type == vmm::CacheType::Writeback);
    const auto j = vmm::to_json(config);
    CHECK(j["drives"][0]["socket"] == "/run/qsd.sock");
    CHECK(j["drives"][0].count("path_on_host") == 0);
    CHECK(j["drives"][0].count("is_read_only") == 0);  // the backend decides
    CHECK(vmm::parse_config_json(j.dump()) == config);

    const auto vu = [](std::string_view extra) {
        return fmt::format(R"([{{"drive_id": "vu", "socket": "/run/qsd.sock", "is_root_device": false{}{}}}])",
                           extra.empty() ? "" : ", ", extra);
    };
    CHECK(drives_error(vu(R"("is_read_only": true)")) ==
          "drives[0].is_read_only: is not allowed with socket: the backend says whether it is");
    CHECK(drives_error(vu(R"("io_engine": "Async")")) == "drives[0].io_engine: is not allowed with socket");
    CHECK(drives_error(vu(R"("rate_limiter": {"ops": {"size": 10, "refill_time": 100}})")) ==
          "drives[0].rate_limiter: is not allowed with socket");
    CHECK(drives_error(R"([{"drive_id": "vu", "socket": "", "is_root_device": false}])") ==
          "drives[0].socket: must not be empty");
    CHECK_THAT(drives_error(fmt::format(R"([{{"drive_id": "vu", "socket": "/{}", "is_root_device": false}}])",
                                        std::string(107, 's'))),
               Catch::StartsWith("drives[0].socket: longer than 107 bytes"));
    // Without a socket, path_on_host stays required.
    CHECK_THAT(drives_error(R"([{"drive_id": "d", "is_root_device": false}])"),
               Catch::StartsWith("drives[0].path_on_host"));
}

}  // namespace unit_drive_config_test
