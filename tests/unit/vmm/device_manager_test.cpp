// Tests for vmm/device_manager (DeviceManager) without /dev/kvm: a recorder stands in for the VM's
// irqfd/ioeventfd bindings (vmm/kvm/event_routing.h), with real guest memory, MMIO bus, event
// loop, virtio-blk devices on temporary images, balloons, and a virtio-net device on a TAP in a
// private network namespace (that case needs root, like tap_test).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "boot/layout.h"
#include "devices/bus.h"
#include "memory/guest_memory.h"
#include "tests/unit/temp_dir.h"
#include "tests/unit/virtio/ring_driver.h"
#include "tests/unit/virtio/temp_image.h"
#include "virtio/balloon/balloon_device.h"
#include "virtio/block/request.h"
#include "virtio/mmio_transport.h"
#include "virtio/pci_transport.h"
#include "virtio/virtio_defs.h"
#include "vmm/config/config.h"
#include "vmm/device_manager.h"
#include "vmm/kvm/event_routing.h"
#include "vmm/sys/error.h"
#include "vmm/sys/fd.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_device_manager_test {

namespace layout = embervm::boot::layout;
namespace mmio = embervm::virtio::mmio;
namespace virtio = embervm::virtio;
namespace vmm = embervm::vmm;
using embervm::memory::GuestAddress;
using embervm::test::TempImage;
using vmm::DeviceManager;
using vmm::DriveConfig;

namespace {

// What the device manager asked the VM to bind, instead of KVM_IRQFD / KVM_IOEVENTFD.
class RecordingRouting : public vmm::VmEventRouting {
public:
    struct Irqfd {
        int eventfd;
        uint32_t gsi;
    };
    struct Ioeventfd {
        int eventfd;
        uint64_t addr;
        uint32_t len;
        bool pio;
        std::optional<uint64_t> datamatch;
    };
    void register_irqfd(int eventfd, uint32_t gsi) override { irqfds.push_back({eventfd, gsi}); }
    void register_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                            std::optional<uint64_t> datamatch) override {
        ioeventfds.push_back({eventfd, addr, len, pio, datamatch});
    }
    void unregister_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                              std::optional<uint64_t> datamatch) override {
        const auto it = std::find_if(ioeventfds.begin(), ioeventfds.end(), [&](const Ioeventfd& e) {
            return e.eventfd == eventfd && e.addr == addr && e.len == len && e.pio == pio && e.datamatch == datamatch;
        });
        REQUIRE(it != ioeventfds.end());
        ioeventfds.erase(it);
    }
    void set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) override {
        msi_routes[gsi] = {address, data};
    }
    std::string describe_gsi(uint32_t gsi) const override {
        described.push_back(gsi);
        return fmt::format("pin {}", gsi);
    }
    mutable std::vector<uint32_t> described;  // GSIs the watchdog asked about
    // The eventfd bound to queue `q` of the device in window `base`.
    int queue_event(uint64_t base, uint16_t q) const {
        for (const Ioeventfd& e : ioeventfds) {
            if (e.addr == base + mmio::kQueueNotify && e.datamatch == q) return e.eventfd;
        }
        FAIL("no ioeventfd for queue " << q << " at " << base);
        return -1;
    }

    std::vector<Irqfd> irqfds;
    std::vector<Ioeventfd> ioeventfds;
    std::map<uint32_t, std::pair<uint64_t, uint32_t>> msi_routes;
};

// The window of the `index`th device attached.
constexpr uint64_t window(size_t index) { return layout::kVirtioMmioStart + index * layout::kVirtioMmioSize; }

std::string entry(size_t index) {
    return fmt::format("virtio_mmio.device=4K@{:#x}:{}", window(index), vmm::kFirstVirtioGsi + index);
}

// Reads and resets an eventfd's counter (0: not signalled).
uint64_t consume(int eventfd) {
    uint64_t value = 0;
    return ::read(eventfd, &value, sizeof(value)) == sizeof(value) ? value : 0;
}

DriveConfig drive(const std::string& id, const std::string& path, bool root = false) {
    DriveConfig d;
    d.drive_id = id;
    d.path_on_host = path;
    d.is_root_device = root;
    return d;
}

std::shared_ptr<virtio::balloon::BalloonDevice> balloon(bool all_queues = false) {
    virtio::balloon::BalloonOptions opts;
    if (all_queues) {
        opts.stats_polling_interval_s = 1;
        opts.free_page_reporting = true;
    }
    return std::make_shared<virtio::balloon::BalloonDevice>(opts);
}

// A metrics section of a device nothing has happened to: the watchdog's fields and the
// transport's needs_reset count, all zero.
void check_quiet_watchdog(const nlohmann::json& s) {
    CHECK(s["in_flight"] == 0);
    CHECK(s["oldest_in_flight_ms"].is_null());
    CHECK(s["slow_request_warnings"] == 0);
    CHECK(s["interrupts_reraised"] == 0);
    CHECK(s["driver_stalls"] == 0);
    CHECK(s["interrupts_masked"] == 0);
    CHECK(s["driver_stalled"] == false);
    CHECK(s["needs_reset"] == 0);
}

