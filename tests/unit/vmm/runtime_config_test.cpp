// Tests for vmm/runtime_config: the one live copy of a VM's configuration and the one "no such
// drive" lookup (find_drive, vmm/config/config.h).
#include <catch2/catch.hpp>

#include "vmm/config/config.h"
#include "vmm/runtime_config.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_runtime_config_test {

namespace vmm = embervm::vmm;

namespace {

vmm::VmConfig two_drives() {
    vmm::VmConfig c;
    c.drives.push_back(vmm::DriveConfig{.drive_id = "rootfs", .path_on_host = "/img/root.ext4", .is_root_device = true});
    c.drives.push_back(vmm::DriveConfig{.drive_id = "data", .path_on_host = "/img/data.img", .is_read_only = true});
    return c;
}

}  // namespace

TEST_CASE("find_drive finds a drive by id or names it in the error", "[runtime_config]") {
    vmm::VmConfig c = two_drives();
    CHECK(vmm::find_drive(c, "data").path_on_host == "/img/data.img");
    const vmm::VmConfig& cc = c;
    CHECK(vmm::find_drive(cc, "rootfs").is_root_device);
    CHECK_THROWS_AS(vmm::find_drive(c, "nosuch"), vmm::ConfigError);
    CHECK_THROWS_WITH(vmm::find_drive(cc, "nosuch"), "drives.nosuch: no such drive");
    CHECK_THROWS_WITH(vmm::find_drive(vmm::VmConfig{}, "data"), "drives.data: no such drive");
}

TEST_CASE("RuntimeConfig: a drive's new image shows in every later read", "[runtime_config]") {
    vmm::RuntimeConfig rc(two_drives());
    CHECK(rc.drive("data").path_on_host == "/img/data.img");
    rc.set_drive_path("data", "/img/data-2.img");
    CHECK(rc.drive("data").path_on_host == "/img/data-2.img");
    CHECK(rc.drive("data").is_read_only);  // the rest of the drive stays
    const vmm::VmConfig now = rc.snapshot();
    CHECK(now.drives[1].path_on_host == "/img/data-2.img");
    CHECK(now.drives[0].path_on_host == "/img/root.ext4");

    CHECK_THROWS_WITH(rc.drive("nosuch"), "drives.nosuch: no such drive");
    CHECK_THROWS_WITH(rc.set_drive_path("nosuch", "/img/x"), "drives.nosuch: no such drive");
    CHECK(rc.snapshot() == now);  // a failed change changes nothing
}

TEST_CASE("RuntimeConfig: the balloon's run-time target and statistics interval", "[runtime_config]") {
    vmm::RuntimeConfig without(two_drives());
    without.set_balloon_target_mib(8);  // no balloon section: nothing to record
    CHECK_FALSE(without.snapshot().balloon);

    vmm::VmConfig c = two_drives();
    c.balloon = vmm::BalloonConfig{.amount_mib = 0, .stats_polling_interval_s = 1};
    vmm::RuntimeConfig rc(c);
    rc.set_balloon_target_mib(16);
    rc.set_balloon_stats_interval(5);
    CHECK(rc.snapshot().balloon->amount_mib == 16);
    CHECK(rc.snapshot().balloon->stats_polling_interval_s == 5);
}

}  // namespace unit_runtime_config_test
