// Tests for the "vsock" section of vmm/config (Firecracker's schema) and the --vsock flag:
// accepted forms, bad fields with their one-line message, the round trip through to_json, the
// flag over a config file.
#include <catch2/catch.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "tests/unit/temp_dir.h"
#include "tests/unit/vmm/test_support.h"
#include "vmm/config/cli.h"
#include "vmm/config/config.h"
#include "vmm/config/from_json.h"
#include "vmm/config/to_json.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_vsock_config_test {

namespace vmm = embervm::vmm;
using embervm::test::config_error;
using embervm::test::TempDir;
constexpr auto parse = embervm::test::parse_args;

TEST_CASE("vsock: the section, its round trip and Firecracker's vsock_id", "[config][vsock]") {
    CHECK_FALSE(vmm::parse_config_json("{}").vsock);
    const auto c = vmm::parse_config_json(R"({"vsock": {"guest_cid": 3, "uds_path": "/run/v.sock"}})");
    REQUIRE(c.vsock);
    CHECK(c.vsock->guest_cid == 3);
    CHECK(c.vsock->uds_path == "/run/v.sock");
    CHECK(vmm::to_json(c)["vsock"] == nlohmann::json{{"guest_cid", 3}, {"uds_path", "/run/v.sock"}});
    CHECK(vmm::parse_config_json(vmm::to_json(c).dump()) == c);
    CHECK_FALSE(vmm::to_json(vmm::parse_config_json("{}")).contains("vsock"));
    const auto fc = vmm::parse_config_json(R"({"vsock": {"vsock_id": "vsock0", "guest_cid": 4294967295, "uds_path": "v"}})");
    CHECK(fc.vsock->guest_cid == 4294967295);
}

TEST_CASE("vsock: bad fields name the field", "[config][vsock]") {
    CHECK(config_error(R"({"vsock": {"uds_path": "/v"}})").starts_with("vsock.guest_cid: "));
    CHECK(config_error(R"({"vsock": {"guest_cid": 3}})").starts_with("vsock.uds_path: "));
    for (const char* cid : {"0", "2", "4294967296", "-1", "\"3\"", "3.5", "null"}) {
        INFO(cid);
        CHECK(config_error(std::string(R"({"vsock": {"uds_path": "/v", "guest_cid": )") + cid + "}}")
                  .starts_with("vsock.guest_cid: "));
    }
    CHECK(config_error(R"({"vsock": {"guest_cid": 3, "uds_path": ""}})").starts_with("vsock.uds_path: "));
    CHECK(config_error(R"({"vsock": {"guest_cid": 3, "uds_path": 7}})").starts_with("vsock.uds_path: "));
    CHECK(config_error(R"({"vsock": {"guest_cid": 3, "uds_path": ")" + std::string(97, 'x') + "\"}}")
              .starts_with("vsock.uds_path: longer than 96 bytes"));
    CHECK(config_error(R"({"vsock": {"guest_cid": 3, "uds_path": "/v", "port": 1}})").starts_with("vsock.port: unknown key"));
    CHECK(config_error(R"({"vsock": {"guest_cid": 3, "uds_path": "/v", "vsock_id": 1}})").starts_with("vsock.vsock_id: "));
    CHECK(config_error(R"({"vsock": 3})").starts_with("vsock: expected an object"));
}

TEST_CASE("cli: --vsock", "[cli][vsock]") {
    TempDir dir;
    const std::string kernel = dir.file("vmlinux");
    std::ofstream(kernel) << "not really a kernel";
    auto o = parse({"--kernel", kernel.c_str(), "--vsock", "cid=7,path=/tmp/x.sock"});
    auto config = vmm::resolve_config(o);
    REQUIRE(config.vsock);
    CHECK(config.vsock->guest_cid == 7);
    CHECK(config.vsock->uds_path == "/tmp/x.sock");
    CHECK_THROWS_WITH(parse({"--vsock", "cid=7"}), Catch::Contains("--vsock: 'cid=7' has no path="));
    CHECK_THROWS_WITH(parse({"--vsock", "path=/x"}), Catch::Contains("--vsock: 'path=/x' has no cid="));
    CHECK_THROWS_WITH(parse({"--vsock", "cid=2,path=/x"}), Catch::Contains("--vsock: cid"));
    CHECK_THROWS_WITH(parse({"--vsock", "cid=3,path=/x,port=1"}), Catch::Contains("unknown field 'port'"));
    // Over a config file's section.
    const std::string file = dir.write("vm.json", R"({"boot-source": {"kernel_image_path": ")" + kernel +
                                                       R"("}, "vsock": {"guest_cid": 3, "uds_path": "/a"}})");
    o = parse({"--config", file.c_str(), "--vsock", "cid=9,path=/b"});
    config = vmm::resolve_config(o);
    CHECK(config.vsock->guest_cid == 9);
    CHECK(config.vsock->uds_path == "/b");
    CHECK(vmm::usage_text().find("--vsock SPEC") != std::string::npos);
}

}  // namespace unit_vsock_config_test