// Creates the persistent TAP device `name` in the calling thread's network namespace.
void create_tap(const char* name) {
    const embervm::FileDescriptor tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (!tun || ::ioctl(tun.get(), TUNSETIFF, &ifr) != 0 || ::ioctl(tun.get(), TUNSETPERSIST, 1) != 0) {
        throw embervm::sys_error(std::string("creating TAP ") + name);
    }
}

template <typename E, typename Fn>
std::string error_of(Fn fn) {
    try {
        fn();
    } catch (const E& e) {
        return e.what();
    }
    FAIL("no exception");
    return {};
}

// Guest memory for one virtqueue of 16 and one block request.
constexpr uint64_t kRings = 0x10000;  // descriptors; available ring +0x1000, used ring +0x2000
constexpr uint16_t kRingSize = 16;
constexpr uint64_t kHeader = 0x20000, kData = 0x21000, kStatus = 0x22000;

struct Fixture {
    embervm::memory::GuestMemory mem{{{GuestAddress(0), 0x100000}}};
    boost::asio::io_context io;
    vmm::Bus bus{"mmio"};
    RecordingRouting vm;
    DeviceManager dm{vm, bus, io, mem};

    uint32_t r32(uint64_t addr) const {
        std::array<uint8_t, 4> b{};
        REQUIRE(bus.read(addr, b));
        return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
    }
    void w32(uint64_t addr, uint32_t v) const {
        const std::array<uint8_t, 4> b{static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8),
                                       static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 24)};
        REQUIRE(bus.write(addr, b));
    }
    // virtio-blk's config space starts with the capacity in sectors.
    uint64_t capacity(uint64_t base) const {
        return r32(base + mmio::kConfig) | uint64_t{r32(base + mmio::kConfig + 4)} << 32;
    }
    nlohmann::json metrics() const {
        nlohmann::json out = nlohmann::json::object();
        dm.add_metrics(out);
        return out;
    }

    // Runs the loop until `done`. Each wait is for an event that must come; 10 s without one
    // is a hang, not a timing window.
    void run_until(const std::function<bool()>& done) {
        while (!done()) {
            if (io.stopped()) io.restart();
            REQUIRE(io.run_one_for(std::chrono::seconds(10)) == 1);
        }
    }

    // The driver's bring-up of the device at `base` through MMIO writes, VERSION_1 only, with
    // its queue 0 in the rings RingDriver uses at kRings.
    void bring_up(uint64_t base) const {
        w32(base + mmio::kStatus, 0);
        w32(base + mmio::kStatus, virtio::status::kAcknowledge);
        w32(base + mmio::kStatus, virtio::status::kAcknowledge | virtio::status::kDriver);
        w32(base + mmio::kDriverFeaturesSel, 1);
        w32(base + mmio::kDriverFeatures, 1);  // VIRTIO_F_VERSION_1 (bit 32)
        w32(base + mmio::kStatus, virtio::status::kAcknowledge | virtio::status::kDriver | virtio::status::kFeaturesOk);
        REQUIRE((r32(base + mmio::kStatus) & virtio::status::kFeaturesOk) != 0);
        w32(base + mmio::kQueueSel, 0);
        w32(base + mmio::kQueueNum, kRingSize);
        w32(base + mmio::kQueueDescLow, static_cast<uint32_t>(kRings));
        w32(base + mmio::kQueueDriverLow, static_cast<uint32_t>(kRings + 0x1000));
        w32(base + mmio::kQueueDeviceLow, static_cast<uint32_t>(kRings + 0x2000));
        w32(base + mmio::kQueueReady, 1);
        w32(base + mmio::kStatus, r32(base + mmio::kStatus) | virtio::status::kDriverOk);
        REQUIRE(r32(base + mmio::kStatus) ==
                (virtio::status::kAcknowledge | virtio::status::kDriver | virtio::status::kFeaturesOk |
                 virtio::status::kDriverOk));
    }
};

// The root drive on a 16-sector image, brought up, has served one read of sector 1 (head 0, into
// kData) kicked through its queue's ioeventfd.
struct ServedRead : Fixture {
    TempImage image{16 * 512};
    virtio::Queue scratch{kRingSize};  // RingDriver sets up a queue; the device's is set up over MMIO
    virtio::testing::RingDriver ring{mem, scratch, kRings, kRingSize};

