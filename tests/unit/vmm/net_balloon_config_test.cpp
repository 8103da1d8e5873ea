// Tests for the "network-interfaces" and "balloon" sections of vmm/config (Firecracker's
// schema) and their command-line forms --net and --balloon: accepted forms, each bad input
// with its one-line message, checks across interfaces and sections, round trip.
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tests/unit/vmm/test_support.h"
#include "vmm/config/cli.h"
#include "vmm/config/config.h"
#include "vmm/config/to_json.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_net_balloon_config_test {

namespace vmm = embervm::vmm;

namespace {

using embervm::test::config_error;
constexpr auto parse = embervm::test::parse_args;

std::string iface_error(std::string_view extra, std::string_view id = "eth0", std::string_view tap = "tap0") {
    return config_error(fmt::format(R"({{"network-interfaces": [{{"iface_id": "{}", "host_dev_name": "{}"{}{}}}]}})", id,
                                    tap, extra.empty() ? "" : ", ", extra));
}

std::string balloon_error(std::string_view body) { return config_error(fmt::format(R"({{"balloon": {}}})", body)); }


std::string cli_error(std::vector<const char*> args) {
    try {
        parse(std::move(args));
    } catch (const vmm::CliError& e) {
        return e.what();
    }
    FAIL("parse_cli accepted the arguments");
    return {};
}

std::string resolve_error(const vmm::CliOptions& o) {
    try {
        vmm::resolve_config(o);
    } catch (const vmm::ConfigError& e) {
        return e.what();
    }
    FAIL("resolve_config accepted the options");
    return {};
}

class TempFile {
public:
    explicit TempFile(const std::string& content) {
        char tmpl[] = "/tmp/embervm-net-test-XXXXXX";
        const int fd = mkstemp(tmpl);
        REQUIRE(fd >= 0);
        ::close(fd);
        path_ = tmpl;
        std::ofstream(path_) << content;
    }
    ~TempFile() { std::filesystem::remove(path_); }
    const char* c_str() const { return path_.c_str(); }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

}  // namespace

TEST_CASE("network-interfaces: Firecracker's objects are accepted", "[config][net]") {
    const auto config = vmm::parse_config_json(R"({"network-interfaces": [
        {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02",
         "rx_rate_limiter": null, "tx_rate_limiter": null},
        {"iface_id": "eth1", "host_dev_name": "fc-tap-1", "mtu": 9000}]})");
    REQUIRE(config.network_interfaces.size() == 2);
    CHECK(config.network_interfaces[0].iface_id == "eth0");
    CHECK(config.network_interfaces[0].host_dev_name == "tap0");
    REQUIRE(config.network_interfaces[0].guest_mac);
    CHECK(*config.network_interfaces[0].guest_mac == vmm::MacAddress{0x06, 0x00, 0xac, 0x10, 0x00, 0x02});
    CHECK_FALSE(config.network_interfaces[0].mtu);
    CHECK_FALSE(config.network_interfaces[1].guest_mac);
    CHECK(config.network_interfaces[1].mtu == 9000u);
    CHECK(vmm::parse_config_json(vmm::to_json(config).dump()) == config);
    CHECK(vmm::to_json(config)["network-interfaces"][0]["guest_mac"] == "06:00:ac:10:00:02");
}

