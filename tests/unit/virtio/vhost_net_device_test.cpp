// VhostNetDevice against a fake /dev/vhost-net that records the ioctl sequence: activation,
// reset, re-activation, feature sets, the memory table, kicks left to the kernel, call and
// error eventfds.
#include <catch2/catch.hpp>

#include <fmt/format.h>

#include "devices/pci/msix.h"
#include "tests/unit/virtio/net_harness.h"
#include "virtio/net/vhost_net_device.h"
#include "virtio/pci_transport.h"
#include "vmm/sys/error.h"

namespace embervm::virtio::net::net_test {
namespace {

class FakeVhost : public VhostKernel {
public:
    uint64_t get_features() override {
        calls.push_back("GET_FEATURES");
        return features;
    }
    void set_features(uint64_t f) override {
        record(fmt::format("SET_FEATURES {:#x}", f), "SET_FEATURES");
        acked = f;
    }
    void set_mem_table(std::span<const VhostMemoryRegion> regions) override {
        record(fmt::format("SET_MEM_TABLE {}", regions.size()), "SET_MEM_TABLE");
        table.assign(regions.begin(), regions.end());
    }
    void set_vring_num(uint32_t ring, uint32_t num) override { record(fmt::format("NUM {} {}", ring, num), "NUM"); }
    void set_vring_base(uint32_t ring, uint32_t base) override {
        record(fmt::format("BASE {} {}", ring, base), "BASE");
    }
    void set_vring_addr(uint32_t ring, const VhostVringAddr& a) override {
        record(fmt::format("ADDR {}", ring), "ADDR");
        addrs.at(ring) = a;
    }
    void set_vring_kick(uint32_t ring, int fd) override {
        record(fmt::format("KICK {}", ring), "KICK");
        kick.at(ring) = fd;
    }
    void set_vring_call(uint32_t ring, int fd) override {
        record(fmt::format("CALL {}", ring), "CALL");
        call.at(ring) = fd;
    }
    void set_vring_err(uint32_t ring, int fd) override {
        record(fmt::format("ERR {}", ring), "ERR");
        err.at(ring) = fd;
    }
    void set_backend(uint32_t ring, int fd) override {
        record(fmt::format("BACKEND {} {}", ring, fd == tap_fd ? "tap" : std::to_string(fd)), "BACKEND");
        backend.at(ring) = fd;
    }
    uint32_t get_vring_base(uint32_t ring) override {
        record(fmt::format("GET_BASE {}", ring), "GET_BASE");
        return 7;
    }

    // The kernel writes a ring's call / error eventfd.
    void signal(int fd) {
        const uint64_t one = 1;
        REQUIRE(::write(fd, &one, sizeof(one)) == sizeof(one));
    }

    uint64_t features = kVhostRingFeatures | feature_bit(27) /* ANY_LAYOUT */;
    uint64_t acked = 0;
    std::vector<std::string> calls;
    std::string fail_on;  // this ioctl fails with EINVAL
    std::vector<VhostMemoryRegion> table;
    std::array<VhostVringAddr, 2> addrs{};
    std::array<int, 2> kick{-1, -1}, call{-1, -1}, err{-1, -1}, backend{-1, -1};
    int tap_fd = -1;

private:
    void record(std::string call_text, const std::string& name) {
        calls.push_back(std::move(call_text));
        if (name == fail_on) throw sys_error("/dev/vhost-net: " + name, EINVAL);
    }
};

struct VhostHarness {
    boost::asio::io_context io;
    embervm::vmm::EventLoop loop{io};
    GuestMemory mem{{{GuestAddress(0), 0x100000}, {GuestAddress(0x200000), 0x200000}}};
    std::vector<Queue> queues;
    std::vector<embervm::vmm::EventFd> kicks{2};
    std::unique_ptr<RingDriver> rx, tx;
    FakeInterrupt irq;
    FakeNetBackend* tap;
    FakeVhost* vhost;
    std::unique_ptr<VhostNetDevice> dev;