    ServedRead() {
        dm.attach_drives({drive("root", image.path(), true)});
        bring_up(window(0));
        REQUIRE(vm.irqfds.size() == 1);
        mem.write_obj(GuestAddress(kHeader), std::array<uint32_t, 4>{virtio::block::req::kIn, 0, 1, 0});
        mem.write_obj<uint8_t>(GuestAddress(kStatus), 0xee);
        ring.add({{kHeader, 16, false}, {kData, 512, true}, {kStatus, 1, true}});
        // Let the activation's subscriptions be made: without a kick, nothing is served.
        io.poll();
        REQUIRE(ring.used_idx() == 0);
        const uint64_t one = 1;
        REQUIRE(::write(vm.queue_event(window(0), 0), &one, sizeof(one)) == sizeof(one));
        run_until([&] { return ring.used_idx() == 1; });
    }
};

}  // namespace

TEST_CASE("device manager: each device gets its own 4 KiB window on the MMIO bus, the next GSI and one irqfd",
          "[device_manager]") {
    Fixture f;
    TempImage image(8 * 512);
    f.dm.attach_drives({drive("data", image.path())});
    f.dm.attach_balloon({});
    const auto plain = balloon();
    virtio::TransportCore& t = f.dm.attach(plain);
    CHECK(&t.device() == plain.get());

    namespace id = virtio::device_id;
    const std::vector<uint32_t> ids{id::kBlock, id::kBalloon, id::kBalloon};
    for (size_t i = 0; i < ids.size(); i++) {
        INFO("device " << i);
        CHECK(f.r32(window(i) + mmio::kMagicValue) == mmio::kMagic);
        CHECK(f.r32(window(i) + mmio::kDeviceId) == ids[i]);
        // The whole 4 KiB is the device's: the last word of its config space is on the bus.
        std::array<uint8_t, 4> b{};
        CHECK(f.bus.read(window(i) + layout::kVirtioMmioSize - 4, b));
    }
    CHECK(window(0) == 0xd0001000);
    std::array<uint8_t, 4> b{};
    CHECK_FALSE(f.bus.read(window(0) - 4, b));
    CHECK_FALSE(f.bus.read(window(3), b));

    REQUIRE(f.vm.irqfds.size() == 3);
    std::set<int> fds;
    for (size_t i = 0; i < 3; i++) {
        CHECK(f.vm.irqfds[i].gsi == vmm::kFirstVirtioGsi + i);
        fds.insert(f.vm.irqfds[i].eventfd);
    }
    CHECK(fds.size() == 3);
    CHECK(*fds.begin() >= 0);
    // No root drive: the entries only.
    CHECK(f.dm.kernel_cmdline_args() ==
          "virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=4K@0xd0002000:6 virtio_mmio.device=4K@0xd0003000:7");
}

TEST_CASE("device manager: one ioeventfd per queue at base + QueueNotify with datamatch = queue index",
          "[device_manager]") {
    Fixture f;
    TempImage image(8 * 512);
    f.dm.attach(balloon());                               // 2 queues
    f.dm.attach(balloon(true));                           // 4 queues: + statistics, free page reporting
    f.dm.attach_drives({drive("data", image.path())});  // 1 queue

    const std::vector<size_t> queues{2, 4, 1};
    REQUIRE(f.vm.ioeventfds.size() == 7);
    std::set<int> fds;
    for (const auto& irq : f.vm.irqfds) fds.insert(irq.eventfd);
    size_t n = 0;
    for (size_t d = 0; d < queues.size(); d++) {
        for (size_t q = 0; q < queues[d]; q++, n++) {
            INFO("device " << d << ", queue " << q);
            const RecordingRouting::Ioeventfd& e = f.vm.ioeventfds[n];
            CHECK(e.addr == window(d) + 0x50);
            CHECK(e.len == 4);
            CHECK_FALSE(e.pio);
            CHECK(e.datamatch == std::optional<uint64_t>(q));
            fds.insert(e.eventfd);
        }
    }
    // Every binding has an eventfd of its own.
    CHECK(fds.size() == 7 + 3);
}

TEST_CASE("device manager: when the GSIs run out the next device is refused with an Error, nothing half-attached",
          "[device_manager]") {
    Fixture f;
    const size_t most = vmm::kLastVirtioGsi - vmm::kFirstVirtioGsi + 1;
    REQUIRE(most == 19);
    for (size_t i = 0; i < most; i++) f.dm.attach(balloon());
    REQUIRE(f.vm.irqfds.back().gsi == 23);

    const std::string msg = error_of<embervm::Error>([&] { f.dm.attach(balloon()); });
    CHECK(msg == "virtio-balloon: no free virtio-mmio slot (at most 19 devices)");
    CHECK(f.vm.irqfds.size() == most);
    CHECK(f.vm.ioeventfds.size() == 2 * most);
    std::array<uint8_t, 4> b{};
    CHECK_FALSE(f.bus.read(window(most), b));
    std::string expected = entry(0);
    for (size_t i = 1; i < most; i++) expected += " " + entry(i);
    CHECK(f.dm.kernel_cmdline_args() == expected);
    // A drive is refused the same way.
    TempImage image(8 * 512);
    CHECK_THROWS_AS(f.dm.attach_drives({drive("data", image.path())}), embervm::Error);
    CHECK(f.vm.irqfds.size() == most);
}