TEST_CASE("network-interfaces: bad fields name the field", "[config][net]") {
    CHECK(config_error(R"({"network-interfaces": {}})") == "network-interfaces: expected an array, got object");
    CHECK(iface_error("", "") == "network-interfaces[0].iface_id: must not be empty");
    CHECK(iface_error("", "eth 0") ==
          "network-interfaces[0].iface_id: 'eth 0' may contain only letters, digits, '_' and '-'");
    CHECK(iface_error("", "eth0", "") == "network-interfaces[0].host_dev_name: must not be empty");
    CHECK(iface_error("", "eth0", "a-very-long-tap-name") ==
          "network-interfaces[0].host_dev_name: 'a-very-long-tap-name' is longer than the 15 bytes of a Linux "
          "interface name");
    CHECK(iface_error("", "eth0", "tap/0") == "network-interfaces[0].host_dev_name: 'tap/0' is not a valid interface name");
    CHECK(iface_error("", "eth0", "..") == "network-interfaces[0].host_dev_name: '..' is not a valid interface name");
    CHECK(iface_error(R"("guest_mac": "06:00:ac:10:00")") ==
          "network-interfaces[0].guest_mac: '06:00:ac:10:00' is not a MAC address (expected aa:bb:cc:dd:ee:ff)");
    CHECK(iface_error(R"("guest_mac": "06-00-ac-10-00-02")") ==
          "network-interfaces[0].guest_mac: '06-00-ac-10-00-02' is not a MAC address (expected aa:bb:cc:dd:ee:ff)");
    CHECK(iface_error(R"("guest_mac": "0g:00:ac:10:00:02")") ==
          "network-interfaces[0].guest_mac: '0g:00:ac:10:00:02' is not a MAC address (expected aa:bb:cc:dd:ee:ff)");
    CHECK(iface_error(R"("guest_mac": "01:00:5e:00:00:01")") ==
          "network-interfaces[0].guest_mac: 01:00:5e:00:00:01 is a multicast address");
    CHECK(iface_error(R"("guest_mac": "00:00:00:00:00:00")") ==
          "network-interfaces[0].guest_mac: 00:00:00:00:00:00 is not usable");
    CHECK(iface_error(R"("guest_mac": 5)") == "network-interfaces[0].guest_mac: expected a string, got number 5");
    CHECK(iface_error(R"("mtu": 67)") == "network-interfaces[0].mtu: 67 is out of range 68..65535");
    CHECK(iface_error(R"("rx_rate_limiter": {"bandwidth": {"size": 1, "refill_time": 0}})") ==
          "network-interfaces[0].rx_rate_limiter.bandwidth.refill_time: must not be 0 when size is not 0 (size 0 means no limit)");
    CHECK(iface_error(R"("tx_rate_limiter": {"ops": {"size": 10}})") ==
          "network-interfaces[0].tx_rate_limiter.ops.refill_time: required");
    CHECK(iface_error(R"("allow_mmds_requests": true)").starts_with("network-interfaces[0].allow_mmds_requests: unknown key"));
    CHECK(config_error(R"({"network-interfaces": [{"host_dev_name": "tap0"}]})") ==
          "network-interfaces[0].iface_id: required");
    CHECK(config_error(R"({"network-interfaces": [{"iface_id": "eth0"}]})") ==
          "network-interfaces[0].host_dev_name: required");
}

TEST_CASE("network-interfaces: vhost (an embervm extension), without rate limiters", "[config][net]") {
    const auto config = vmm::parse_config_json(R"({"network-interfaces": [
        {"iface_id": "eth0", "host_dev_name": "tap0", "vhost": true},
        {"iface_id": "eth1", "host_dev_name": "tap1", "vhost": false},
        {"iface_id": "eth2", "host_dev_name": "tap2", "vhost": true,
         "rx_rate_limiter": {"bandwidth": {"size": 0, "refill_time": 0}}}]})");
    CHECK(config.network_interfaces[0].vhost);
    CHECK_FALSE(config.network_interfaces[1].vhost);
    CHECK(config.network_interfaces[2].vhost);  // a limiter of size 0 limits nothing
    CHECK(vmm::to_json(config)["network-interfaces"][0]["vhost"] == true);
    CHECK_FALSE(vmm::to_json(config)["network-interfaces"][1].contains("vhost"));
    CHECK(vmm::parse_config_json(vmm::to_json(config).dump()) == config);

    CHECK(iface_error(R"("vhost": 1)") == "network-interfaces[0].vhost: expected a boolean, got number 1");
    CHECK(iface_error(R"("vhost": true, "rx_rate_limiter": {"ops": {"size": 10, "refill_time": 100}})") ==
          "network-interfaces[0].rx_rate_limiter: a rate limiter cannot apply with \"vhost\": true (the host kernel "
          "moves the frames, the VMM never sees them)");
    CHECK(iface_error(R"("vhost": true, "tx_rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}})")
              .starts_with("network-interfaces[0].tx_rate_limiter: a rate limiter cannot apply"));
}

TEST_CASE("track_dirty_pages is refused next to a vhost backend, which writes behind KVM's dirty log",
          "[config][net][snapshot]") {
    const std::string tracked = R"("machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "track_dirty_pages": true})";
    CHECK(config_error("{" + tracked + R"(, "network-interfaces": [
        {"iface_id": "eth0", "host_dev_name": "tap0"}, {"iface_id": "eth1", "host_dev_name": "tap1", "vhost": true}]})") ==
          "machine-config.track_dirty_pages: not with network interface eth1 (\"vhost\": true): its backend writes "
          "guest memory behind KVM's dirty log, so a Diff snapshot would miss pages (take Full snapshots)");
    CHECK_THAT(config_error("{" + tracked + R"(, "drives": [{"drive_id": "d0", "socket": "/run/d0.sock",
        "is_root_device": false}]})"),
               Catch::StartsWith("machine-config.track_dirty_pages: not with vhost-user drive d0:"));
    CHECK_THAT(config_error("{" + tracked + R"(, "fs": [{"tag": "share", "socket": "/run/fs.sock"}]})"),
               Catch::StartsWith("machine-config.track_dirty_pages: not with virtio-fs share (vhost-user):"));
    // Without track_dirty_pages, or with a plain TAP interface, nothing is refused.
    CHECK_NOTHROW(vmm::parse_config_json(R"({"network-interfaces": [
        {"iface_id": "eth0", "host_dev_name": "tap0", "vhost": true}]})"));
    CHECK_NOTHROW(vmm::parse_config_json("{" + tracked + R"(, "network-interfaces": [
        {"iface_id": "eth0", "host_dev_name": "tap0"}]})"));
}