    explicit VhostHarness(uint64_t vhost_features = kVhostRingFeatures) {
        queues.emplace_back(kNetQueueSize);
        queues.emplace_back(kNetQueueSize);
        rx = std::make_unique<RingDriver>(mem, queues[0], 0x10000, kRingSize);
        tx = std::make_unique<RingDriver>(mem, queues[1], 0x220000, kRingSize);
        auto t = std::make_unique<FakeNetBackend>();
        tap = t.get();
        auto v = std::make_unique<FakeVhost>();
        vhost = v.get();
        vhost->features = vhost_features;
        vhost->tap_fd = tap->fd();
        VhostNetOptions o;
        o.id = "eth0";
        o.mac = {0x06, 0x00, 0x0a, 0x00, 0x02, 0x0f};
        dev = std::make_unique<VhostNetDevice>(std::move(t), std::move(v), o);
    }
    uint64_t all_features() const { return dev->available_features() | feature::kVersion1; }
    void activate(uint64_t acked) {
        dev->activate(Activation{mem, queues, acked, irq, std::vector<int>{kicks[0].fd(), kicks[1].fd()}, &loop});
        run();
    }
    void run() { poll_ready(io); }
};

const std::vector<std::string> kActivation{
    "SET_FEATURES", "SET_MEM_TABLE 2", "NUM 0 32", "BASE 0 0", "ADDR 0", "KICK 0", "CALL 0", "ERR 0",
    "NUM 1 32",     "BASE 1 0",      "ADDR 1",   "KICK 1",   "CALL 1", "ERR 1",  "BACKEND 0 tap", "BACKEND 1 tap"};
const std::vector<std::string> kReset{"BACKEND 0 -1", "GET_BASE 0", "BACKEND 1 -1", "GET_BASE 1"};

// The calls after the first `skip`, with SET_FEATURES's value left out.
std::vector<std::string> calls_from(const FakeVhost& v, size_t skip) {
    std::vector<std::string> out;
    for (size_t i = skip; i < v.calls.size(); i++) {
        out.push_back(v.calls[i].starts_with("SET_FEATURES") ? "SET_FEATURES" : v.calls[i]);
    }
    return out;
}

}  // namespace

TEST_CASE("vhost-net: activation hands both rings to the kernel in order, the TAP last", "[vhost]") {
    VhostHarness h;
    REQUIRE(h.vhost->calls == std::vector<std::string>{"GET_FEATURES"});
    h.activate(h.all_features());
    CHECK(calls_from(*h.vhost, 1) == kActivation);
    // Kick: the queue's ioeventfd itself; call and error: the device's own eventfds.
    CHECK(h.vhost->kick[0] == h.kicks[0].fd());
    CHECK(h.vhost->kick[1] == h.kicks[1].fd());
    CHECK(h.vhost->call[0] != h.vhost->call[1]);
    CHECK(h.vhost->err[0] >= 0);
    CHECK(h.vhost->backend == std::array<int, 2>{h.tap->fd(), h.tap->fd()});
    // The TAP's receive offloads follow the driver's features, as without vhost.
    CHECK(h.tap->set_offloads_calls == std::vector<uint64_t>{h.all_features()});
}

TEST_CASE("vhost-net: the memory table is guest memory's regions at their host addresses", "[vhost]") {
    VhostHarness h;
    h.activate(h.all_features());
    const auto& regions = h.mem.regions();
    REQUIRE(h.vhost->table.size() == 2);
    for (size_t i = 0; i < 2; i++) {
        CHECK(h.vhost->table[i].guest_phys_addr == regions[i].start().value);
        CHECK(h.vhost->table[i].size == regions[i].size());
        CHECK(h.vhost->table[i].userspace_addr == reinterpret_cast<uint64_t>(regions[i].host_base()));
    }
    // The rings' user addresses point into those regions at the guest addresses' offsets.
    const auto host = [&](uint64_t gpa) { return reinterpret_cast<uint64_t>(h.mem.get_slice(GuestAddress(gpa), 1)->data()); };
    CHECK(h.vhost->addrs[0] == VhostVringAddr{host(0x10000), host(0x11000), host(0x12000)});
    CHECK(h.vhost->addrs[1] == VhostVringAddr{host(0x220000), host(0x221000), host(0x222000)});
}

TEST_CASE("vhost-net: features are the driver's ring features that vhost offers", "[vhost]") {
    SECTION("everything") {
        VhostHarness h;
        const uint64_t offered = h.all_features();
        CHECK((offered & kVhostRingFeatures) == kVhostRingFeatures);
        CHECK((offered & net_feature::kMac) != 0);
        CHECK((offered & net_feature::kGuestCsum) != 0);  // the TAP's offloads
        h.activate(offered);
        CHECK(h.vhost->acked == kVhostRingFeatures);  // no device bits: vhost would refuse them
    }
    SECTION("vhost without MRG_RXBUF and EVENT_IDX: not offered to the driver") {
        VhostHarness h(feature::kVersion1 | feature::kRingIndirectDesc);
        const uint64_t offered = h.all_features();
        CHECK((offered & net_feature::kMrgRxbuf) == 0);
        CHECK((offered & feature::kRingEventIdx) == 0);
        CHECK((offered & feature::kRingIndirectDesc) != 0);
        h.activate(offered);
        CHECK(h.vhost->acked == (feature::kVersion1 | feature::kRingIndirectDesc));
    }
    SECTION("the driver declines MRG_RXBUF and EVENT_IDX: vhost is told so") {
        VhostHarness h;
        h.activate(h.all_features() & ~(net_feature::kMrgRxbuf | feature::kRingEventIdx));
        CHECK(h.vhost->acked == (feature::kVersion1 | feature::kRingIndirectDesc));
    }
    SECTION("vhost without VERSION_1 cannot serve a modern device") {
        auto v = std::make_unique<FakeVhost>();
        v->features = net_feature::kMrgRxbuf;
        CHECK_THROWS_WITH(VhostNetDevice(std::make_unique<FakeNetBackend>(), std::move(v), VhostNetOptions{}),
                          Catch::Contains("VIRTIO_F_VERSION_1"));
    }
    SECTION("vhost refuses the feature set: activation fails, nothing stays handed over") {
        VhostHarness h;
        h.vhost->fail_on = "SET_FEATURES";
        CHECK_THROWS_WITH(h.activate(h.all_features()), Catch::Contains("SET_FEATURES"));
        CHECK(calls_from(*h.vhost, 1) == std::vector<std::string>{"SET_FEATURES"});
        CHECK(h.vhost->backend == std::array<int, 2>{-1, -1});
    }
}

TEST_CASE("vhost-net: a failure halfway through takes back what was handed over", "[vhost]") {
    VhostHarness h;
    h.vhost->fail_on = "KICK";
    CHECK_THROWS_WITH(h.activate(h.all_features()), Catch::Contains("KICK"));
    std::vector<std::string> expected{"SET_FEATURES", "SET_MEM_TABLE 2", "NUM 0 32", "BASE 0 0", "ADDR 0", "KICK 0"};
    expected.insert(expected.end(), kReset.begin(), kReset.end());
    CHECK(calls_from(*h.vhost, 1) == expected);
    // A second reset (the transport's) does nothing more.
    h.dev->reset();
    CHECK(calls_from(*h.vhost, 1) == expected);
}

TEST_CASE("vhost-net: reset stops the rings, a re-activation starts them again", "[vhost]") {
    VhostHarness h;
    h.dev->reset();  // never activated: nothing to take back
    CHECK(calls_from(*h.vhost, 1).empty());
    h.activate(h.all_features());
    h.dev->reset();
    h.run();
    std::vector<std::string> expected = kActivation;
    expected.insert(expected.end(), kReset.begin(), kReset.end());
    CHECK(calls_from(*h.vhost, 1) == expected);
    CHECK(h.vhost->backend == std::array<int, 2>{-1, -1});

    // The driver sets the queues up again (after a reset the transport's queues start at 0).
    h.activate(h.all_features());
    expected.insert(expected.end(), kActivation.begin(), kActivation.end());
    CHECK(calls_from(*h.vhost, 1) == expected);
    CHECK(h.dev->counters().activations == 2);
}

TEST_CASE("vhost-net: queue kicks are left to the kernel", "[vhost]") {
    VhostHarness h;
    h.activate(h.all_features());
    // KVM writes the ioeventfd: the event loop must not take the kick from vhost.
    h.kicks[1].signal();
    h.run();
    CHECK(h.kicks[1].consume() == 1);
    // A QueueNotify write that reached the transport is passed on to the same eventfd.
    h.dev->queue_notify(0);
    CHECK(h.kicks[0].consume() == 1);
    // And nothing was done with the rings in the VMM.
    CHECK(h.tap->outbound.empty());
    CHECK(h.tap->reads == 0);
}

TEST_CASE("vhost-net: call eventfds become used-buffer interrupts of their queue", "[vhost]") {
    VhostHarness h;
    h.activate(h.all_features());
    h.vhost->signal(h.vhost->call[1]);
    h.run();
    CHECK(h.irq.used == std::vector<uint16_t>{1});
    h.vhost->signal(h.vhost->call[0]);
    h.vhost->signal(h.vhost->call[0]);  // coalesced: one interrupt
    h.run();
    CHECK(h.irq.used == std::vector<uint16_t>{1, 0});
    CHECK(h.dev->counters().used_interrupts == 2);

    // After a reset the eventfds are no longer watched, and a stale call is dropped at the next
    // activation rather than raised.
    h.dev->reset();
    h.run();
    h.vhost->signal(h.vhost->call[0]);
    h.run();
    CHECK(h.irq.used.size() == 2);
    h.activate(h.all_features());
    CHECK(h.irq.used.size() == 2);
}

TEST_CASE("vhost-net: an error eventfd puts the device in DEVICE_NEEDS_RESET", "[vhost]") {
    VhostHarness h;
    h.activate(h.all_features());
    h.vhost->signal(h.vhost->err[0]);
    h.run();
    REQUIRE(h.irq.errors.size() == 1);
    CHECK_THAT(h.irq.errors[0], Catch::Contains("queue 0"));
    CHECK(h.dev->device_errors() == 1);
    CHECK(h.dev->counters().ring_errors == 1);
    // Broken: calls are no longer forwarded.
    h.vhost->signal(h.vhost->call[1]);
    h.run();
    CHECK(h.irq.used.empty());
}

TEST_CASE("vhost-net: an offered irqfd becomes the ring's call, a withdrawal the relay again", "[vhost][irqfd]") {
    VhostHarness h;
    embervm::vmm::EventFd irqfd;  // stands for KVM's irqfd of the queue's MSI-X vector
    // Offers before the activation are not kept (the transport offers after it).
    h.dev->set_queue_irqfd(0, irqfd.fd());
    CHECK(calls_from(*h.vhost, 1).empty());
    h.activate(h.all_features());
    const int relay0 = h.vhost->call[0];
    const size_t after_activation = h.vhost->calls.size();

    h.dev->set_queue_irqfd(0, irqfd.fd());
    CHECK(calls_from(*h.vhost, after_activation) == std::vector<std::string>{"CALL 0"});
    CHECK(h.vhost->call[0] == irqfd.fd());
    CHECK(h.dev->counters().irqfd_queues == 1);
    CHECK(h.dev->counters().call_switches == 1);
    h.dev->set_queue_irqfd(0, irqfd.fd());  // the same again: no ioctl
    CHECK(h.vhost->calls.size() == after_activation + 1);
    // The kernel's calls now go to KVM, not through the VMM.
    h.vhost->signal(h.vhost->call[0]);
    h.run();
    CHECK(h.irq.used.empty());
    CHECK(irqfd.consume() == 1);
    CHECK(h.dev->counters().used_interrupts == 0);

    SECTION("withdrawn (masked): back to the relay, which the loop still turns into interrupts") {
        // A call the kernel wrote to the relay just before the switch is still relayed.
        h.vhost->signal(relay0);
        h.dev->set_queue_irqfd(0, -1);
        CHECK(h.vhost->call[0] == relay0);
        h.run();
        CHECK(h.irq.used == std::vector<uint16_t>{0});
        h.vhost->signal(h.vhost->call[0]);
        h.run();
        CHECK(h.irq.used == std::vector<uint16_t>{0, 0});
        CHECK(h.dev->counters().irqfd_queues == 0);
        CHECK(h.dev->counters().call_switches == 2);
    }
    SECTION("DEVICE_NEEDS_RESET takes every ring back to the relay; later offers are not taken") {
        h.vhost->signal(h.vhost->err[1]);
        h.run();
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.vhost->call[0] == relay0);
        h.dev->set_queue_irqfd(1, irqfd.fd());
        CHECK(h.vhost->call[1] != irqfd.fd());
        CHECK(h.dev->counters().irqfd_queues == 0);
    }
    SECTION("a failed switch breaks the device") {
        h.vhost->fail_on = "CALL";
        h.dev->set_queue_irqfd(1, irqfd.fd());
        CHECK_FALSE(h.irq.errors.empty());  // the transport logs only the first
        CHECK(h.dev->device_errors() == 1);
        // Ring 0's way back to the relay failed as well: the counter says vhost kept the irqfd.
        CHECK(h.dev->counters().irqfd_queues == 1);
    }
    SECTION("reset forgets the offer: the next activation starts on the relay") {
        h.dev->reset();
        h.run();
        h.activate(h.all_features());
        CHECK(h.vhost->call[0] != irqfd.fd());
        CHECK(h.dev->counters().irqfd_queues == 0);
    }
}