TEST_CASE("device manager: the root drive is attached first (/dev/vda) and root= follows the entries",
          "[device_manager]") {
    Fixture f;
    TempImage data(8 * 512), root(16 * 512);
    DriveConfig r = drive("root", root.path(), true);
    std::string root_args = "root=/dev/vda rw";
    SECTION("by device name, read-write") {}
    SECTION("by PARTUUID, read-only") {
        r.partuuid = "0eaa91a0-01";
        r.is_read_only = true;
        root_args = "root=PARTUUID=0eaa91a0-01 ro";
    }
    f.dm.attach_drives({drive("data", data.path()), r});
    CHECK(f.capacity(window(0)) == 16);  // the root image
    CHECK(f.capacity(window(1)) == 8);
    CHECK(f.dm.kernel_cmdline_args() == entry(0) + " " + entry(1) + " " + root_args);
    CHECK(entry(1) == "virtio_mmio.device=4K@0xd0002000:6");
    const nlohmann::json m = f.metrics();
    CHECK(m.contains("block_root"));
    CHECK(m.contains("block_data"));
}

TEST_CASE("device manager: a drive or TAP that cannot be opened is a ConfigError naming it", "[device_manager]") {
    Fixture f;
    embervm::test::TempDir dir;
    const std::string missing = dir.file("missing.img");
    const std::string msg = error_of<vmm::ConfigError>([&] { f.dm.attach_drives({drive("data", missing)}); });
    CHECK(msg.rfind("drive data: ", 0) == 0);
    CHECK(msg.find(missing) != std::string::npos);

    vmm::NetworkInterfaceConfig iface;
    iface.iface_id = "eth0";
    iface.host_dev_name = "embervm-nope0";
    const std::string net = error_of<vmm::ConfigError>([&] { f.dm.attach_network_interfaces({iface}); });
    CHECK(net.rfind("network interface eth0: ", 0) == 0);
    CHECK(net.find("embervm-nope0") != std::string::npos);

    CHECK(f.vm.irqfds.empty());
    CHECK(f.vm.ioeventfds.empty());
    CHECK(f.dm.kernel_cmdline_args().empty());
}

TEST_CASE("device manager: the vsock device listens on uds_path, has a vsock metrics section; a live socket there is "
          "a ConfigError naming vsock.uds_path", "[device_manager][vsock]") {
    Fixture f;
    embervm::test::TempDir dir;
    vmm::VsockConfig config;
    config.guest_cid = 3;
    config.uds_path = dir.file("v.sock");
    {
        auto vsock = f.dm.attach_vsock(config);
        CHECK(f.vm.irqfds.size() == 1);
        CHECK(f.vm.ioeventfds.size() == 3);  // rx, tx, event
        CHECK(f.metrics()["vsock"]["connections_open"] == 0);
        // The socket is live while the device is: a second device cannot take the path.
        Fixture g;
        const std::string msg = error_of<vmm::ConfigError>([&] { g.dm.attach_vsock(config); });
        CHECK(msg.rfind("vsock.uds_path: ", 0) == 0);
        CHECK(msg.find("another process") != std::string::npos);
        CHECK(g.vm.irqfds.empty());
    }
}

TEST_CASE("device manager: add_metrics adds a section per drive and the balloon, with the watchdog's fields",
          "[device_manager]") {
    Fixture f;
    TempImage data(8 * 512), root(16 * 512);
    f.dm.attach_drives({drive("data", data.path()), drive("root", root.path(), true)});
    f.dm.attach_balloon({});
    f.dm.attach(balloon());  // attached directly: no section of its own

    nlohmann::json out = {{"vmm", {{"uptime_ms", 1}}}};
    f.dm.add_metrics(out);
    std::set<std::string> keys;
    for (const auto& [key, value] : out.items()) keys.insert(key);
    CHECK(keys == std::set<std::string>{"vmm", "block_root", "block_data", "balloon"});
    CHECK(out["vmm"]["uptime_ms"] == 1);
    for (const char* key : {"block_root", "block_data", "balloon"}) {
        INFO(key);
        check_quiet_watchdog(out[key]);
    }
    // The device's own counters are there too.
    CHECK(out["block_root"]["read_requests"] == 0);
}

