// Tests for the "fs" section of vmm/config (virtio-fs on a vhost-user backend, an embervm
// extension) and the --fs flag: accepted forms and defaults, bad fields with their one-line
// message, unique tags, the round trip through to_json, the flag added to a config file's list.
#include <catch2/catch.hpp>

#include <fstream>
#include <string>

#include "tests/unit/temp_dir.h"
#include "tests/unit/vmm/test_support.h"
#include "vmm/config/cli.h"
#include "vmm/config/config.h"
#include "vmm/config/from_json.h"
#include "vmm/config/to_json.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_fs_config_test {

namespace vmm = embervm::vmm;
using embervm::test::config_error;
using embervm::test::TempDir;
constexpr auto parse = embervm::test::parse_args;

namespace {
std::string fs_json(const std::string& entry) { return R"({"fs": [)" + entry + "]}"; }
}  // namespace

TEST_CASE("fs: the section, its defaults and its round trip", "[config][fs]") {
    CHECK(vmm::parse_config_json("{}").fs.empty());
    CHECK_FALSE(vmm::to_json(vmm::parse_config_json("{}")).contains("fs"));
    const auto c = vmm::parse_config_json(
        fs_json(R"({"tag": "share", "socket": "/run/fs.sock"}, {"tag": "two", "socket": "/run/b.sock",
                   "num_request_queues": 4, "queue_size": 256})"));
    REQUIRE(c.fs.size() == 2);
    CHECK(c.fs[0].tag == "share");
    CHECK(c.fs[0].socket == "/run/fs.sock");
    CHECK(c.fs[0].num_request_queues == 1);
    CHECK(c.fs[0].queue_size == 1024);
    CHECK(c.fs[1].num_request_queues == 4);
    CHECK(c.fs[1].queue_size == 256);
    CHECK(vmm::to_json(c)["fs"][0] ==
          nlohmann::json{{"tag", "share"}, {"socket", "/run/fs.sock"}, {"num_request_queues", 1}, {"queue_size", 1024}});
    CHECK(vmm::parse_config_json(vmm::to_json(c).dump()) == c);
    // A tag of exactly 36 bytes fits virtio-fs's tag field.
    CHECK(vmm::parse_config_json(fs_json(R"({"tag": ")" + std::string(36, 't') + R"(", "socket": "s"})")).fs.size() == 1);
}

TEST_CASE("fs: bad fields name the field", "[config][fs]") {
    CHECK(config_error(fs_json(R"({"socket": "/s"})")).starts_with("fs[0].tag: "));
    CHECK(config_error(fs_json(R"({"tag": "t"})")).starts_with("fs[0].socket: "));
    CHECK(config_error(fs_json(R"({"tag": "", "socket": "/s"})")).starts_with("fs[0].tag: must not be empty"));
    CHECK(config_error(fs_json(R"({"tag": ")" + std::string(37, 't') + R"(", "socket": "/s"})"))
              .starts_with("fs[0].tag: longer than 36 bytes"));
    CHECK(config_error(fs_json(R"({"tag": 3, "socket": "/s"})")).starts_with("fs[0].tag: "));
    CHECK(config_error(fs_json(R"({"tag": "t", "socket": ""})")).starts_with("fs[0].socket: must not be empty"));
    CHECK(config_error(fs_json(R"({"tag": "t", "socket": ")" + std::string(108, 's') + "\"}"))
              .starts_with("fs[0].socket: longer than 107 bytes"));
    for (const char* n : {"0", "17", "-1", "\"1\"", "1.5", "null"}) {
        INFO(n);
        CHECK(config_error(fs_json(std::string(R"({"tag": "t", "socket": "/s", "num_request_queues": )") + n + "}"))
                  .starts_with("fs[0].num_request_queues: "));
    }
    for (const char* n : {"0", "1000", "65536", "\"1024\""}) {
        INFO(n);
        CHECK(config_error(fs_json(std::string(R"({"tag": "t", "socket": "/s", "queue_size": )") + n + "}"))
                  .starts_with("fs[0].queue_size: "));
    }
    CHECK(config_error(fs_json(R"({"tag": "t", "socket": "/s", "dax": true})")).starts_with("fs[0].dax: unknown key"));
    CHECK(config_error(fs_json(R"({"tag": "t", "socket": "/a"}, {"tag": "t", "socket": "/b"})"))
              .starts_with("fs[1].tag: 't' is used by another fs device"));
    CHECK(config_error(R"({"fs": {"tag": "t", "socket": "/s"}})").starts_with("fs: "));
}

TEST_CASE("cli: --fs", "[cli][fs]") {
    TempDir dir;
    const std::string kernel = dir.file("vmlinux");
    std::ofstream(kernel) << "not really a kernel";
    auto o = parse({"--kernel", kernel.c_str(), "--fs", "tag=share,socket=/tmp/fs.sock", "--fs",
                    "tag=b,socket=/tmp/b.sock,num_request_queues=2,queue_size=128"});
    auto config = vmm::resolve_config(o);
    REQUIRE(config.fs.size() == 2);
    CHECK(config.fs[0] == vmm::FsConfig{"share", "/tmp/fs.sock", 1, 1024});
    CHECK(config.fs[1] == vmm::FsConfig{"b", "/tmp/b.sock", 2, 128});
    CHECK_THROWS_WITH(parse({"--fs", "tag=t"}), Catch::Contains("--fs: 'tag=t' has no socket="));
    CHECK_THROWS_WITH(parse({"--fs", "socket=/s"}), Catch::Contains("--fs: 'socket=/s' has no tag="));
    CHECK_THROWS_WITH(parse({"--fs", "tag=t,socket=/s,dax"}), Catch::Contains("unknown field 'dax'"));
    CHECK_THROWS_WITH(parse({"--fs", "tag=t,socket=/s,num_request_queues=0"}),
                      Catch::Contains("--fs: num_request_queues"));
    CHECK_THROWS_WITH(parse({"--fs", "tag=t,socket=/s,queue_size=100"}), Catch::Contains("not a power of two"));
    const std::string long_tag = "tag=" + std::string(37, 't') + ",socket=/s";
    CHECK_THROWS_WITH(parse({"--fs", long_tag.c_str()}),
                      Catch::Contains("longer than 36 bytes"));
    // Added to a config file's list; a tag used twice is refused naming the flag.
    const std::string file = dir.write("vm.json", R"({"boot-source": {"kernel_image_path": ")" + kernel +
                                                       R"("}, "fs": [{"tag": "a", "socket": "/a"}]})");
    o = parse({"--config", file.c_str(), "--fs", "tag=b,socket=/b"});
    config = vmm::resolve_config(o);
    REQUIRE(config.fs.size() == 2);
    CHECK(config.fs[1].tag == "b");
    o = parse({"--config", file.c_str(), "--fs", "tag=a,socket=/b"});
    CHECK_THROWS_WITH(vmm::resolve_config(o), Catch::Contains("--fs: fs[1].tag: 'a' is used by another fs device"));
    CHECK(vmm::usage_text().find("--fs SPEC") != std::string::npos);
}

}  // namespace unit_fs_config_test