namespace {

// MSI-X vectors as the VMM has them: one eventfd per vector that delivers it (KVM's irqfd
// there; here the test reads it as the guest's interrupt).
class IrqfdVectors : public embervm::devices::pci::MsiVectors {
public:
    void route(uint16_t, const embervm::devices::pci::MsiMessage&) override { routes++; }
    void trigger(uint16_t index) override { events.at(index).signal(); }
    int irqfd(uint16_t index) const override { return events.at(index).fd(); }
    std::array<embervm::vmm::EventFd, 3> events;
    int routes = 0;
};

// vhost-net behind a virtio-pci transport, driven through BAR 0 as Linux's virtio_pci does.
struct PciVhostHarness {
    boost::asio::io_context io;
    embervm::vmm::EventLoop loop{io};
    GuestMemory mem{{{GuestAddress(0), 0x100000}}};
    FakeVhost* vhost;
    std::shared_ptr<VhostNetDevice> dev;
    std::shared_ptr<IrqfdVectors> vectors = std::make_shared<IrqfdVectors>();
    std::unique_ptr<PciTransport> t;

    PciVhostHarness() {
        auto tap = std::make_unique<FakeNetBackend>();
        auto v = std::make_unique<FakeVhost>();
        vhost = v.get();
        vhost->tap_fd = tap->fd();
        dev = std::make_shared<VhostNetDevice>(std::move(tap), std::move(v), VhostNetOptions{"eth0", {}, {}});
        t = std::make_unique<PciTransport>(mem, dev, vectors, &loop);
        std::vector<embervm::vmm::EventFd> kicks(2);
        t->set_queue_events(std::move(kicks));
    }
    void wr(uint64_t offset, size_t width, uint64_t v) {
        std::array<uint8_t, 8> b{};
        std::memcpy(b.data(), &v, 8);
        t->bar_write(0, offset, std::span<const uint8_t>(b).first(width));
    }
    uint32_t pba() {
        std::array<uint8_t, 4> b{};
        t->bar_read(0, pci_layout::kMsixPba, b);
        return b[0];
    }
    void msix_control(uint16_t v) {
        std::array<uint8_t, 2> b{};
        std::memcpy(b.data(), &v, 2);
        t->config_write(t->msix_capability() + 2, b);
    }
    void mask(uint16_t vector, bool masked) { wr(pci_layout::kMsixTable + 16 * vector + 12, 4, masked ? 1 : 0); }
    // Linux's order: MSI-X on, vectors programmed and unmasked, queues with their vectors,
    // DRIVER_OK.
    void bring_up() {
        namespace c = common_cfg;
        msix_control(embervm::devices::pci::kMsixEnable);
        for (uint16_t v = 0; v < 3; v++) {
            wr(pci_layout::kMsixTable + 16 * v, 8, 0xfee00000);
            wr(pci_layout::kMsixTable + 16 * v + 8, 4, 0x4020 + v);
            mask(v, false);
        }
        wr(c::kDeviceStatus, 1, status::kAcknowledge);
        wr(c::kDeviceStatus, 1, status::kAcknowledge | status::kDriver);
        wr(c::kDriverFeatureSelect, 4, 1);
        wr(c::kDriverFeature, 4, feature::kVersion1 >> 32);
        wr(c::kDeviceStatus, 1, status::kAcknowledge | status::kDriver | status::kFeaturesOk);
        wr(c::kConfigMsixVector, 2, 2);
        for (uint16_t q = 0; q < 2; q++) {
            const uint64_t base = 0x10000 + 0x10000 * q;
            wr(c::kQueueSelect, 2, q);
            wr(c::kQueueSize, 2, 32);
            wr(c::kQueueDesc, 8, base);
            wr(c::kQueueDriver, 8, base + 0x1000);
            wr(c::kQueueDevice, 8, base + 0x2000);
            wr(c::kQueueMsixVector, 2, q);
            wr(c::kQueueEnable, 2, 1);
        }
        wr(c::kDeviceStatus, 1, status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk);
        run();
        REQUIRE(t->is_activated());
    }
    void run() { poll_ready(io); }
    // vhost signals ring `ring`'s call eventfd (whichever it has now); the loop runs.
    void call(uint32_t ring) {
        vhost->signal(vhost->call.at(ring));
        run();
    }
};

}  // namespace