TEST_CASE("device manager: update_drive swaps the image; a failure names drives.<id>.path_on_host and keeps the old one",
          "[device_manager]") {
    Fixture f;
    TempImage data(8 * 512), root(16 * 512), bigger(32 * 512);
    const DriveConfig r = drive("root", root.path(), true);
    f.dm.attach_drives({drive("data", data.path()), r});
    REQUIRE(f.capacity(window(0)) == 16);

    CHECK(error_of<embervm::Error>([&] { f.dm.update_drive(drive("nope", bigger.path()), bigger.path()); }) ==
          "drives.nope: no virtio-blk device serves this drive");

    embervm::test::TempDir dir;
    const std::string missing = dir.file("missing.img");
    std::string msg = error_of<vmm::ConfigError>([&] { f.dm.update_drive(r, missing); });
    CHECK(msg.rfind("drives.root.path_on_host: ", 0) == 0);
    CHECK(msg.find(missing) != std::string::npos);
    CHECK(f.capacity(window(0)) == 16);

    // The other drive's image is locked by it.
    msg = error_of<vmm::ConfigError>([&] { f.dm.update_drive(r, data.path()); });
    CHECK(msg.rfind("drives.root.path_on_host: ", 0) == 0);
    CHECK(f.capacity(window(0)) == 16);
    CHECK(f.capacity(window(1)) == 8);

    f.dm.update_drive(r, bigger.path());
    CHECK(f.capacity(window(0)) == 32);
    CHECK(f.capacity(window(1)) == 8);
    // The old image was let go: it can be taken back.
    f.dm.update_drive(drive("root", bigger.path(), true), root.path());
    CHECK(f.capacity(window(0)) == 16);
    // The image in use again, grown (a resize): reopened, its lock handed over.
    std::filesystem::resize_file(root.path(), 24 * 512);
    f.dm.update_drive(drive("root", root.path(), true), root.path());
    CHECK(f.capacity(window(0)) == 24);
}

TEST_CASE("device manager: a kick written to the queue's ioeventfd reaches the virtio-blk device, and its irqfd fires",
          "[device_manager]") {
    ServedRead f;

    CHECK(f.ring.used(0) == std::pair<uint32_t, uint32_t>{0, 513});
    CHECK(f.mem.read_obj<uint8_t>(GuestAddress(kStatus)) == virtio::block::blk_status::kOk);
    std::vector<uint8_t> got(512);
    f.mem.read(GuestAddress(kData), got);
    CHECK(got == f.image.original(512, 512));
    CHECK(f.r32(window(0) + mmio::kInterruptStatus) == virtio::interrupt::kUsedBuffer);
    CHECK(consume(f.vm.irqfds[0].eventfd) == 1);
    CHECK(f.metrics()["block_root"]["read_requests"] == 1);
}

TEST_CASE("device manager: the watchdog raises a used-buffer interrupt the driver leaves unacknowledged again",
          "[device_manager]") {
    ServedRead f;
    REQUIRE(consume(f.vm.irqfds[0].eventfd) == 1);

    // The driver never acknowledges (InterruptACK): after reraise_after, the interrupt comes again.
    int asked = 0;
    f.dm.start_watchdog([&] { return ++asked > 0; }, std::chrono::milliseconds(10));
    f.run_until([&] { return f.metrics()["block_root"]["interrupts_reraised"] == 1; });
    f.dm.stop_watchdog();
    CHECK(asked > 0);
    CHECK(consume(f.vm.irqfds[0].eventfd) == 1);
    // The re-raise was logged with the state of the device's IOAPIC pin (and only that pin).
    REQUIRE(!f.vm.described.empty());
    CHECK(std::count(f.vm.described.begin(), f.vm.described.end(), f.vm.irqfds[0].gsi) ==
          static_cast<long>(f.vm.described.size()));
    CHECK(f.r32(window(0) + mmio::kInterruptStatus) == virtio::interrupt::kUsedBuffer);
    CHECK(f.metrics()["block_root"]["driver_stalled"] == false);
}

TEST_CASE("device manager: start_watchdog checks on the loop, asking whether the guest runs; stop_watchdog ends it",
          "[device_manager]") {
    Fixture f;
    f.dm.attach_balloon({});  // not activated: no subscriptions of its own on the loop
    int asked = 0;
    f.dm.start_watchdog([&] { return ++asked > 0; }, std::chrono::milliseconds(1));
    f.run_until([&] { return asked >= 2; });
    f.dm.stop_watchdog();
    const int before = asked;
    // Nothing is left to run: the loop stops at once instead of waiting for the timer.
    f.io.restart();
    while (f.io.poll() > 0) {
    }
    CHECK(f.io.run_one_for(std::chrono::seconds(10)) == 0);
    CHECK(asked == before);
}