TEST_CASE("network-interfaces: checks across interfaces", "[config][net]") {
    CHECK(config_error(R"({"network-interfaces": [{"iface_id": "a", "host_dev_name": "tap0"},
                                                  {"iface_id": "a", "host_dev_name": "tap1"}]})") ==
          "network-interfaces[1].iface_id: 'a' is used by another interface");
    CHECK(config_error(R"({"network-interfaces": [{"iface_id": "a", "host_dev_name": "tap0"},
                                                  {"iface_id": "b", "host_dev_name": "tap0"}]})") ==
          "network-interfaces[1].host_dev_name: 'tap0' is used by another interface");
    CHECK(config_error(R"({"network-interfaces": [
        {"iface_id": "a", "host_dev_name": "tap0", "guest_mac": "06:00:00:00:00:01"},
        {"iface_id": "b", "host_dev_name": "tap1", "guest_mac": "06:00:00:00:00:01"}]})") ==
          "network-interfaces[1].guest_mac: 06:00:00:00:00:01 is used by another interface");
    std::string many = R"({"network-interfaces": [)";
    for (int i = 0; i < 9; i++) many += fmt::format(R"({}{{"iface_id": "e{}", "host_dev_name": "tap{}"}})", i ? "," : "", i, i);
    many += "]}";
    CHECK(config_error(many) == "network-interfaces: 9 network interfaces is more than the limit of 8");
}

TEST_CASE("balloon: Firecracker's object is accepted", "[config][balloon]") {
    const auto config = vmm::parse_config_json(R"({
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
        "balloon": {"amount_mib": 64, "deflate_on_oom": true, "stats_polling_interval_s": 1}})");
    REQUIRE(config.balloon);
    CHECK(config.balloon->amount_mib == 64);
    CHECK(config.balloon->deflate_on_oom);
    CHECK(config.balloon->stats_polling_interval_s == 1);
    CHECK_FALSE(config.balloon->free_page_reporting);
    CHECK(vmm::parse_config_json(vmm::to_json(config).dump()) == config);

    const auto minimal = vmm::parse_config_json(
        R"({"balloon": {"amount_mib": 0, "deflate_on_oom": false, "free_page_reporting": true, "free_page_hinting": false}})");
    REQUIRE(minimal.balloon);
    CHECK(minimal.balloon->free_page_reporting);
    CHECK(minimal.balloon->stats_polling_interval_s == 0);
}

TEST_CASE("balloon: bad fields name the field", "[config][balloon]") {
    CHECK(balloon_error("[]") == "balloon: expected an object, got array");
    CHECK(balloon_error(R"({"deflate_on_oom": true})") == "balloon.amount_mib: required");
    CHECK(balloon_error(R"({"amount_mib": 1})") == "balloon.deflate_on_oom: required (true or false)");
    CHECK(balloon_error(R"({"amount_mib": -1, "deflate_on_oom": true})") ==
          "balloon.amount_mib: expected an unsigned integer, got negative number -1");
    CHECK(balloon_error(R"({"amount_mib": 1, "deflate_on_oom": "yes"})") ==
          "balloon.deflate_on_oom: expected a boolean, got string");
    CHECK(balloon_error(R"({"amount_mib": 1, "deflate_on_oom": true, "stats_polling_interval_s": 3601})") ==
          "balloon.stats_polling_interval_s: 3601 is out of range 0..3600");
    CHECK(balloon_error(R"({"amount_mib": 1, "deflate_on_oom": true, "free_page_hinting": true})") ==
          "balloon.free_page_hinting: true is not supported by embervm (use free_page_reporting)");
    CHECK(balloon_error(R"({"amount_mib": 1, "deflate_on_oom": true, "target": 3})").starts_with(
        "balloon.target: unknown key"));
    // Checked against the guest's memory (machine-config default: 128 MiB).
    CHECK(balloon_error(R"({"amount_mib": 129, "deflate_on_oom": true})") ==
          "balloon.amount_mib: 129 MiB is more than the guest's memory (machine-config.mem_size_mib 128)");
}