TEST_CASE("vhost-net on virtio-pci: calls go to the vector's irqfd while it is deliverable", "[vhost][irqfd][pci]") {
    PciVhostHarness h;
    h.bring_up();
    auto& irq0 = h.vectors->events[0];
    auto& irq1 = h.vectors->events[1];
    // Both rings' calls are their vectors' irqfds: vhost -> KVM -> guest, nothing relayed.
    CHECK(h.vhost->call[0] == irq0.fd());
    CHECK(h.vhost->call[1] == irq1.fd());
    h.call(0);
    h.call(1);
    CHECK(irq0.consume() == 1);
    CHECK(irq1.consume() == 1);
    CHECK(h.dev->counters().used_interrupts == 0);
    CHECK(h.dev->counters().irqfd_queues == 2);

    SECTION("masked: the relay sets the pending bit; unmasked: the irqfd again and the pending one delivered") {
        h.mask(0, true);
        CHECK(h.vhost->call[0] != irq0.fd());
        h.call(0);
        CHECK(irq0.consume() == 0);
        CHECK(h.pba() == 1);
        CHECK(h.dev->counters().used_interrupts == 1);
        h.mask(0, false);
        CHECK(irq0.consume() == 1);  // the pending one, delivered at the unmask
        CHECK(h.pba() == 0);
        CHECK(h.vhost->call[0] == irq0.fd());
        h.call(0);
        CHECK(irq0.consume() == 1);
        CHECK(h.dev->counters().used_interrupts == 1);
        // Ring 1 was never disturbed.
        CHECK(h.vhost->call[1] == irq1.fd());
    }
    SECTION("the function mask takes both rings to the relay") {
        h.msix_control(embervm::devices::pci::kMsixEnable | embervm::devices::pci::kMsixFunctionMask);
        CHECK(h.dev->counters().irqfd_queues == 0);
        h.call(1);
        CHECK(irq1.consume() == 0);
        CHECK(h.pba() == 2);
        h.msix_control(embervm::devices::pci::kMsixEnable);
        CHECK(irq1.consume() == 1);
        CHECK(h.dev->counters().irqfd_queues == 2);
    }
    SECTION("MSI-X off: the relay, which only sets the ISR") {
        h.msix_control(0);
        CHECK(h.dev->counters().irqfd_queues == 0);
        h.call(0);
        CHECK(irq0.consume() == 0);
        std::array<uint8_t, 1> isr{};
        h.t->bar_read(0, pci_layout::kIsr, isr);
        CHECK(isr[0] == interrupt::kUsedBuffer);
    }
    SECTION("the queue moved to another vector: that vector's irqfd") {
        h.wr(common_cfg::kQueueSelect, 2, 0);
        h.wr(common_cfg::kQueueMsixVector, 2, 2);
        CHECK(h.vhost->call[0] == h.vectors->events[2].fd());
        h.wr(common_cfg::kQueueMsixVector, 2, pci_layout::kNoVector);
        CHECK(h.dev->counters().irqfd_queues == 1);
        h.call(0);  // relayed to no vector: nothing
        CHECK(irq0.consume() == 0);
    }
    SECTION("a reset stops the rings; the next bring-up is direct again") {
        h.wr(common_cfg::kDeviceStatus, 1, 0);
        h.run();
        CHECK_FALSE(h.t->is_activated());
        CHECK(h.vhost->backend == std::array<int, 2>{-1, -1});
        h.bring_up();
        CHECK(h.vhost->call[0] == irq0.fd());
        CHECK(h.dev->counters().activations == 2);
    }
    h.wr(common_cfg::kDeviceStatus, 1, 0);
    h.run();
}

TEST_CASE("vhost-net: activation needs both queues and their ioeventfds", "[vhost]") {
    SECTION("a queue not set up") {
        VhostHarness h;
        h.queues[1].set_ready(false);
        CHECK_THROWS_AS(h.activate(h.all_features()), QueueError);
        CHECK(calls_from(*h.vhost, 1).empty());
    }
    SECTION("no ioeventfds") {
        VhostHarness h;
        CHECK_THROWS_WITH(h.dev->activate(h.mem, h.queues, h.all_features(), h.irq), Catch::Contains("ioeventfd"));
        CHECK(calls_from(*h.vhost, 1).empty());
    }
}

TEST_CASE("vhost-net: the configuration space is virtio-net's", "[vhost]") {
    VhostHarness h;
    std::array<uint8_t, 8> cfg{};
    h.dev->read_config(0, cfg);
    CHECK(cfg == std::array<uint8_t, 8>{0x06, 0x00, 0x0a, 0x00, 0x02, 0x0f, kLinkUp, 0});
    CHECK(h.dev->metrics_json().at("vhost") == 1);
}

}  // namespace embervm::virtio::net::net_test