TEST_CASE("device manager: a virtio-net device per interface on its TAP, with a net_<id> metrics section",
          "[device_manager][tap]") {
    // In a thread with a network namespace of its own (needs root, like tap_test), so the TAP is
    // private and goes away with it. No assertions in there: it hands back what it saw.
    std::string error;
    nlohmann::json metrics;
    std::string cmdline;
    std::array<uint8_t, 6> mac{};
    std::vector<RecordingRouting::Ioeventfd> ioeventfds;
    std::thread([&] {
        try {
            if (::unshare(CLONE_NEWNET) != 0) throw embervm::sys_error("unshare(CLONE_NEWNET)");
            create_tap("ut-dm-tap0");
            Fixture f;
            vmm::NetworkInterfaceConfig eth0;
            eth0.iface_id = "eth0";
            eth0.host_dev_name = "ut-dm-tap0";
            eth0.guest_mac = vmm::MacAddress{0x06, 0, 0, 0, 0, 0x42};
            f.dm.attach_network_interfaces({eth0});
            f.dm.attach_balloon({});
            metrics = f.metrics();
            cmdline = f.dm.kernel_cmdline_args();
            ioeventfds = f.vm.ioeventfds;
            if (!f.bus.read(window(0) + mmio::kConfig, mac)) error = "no device in the first window";
        } catch (const std::exception& e) {
            error = e.what();
        }
    }).join();
    REQUIRE(error.empty());
    CHECK(metrics.size() == 2);
    REQUIRE(metrics.contains("net_eth0"));
    check_quiet_watchdog(metrics["net_eth0"]);
    CHECK(metrics.contains("balloon"));
    CHECK(cmdline == entry(0) + " " + entry(1));
    CHECK(mac == std::array<uint8_t, 6>{0x06, 0, 0, 0, 0, 0x42});
    // Receive and transmit queues, then the balloon's two.
    REQUIRE(ioeventfds.size() == 4);
    CHECK(ioeventfds[1].addr == window(0) + mmio::kQueueNotify);
    CHECK(ioeventfds[1].datamatch == std::optional<uint64_t>(1));
    CHECK(ioeventfds[2].addr == window(1) + mmio::kQueueNotify);
}

namespace {

// A configuration register of bus 0's `slot` through ports 0xCF8/0xCFC.
uint32_t pci_cfg_read(vmm::Bus& pio, uint8_t slot, uint16_t reg) {
    const uint32_t a = 0x80000000u | (uint32_t{slot} << 11) | reg;
    std::array<uint8_t, 4> b{};
    std::memcpy(b.data(), &a, 4);
    REQUIRE(pio.write(0xcf8, b));
    REQUIRE(pio.read(0xcfc, b));
    uint32_t v = 0;
    std::memcpy(&v, b.data(), 4);
    return v;
}
void pci_cfg_write(vmm::Bus& pio, uint8_t slot, uint16_t reg, uint32_t v) {
    const uint32_t a = 0x80000000u | (uint32_t{slot} << 11) | reg;
    std::array<uint8_t, 4> b{};
    std::memcpy(b.data(), &a, 4);
    REQUIRE(pio.write(0xcf8, b));
    std::memcpy(b.data(), &v, 4);
    REQUIRE(pio.write(0xcfc, b));
}
// The MSI-X capability's offset in `slot`'s configuration space (0: none).
uint16_t pci_msix_cap(vmm::Bus& pio, uint8_t slot) {
    uint16_t cap = static_cast<uint16_t>(pci_cfg_read(pio, slot, 0x34) & 0xff);
    while (cap != 0 && (pci_cfg_read(pio, slot, cap) & 0xff) != 0x11) {
        cap = static_cast<uint16_t>((pci_cfg_read(pio, slot, cap) >> 8) & 0xff);
    }
    return cap;
}

}  // namespace