TEST_CASE("cli: --net and --balloon", "[cli][net][balloon]") {
    const auto o = parse({"--net", "id=eth0,tap=tap0,mac=06:00:00:00:00:02,mtu=1400", "--net=id=eth1,tap=tap1",
                          "--balloon", "amount_mib=32,deflate_on_oom,stats_interval=2,free_page_reporting=on"});
    REQUIRE(o.network_interfaces.size() == 2);
    CHECK(o.network_interfaces[0].iface_id == "eth0");
    CHECK(o.network_interfaces[0].host_dev_name == "tap0");
    CHECK(o.network_interfaces[0].guest_mac == vmm::MacAddress{6, 0, 0, 0, 0, 2});
    CHECK(o.network_interfaces[0].mtu == 1400u);
    CHECK(o.network_interfaces[1].host_dev_name == "tap1");
    REQUIRE(o.balloon);
    CHECK(o.balloon->amount_mib == 32);
    CHECK(o.balloon->deflate_on_oom);
    CHECK(o.balloon->stats_polling_interval_s == 2);
    CHECK(o.balloon->free_page_reporting);

    CHECK(cli_error({"--net", "id=eth0"}) == "--net: 'id=eth0' has no tap=");
    CHECK(cli_error({"--net", "tap=tap0"}) == "--net: 'tap=tap0' has no id=");
    CHECK(cli_error({"--net", "id=eth0,tap=tap0,mac=zz"}) ==
          "--net: mac: 'zz' is not a MAC address (expected aa:bb:cc:dd:ee:ff)");
    CHECK(cli_error({"--net", "id=eth0,tap=tap0,mtu=1"}) == "--net: mtu: 1 is out of range 68..65535");
    CHECK(cli_error({"--net", "id=eth0,tap=tap0,vhost=maybe"}) == "--net: vhost: expected on or off, got 'maybe'");
    CHECK(cli_error({"--net", "id=eth0,tap=tap0,queues=2"}) ==
          "--net: unknown field 'queues' (expected id, tap, mac, mtu, vhost)");
    CHECK(parse({"--net", "id=eth0,tap=tap0,vhost"}).network_interfaces.at(0).vhost);
    CHECK_FALSE(parse({"--net", "id=eth0,tap=tap0"}).network_interfaces.at(0).vhost);
    CHECK(cli_error({"--net", "id=eth0,,tap=tap0"}) == "--net: empty field in 'id=eth0,,tap=tap0'");
    CHECK(cli_error({"--balloon", "deflate_on_oom"}) == "--balloon: 'deflate_on_oom' has no amount_mib=");
    CHECK(cli_error({"--balloon", "amount_mib=x"}) == "--balloon: amount_mib: expected an unsigned integer, got 'x'");
    CHECK(cli_error({"--balloon", "amount_mib=1,deflate_on_oom=maybe"}) ==
          "--balloon: deflate_on_oom: expected on or off, got 'maybe'");
    CHECK(cli_error({"--balloon", "amount_mib=1", "--balloon", "amount_mib=2"}) == "--balloon: given more than once");
}

TEST_CASE("cli: --net and --balloon merge with a config file", "[cli][net][balloon]") {
    TempFile kernel("k");
    TempFile config(fmt::format(R"({{"boot-source": {{"kernel_image_path": "{}"}},
        "machine-config": {{"vcpu_count": 1, "mem_size_mib": 256}},
        "network-interfaces": [{{"iface_id": "eth0", "host_dev_name": "tap0"}}],
        "balloon": {{"amount_mib": 32, "deflate_on_oom": false}}}})", kernel.path()));

    const auto c = vmm::resolve_config(parse({"--config", config.c_str(), "--net", "id=eth1,tap=tap1", "--balloon",
                                              "amount_mib=100"}));
    REQUIRE(c.network_interfaces.size() == 2);
    CHECK(c.network_interfaces[1].iface_id == "eth1");
    REQUIRE(c.balloon);
    CHECK(c.balloon->amount_mib == 100);

    CHECK(resolve_error(parse({"--config", config.c_str(), "--net", "id=eth0,tap=tap9"})) ==
          "--net: network-interfaces[1].iface_id: 'eth0' is used by another interface");
    CHECK(resolve_error(parse({"--config", config.c_str(), "--balloon", "amount_mib=300"})) ==
          "--balloon: amount_mib 300 is more than the guest's memory (256 MiB)");
    // --mem below the file's balloon: the file's field is named.
    CHECK(resolve_error(parse({"--config", config.c_str(), "--mem", "16", "--balloon", "amount_mib=17"})) ==
          "--balloon: amount_mib 17 is more than the guest's memory (16 MiB)");
    CHECK(resolve_error(parse({"--config", config.c_str(), "--mem", "16"})) ==
          "balloon.amount_mib: 32 MiB is more than the guest's memory (machine-config.mem_size_mib 16)");
}

}  // namespace unit_net_balloon_config_test