TEST_CASE("device manager: with PCI enabled, devices are PCI functions with MSI-X irqfds and notify ioeventfds "
          "that follow the BAR",
          "[device_manager][pci]") {
    Fixture f;
    vmm::Bus pio{"pio"};
    f.dm.enable_pci(pio);
    CHECK(f.dm.pci_enabled());
    f.dm.attach(balloon());  // 2 queues: 3 vectors
    f.dm.attach(balloon());
    // Configuration space through 0xCF8/0xCFC: 00:01.0 and 00:02.0 are virtio-balloon (0x1045).
    auto cfg = [&](uint8_t slot, uint16_t reg) { return pci_cfg_read(pio, slot, reg); };
    auto cfg_write = [&](uint8_t slot, uint16_t reg, uint32_t v) { pci_cfg_write(pio, slot, reg, v); };
    CHECK(cfg(0, 0) == 0x0d578086);
    CHECK(cfg(1, 0) == 0x10451af4);
    CHECK(cfg(2, 0) == 0x10451af4);
    CHECK(cfg(3, 0) == 0xffffffff);
    // One irqfd per MSI-X vector on consecutive GSIs from 24; no virtio-mmio entries or windows.
    REQUIRE(f.vm.irqfds.size() == 6);
    for (size_t i = 0; i < 6; i++) CHECK(f.vm.irqfds[i].gsi == 24 + i);
    CHECK(f.dm.kernel_cmdline_args().empty());
    CHECK(f.dm.windows().empty());
    // No notify ioeventfds until the driver enables memory space.
    CHECK(f.vm.ioeventfds.empty());
    const uint64_t bar = cfg(1, 0x10) & ~0xfu;
    CHECK(bar == layout::kPciMmioStart);
    cfg_write(1, 0x04, 0x6);  // memory space, bus master
    REQUIRE(f.vm.ioeventfds.size() == 2);
    CHECK(f.vm.ioeventfds[0].addr == bar + virtio::pci_layout::kNotify);
    CHECK(f.vm.ioeventfds[1].addr == bar + virtio::pci_layout::kNotify + 4);
    CHECK(f.vm.ioeventfds[0].len == 2);
    CHECK_FALSE(f.vm.ioeventfds[0].datamatch);
    // The common config answers at the BAR: num_queues.
    std::array<uint8_t, 2> nq{};
    REQUIRE(f.bus.read(bar + virtio::common_cfg::kNumQueues, nq));
    CHECK(nq[0] == 2);
    // The driver moves the BAR: the ioeventfds move along.
    const uint64_t moved = layout::kPciMmioStart + 0x100000;
    cfg_write(1, 0x10, static_cast<uint32_t>(moved));
    REQUIRE(f.vm.ioeventfds.size() == 2);
    CHECK(f.vm.ioeventfds[0].addr == moved + virtio::pci_layout::kNotify);
    // A BAR over another device's: neither is decoded, so neither has ioeventfds.
    cfg_write(2, 0x04, 0x6);
    CHECK(f.vm.ioeventfds.size() == 4);
    cfg_write(2, 0x10, static_cast<uint32_t>(moved));
    CHECK(f.vm.ioeventfds.empty());
    // Programming and unmasking MSI-X vector 1 of 00:01.0 routes GSI 25.
    cfg_write(2, 0x10, static_cast<uint32_t>(layout::kPciMmioStart + 0x200000));
    const uint64_t entry = moved + virtio::pci_layout::kMsixTable + 16;
    f.w32(entry, 0xfee00000);
    f.w32(entry + 4, 0);
    f.w32(entry + 8, 0x4031);
    f.w32(entry + 12, 0);
    CHECK(f.vm.msi_routes.empty());  // MSI-X not enabled yet
    const uint16_t cap = pci_msix_cap(pio, 1);
    REQUIRE(cap != 0);
    cfg_write(1, cap, (cfg(1, cap) & 0xffff) | (0x8000u << 16));
    REQUIRE(f.vm.msi_routes.count(25) == 1);
    CHECK(f.vm.msi_routes[25] == std::make_pair(uint64_t{0xfee00000}, uint32_t{0x4031}));
}

TEST_CASE("device manager: with PCI, a restore decodes the BARs where they were and routes the MSI-X vectors again",
          "[device_manager][pci][snapshot]") {
    Fixture f;
    vmm::Bus pio{"pio"};
    f.dm.enable_pci(pio);
    f.dm.attach(balloon());
    // The driver moves 00:01.0's BAR, enables memory space, programs and unmasks vector 1 and
    // enables MSI-X; the last thing it did was select 00:01.0's command register.
    const uint64_t moved = layout::kPciMmioStart + 0x100000;
    pci_cfg_write(pio, 1, 0x10, static_cast<uint32_t>(moved));
    const uint64_t entry = moved + virtio::pci_layout::kMsixTable + 16;
    pci_cfg_write(pio, 1, 0x04, 0x6);
    f.w32(entry, 0xfee00000);
    f.w32(entry + 8, 0x4031);
    f.w32(entry + 12, 0);
    const uint16_t cap = pci_msix_cap(pio, 1);
    REQUIRE(cap != 0);
    pci_cfg_write(pio, 1, cap, (pci_cfg_read(pio, 1, cap) & 0xffff) | (0x8000u << 16));
    pci_cfg_read(pio, 1, 0x04);
    const std::vector<vmm::DeviceState> states = f.dm.pause_and_save_devices();
    const auto root = f.dm.save_pci_root();
    REQUIRE(root);

    Fixture g;
    vmm::Bus gpio{"pio"};
    g.dm.enable_pci(gpio);
    g.dm.attach(balloon());
    SECTION("restored") {
        g.dm.restore_devices(states, std::span<const uint8_t>(*root));
        // The notify ioeventfds at the BAR's saved address; the vector's route set again.
        REQUIRE(g.vm.ioeventfds.size() == 2);
        CHECK(g.vm.ioeventfds[0].addr == moved + virtio::pci_layout::kNotify);
        CHECK(g.vm.ioeventfds[1].addr == moved + virtio::pci_layout::kNotify + 4);
        CHECK(g.vm.msi_routes == f.vm.msi_routes);
        REQUIRE(g.vm.msi_routes.count(25) == 1);
        // The address latch: a data read goes on where the driver left it (the command register).
        std::array<uint8_t, 4> b{};
        REQUIRE(gpio.read(0xcfc, b));
        CHECK((b[0] & 0x6) == 0x6);
        // The common config answers at the moved BAR.
        std::array<uint8_t, 2> nq{};
        REQUIRE(g.bus.read(moved + virtio::common_cfg::kNumQueues, nq));
        CHECK(nq[0] == 2);
        CHECK(pci_cfg_read(gpio, 1, 0x10) == (static_cast<uint32_t>(moved) | 0x4));
    }
    SECTION("the PCI root's state missing, or given to a VM without PCI, is refused") {
        CHECK(error_of<embervm::StateError>([&] { g.dm.restore_devices(states); }) ==
              "snapshot: no saved state for the PCI root (the VM has enable_pci)");
        Fixture h;
        h.dm.attach(balloon());
        CHECK(error_of<embervm::StateError>([&] { h.dm.restore_devices(states, std::span<const uint8_t>(*root)); }) ==
              "snapshot: saved state of a PCI root, which this VM does not have");
    }
    SECTION("a corrupt root state is refused before any device is restored") {
        auto bad = *root;
        bad[4] = 0x01;  // a reserved bit of the address latch
        const std::string what =
            error_of<embervm::StateError>([&] { g.dm.restore_devices(states, std::span<const uint8_t>(bad)); });
        CHECK(what.find("pci-root: saved state field 'config address'") != std::string::npos);
        CHECK(g.vm.msi_routes.empty());
        CHECK(g.vm.ioeventfds.empty());
    }
    f.dm.resume_devices();
}

TEST_CASE("device manager: PCI must be enabled before devices are attached", "[device_manager][pci]") {
    Fixture f;
    vmm::Bus pio{"pio"};
    f.dm.attach(balloon());
    CHECK_THROWS_AS(f.dm.enable_pci(pio), embervm::Error);
}

TEST_CASE("device manager: pause_and_save_devices stops the devices, restore_devices brings them back in another VM",
          "[device_manager][snapshot]") {
    ServedRead f;
    const std::vector<vmm::DeviceState> states = f.dm.pause_and_save_devices();
    REQUIRE(states.size() == 1);
    CHECK(states[0].id == "virtio-blk root");

    // Paused: a request kicked through the ioeventfd waits.
    f.mem.write_obj<uint8_t>(GuestAddress(kStatus), 0xee);
    f.ring.add({{kHeader, 16, false}, {kData, 512, true}, {kStatus, 1, true}});
    const uint64_t one = 1;
    REQUIRE(::write(f.vm.queue_event(window(0), 0), &one, sizeof(one)) == sizeof(one));
    f.io.restart();
    f.io.poll();
    CHECK(f.ring.used_idx() == 1);

    SECTION("resume_devices: the kick taken while paused is served") {
        f.dm.resume_devices();
        f.run_until([&] { return f.ring.used_idx() == 2; });
    }
    SECTION("restore into a new device manager on a copy of guest memory: served there, kicks by ioeventfd") {
        Fixture g;
        TempImage image{16 * 512};
        g.dm.attach_drives({drive("root", image.path(), true)});
        std::vector<uint8_t> bytes(0x100000);
        f.mem.read(GuestAddress(0), bytes);
        g.mem.write(GuestAddress(0), bytes);
        g.dm.restore_devices(states);
        CHECK(g.r32(window(0) + mmio::kStatus) == f.r32(window(0) + mmio::kStatus));
        virtio::Queue scratch{kRingSize};
        virtio::testing::RingDriver ring{g.mem, scratch, kRings, kRingSize};
        g.run_until([&] { return ring.used_idx() == 2; });  // the request made available before
        CHECK(g.mem.read_obj<uint8_t>(GuestAddress(kStatus)) == virtio::block::blk_status::kOk);
        CHECK(consume(g.vm.irqfds[0].eventfd) >= 1);
        // A third request, kicked through the new VM's ioeventfd.
        g.mem.write_obj<uint8_t>(GuestAddress(kStatus), 0xee);
        ring.add({{kHeader, 16, false}, {kData, 512, true}, {kStatus, 1, true}});  // slot 0, avail 1: rewritten
        g.mem.write_obj<uint16_t>(GuestAddress(kRings + 0x1000 + 4 + 2 * 2), 0);
        g.mem.write_obj<uint16_t>(GuestAddress(kRings + 0x1000 + 2), 3);
        REQUIRE(::write(g.vm.queue_event(window(0), 0), &one, sizeof(one)) == sizeof(one));
        g.run_until([&] { return ring.used_idx() == 3; });
    }
    SECTION("a state missing, or one for a device the VM does not have, is refused by name") {
        Fixture g;
        TempImage image{16 * 512};
        g.dm.attach_drives({drive("root", image.path(), true)});
        CHECK(error_of<embervm::StateError>([&] { g.dm.restore_devices({}); }) ==
              "snapshot: no saved state for virtio-blk root");
        auto extra = states;
        extra.push_back({"virtio-net eth9", {}});
        CHECK(error_of<embervm::StateError>([&] { g.dm.restore_devices(extra); }) ==
              "snapshot: saved state of 'virtio-net eth9', which this VM does not have");
        f.dm.resume_devices();
    }
}

}  // namespace unit_device_manager_test
