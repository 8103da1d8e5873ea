// VhostNetDevice against a fake /dev/vhost-net that records the ioctl sequence: activation,
// reset, re-activation, feature sets, the memory table, kicks left to the kernel, call and
// error eventfds.
#include <catch2/catch.hpp>

#include <fmt/format.h>

#include "devices/pci/msix.h"
#include "tests/unit/virtio/net_harness.h"
#include "tests/unit/virtio/mmio_driver.h"
#include "virtio/mmio_transport.h"
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
        return bases.at(ring);
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
    std::array<uint32_t, 2> bases{7, 7};  // what GET_VRING_BASE answers
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

    explicit VhostHarness(uint64_t vhost_features = kVhostRingFeatures, uint8_t mac_last = 0x0f) {
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
        o.mac = {0x06, 0x00, 0x0a, 0x00, 0x02, mac_last};
        dev = std::make_unique<VhostNetDevice>(std::move(t), std::move(v), o);
    }
    uint64_t all_features() const { return dev->available_features() | feature::kVersion1; }
    void activate(uint64_t acked) {
        dev->activate(Activation{mem, queues, acked, irq, std::vector<int>{kicks[0].fd(), kicks[1].fd()}, &loop});
        run();
    }
    void run() { poll_ready(io); }
    // The used index the kernel left in ring `ring`'s used ring (rings at 0x10000 and 0x220000).
    void set_used(uint16_t ring, uint16_t idx) {
        mem.write_obj<uint16_t>(GuestAddress((ring == 0 ? 0x10000 : 0x220000) + 0x2002), idx);
    }
    // What a transport restored from a snapshot gives the device: the queues at the saved bases.
    void restored_queues(uint16_t base) {
        for (uint16_t ring = 0; ring < 2; ring++) {
            queues[ring].set_next_avail(base);
            queues[ring].set_next_used(base);
            set_used(ring, base);
        }
    }
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


// ---- snapshots -------------------------------------------------------------------------------

namespace {

const std::vector<std::string> kPause{"BACKEND 0 -1", "BACKEND 1 -1", "GET_BASE 0", "GET_BASE 1"};

// An activated device paused with both rings stopped at 7 and nothing in flight; its state.
std::vector<uint8_t> paused_state(VhostHarness& h, uint64_t features) {
    h.activate(features);
    h.set_used(0, 7);
    h.set_used(1, 7);
    h.dev->pause();
    h.run();
    return h.dev->save_state();
}

}  // namespace

TEST_CASE("vhost-net: pause stops both rings where the kernel was, resume starts them there", "[vhost][snapshot]") {
    VhostHarness h;
    const std::vector<uint8_t> state = paused_state(h, h.all_features());
    const size_t after_activation = 1 + kActivation.size();
    CHECK(calls_from(*h.vhost, after_activation) == kPause);
    CHECK(h.vhost->backend == std::array<int, 2>{-1, -1});
    // The transport's queues hold where the kernel stopped: that is what the transport saves.
    CHECK(h.queues[0].next_avail() == 7);
    CHECK(h.queues[1].next_used() == 7);
    CHECK_FALSE(state.empty());
    // While paused nothing is relayed.
    h.vhost->signal(h.vhost->call[0]);
    h.run();
    CHECK(h.irq.used.empty());

    h.dev->resume();
    h.run();
    std::vector<std::string> expected = kPause;
    for (const char* c : {"BASE 0 7", "BASE 1 7", "BACKEND 0 tap", "BACKEND 1 tap"}) expected.emplace_back(c);
    CHECK(calls_from(*h.vhost, after_activation) == expected);
    // Each ring kicked once for the kernel (a kick taken while paused is not lost).
    CHECK(h.kicks[0].consume() == 1);
    CHECK(h.kicks[1].consume() == 1);
    // The call written while paused is relayed once the relay is watched again.
    CHECK(h.irq.used == std::vector<uint16_t>{0});
    // A reset after the resume takes the rings back once.
    h.dev->reset();
    CHECK(calls_from(*h.vhost, after_activation + expected.size()) == kReset);
}

TEST_CASE("vhost-net: a call the kernel made before the pause is in the interrupt status", "[vhost][snapshot]") {
    VhostHarness h;
    h.activate(h.all_features());
    h.set_used(0, 7);
    h.set_used(1, 7);
    h.vhost->signal(h.vhost->call[1]);  // not relayed yet: the loop has not run
    h.dev->pause();
    CHECK(h.irq.used == std::vector<uint16_t>{1});
    h.dev->resume();
    h.run();
    CHECK(h.irq.used == std::vector<uint16_t>{1});  // consumed: not raised twice
}

TEST_CASE("vhost-net: buffers in flight at the pause refuse the snapshot naming the device", "[vhost][snapshot]") {
    VhostHarness h;
    h.activate(h.all_features());
    h.set_used(0, 7);
    h.set_used(1, 5);  // the kernel took 7, completed 5
    h.dev->pause();
    CHECK_THROWS_WITH(h.dev->save_state(), Catch::Contains("virtio-net eth0 (vhost)") &&
                                               Catch::Contains("queue 1: 2 requests still in flight"));
    // The resume goes on as if nothing happened, and the next pause may be saved.
    h.dev->resume();
    h.set_used(1, 7);
    h.dev->pause();
    CHECK_NOTHROW(h.dev->save_state());
}

TEST_CASE("vhost-net: a snapshot of a device never activated restores to one never activated", "[vhost][snapshot]") {
    VhostHarness h;
    h.dev->pause();
    const auto state = h.dev->save_state();
    h.dev->resume();
    VhostHarness restored;
    CHECK_NOTHROW(restored.dev->restore_state(state));
    CHECK(calls_from(*restored.vhost, 1).empty());
    // The driver then activates it itself, from its own fresh queues.
    restored.activate(restored.all_features());
    CHECK(calls_from(*restored.vhost, 1) == kActivation);
}

TEST_CASE("vhost-net: a restored device starts the rings from the saved bases", "[vhost][snapshot]") {
    VhostHarness h;
    const uint64_t features = h.all_features();
    const auto state = paused_state(h, features);

    VhostHarness restored;
    restored.restored_queues(7);
    restored.dev->restore_state(state);
    restored.activate(features);
    std::vector<std::string> expected = kActivation;
    expected[3] = "BASE 0 7";
    expected[9] = "BASE 1 7";
    CHECK(calls_from(*restored.vhost, 1) == expected);
    CHECK(restored.irq.errors.empty());
}

TEST_CASE("vhost-net: a corrupt or mismatched saved state is refused naming the field", "[vhost][snapshot]") {
    VhostHarness h;
    const uint64_t features = h.all_features();
    const auto state = paused_state(h, features);

    SECTION("another MAC") {
        VhostHarness other(kVhostRingFeatures, 0x10);
        CHECK_THROWS_WITH(other.dev->restore_state(state), Catch::Contains("'mac'") && Catch::Contains("06:00:0a:00:02:0f"));
    }
    SECTION("a vhost offering fewer features than were negotiated") {
        VhostHarness fewer(kVhostRingFeatures & ~feature::kRingEventIdx);
        CHECK_THROWS_WITH(fewer.dev->restore_state(state), Catch::Contains("'vhost features'") &&
                                                               Catch::Contains("/dev/vhost-net offers"));
    }
    SECTION("another version") {
        auto bad = state;
        bad[0] = 9;
        VhostHarness restored;
        CHECK_THROWS_WITH(restored.dev->restore_state(bad), Catch::Contains("'version'"));
    }
    SECTION("truncated") {
        for (size_t n = 0; n < state.size(); n++) {
            VhostHarness restored;
            INFO("length " << n);
            CHECK_THROWS_AS(restored.dev->restore_state(std::span(state).first(n)), embervm::StateError);
        }
    }
    SECTION("a base the restored queues do not have: nothing reaches the kernel") {
        VhostHarness restored;
        restored.restored_queues(5);
        restored.dev->restore_state(state);
        CHECK_THROWS_WITH(restored.activate(features), Catch::Contains("'vhost queue base'") && Catch::Contains("7 where"));
        CHECK(calls_from(*restored.vhost, 1).empty());
    }
    SECTION("a used ring behind the base in the restored memory: nothing reaches the kernel") {
        VhostHarness restored;
        restored.restored_queues(7);
        restored.set_used(1, 6);
        restored.dev->restore_state(state);
        CHECK_THROWS_WITH(restored.activate(features), Catch::Contains("guest memory's used index is 6"));
        CHECK(calls_from(*restored.vhost, 1).empty());
    }
}

namespace {

class CountingIrqLine : public embervm::devices::IrqLine {
public:
    void trigger() override { ++count; }
    int count = 0;
};

// vhost-net behind virtio-mmio as the VMM builds it: queue ioeventfds, the driver's bring-up
// through the registers. `mem` is shared so a restore sees the snapshot's memory.
struct MmioVhostSide {
    boost::asio::io_context io;
    embervm::vmm::EventLoop loop{io};
    const GuestMemory& mem;
    FakeVhost* vhost;
    std::shared_ptr<VhostNetDevice> dev;
    std::shared_ptr<CountingIrqLine> irq = std::make_shared<CountingIrqLine>();
    std::unique_ptr<MmioTransport> t;
    std::vector<int> kick_fds;

    MmioVhostSide(const GuestMemory& m, uint64_t vhost_features = kVhostRingFeatures) : mem(m) {
        auto tap = std::make_unique<FakeNetBackend>();
        auto v = std::make_unique<FakeVhost>();
        vhost = v.get();
        vhost->features = vhost_features;
        vhost->tap_fd = tap->fd();
        dev = std::make_shared<VhostNetDevice>(std::move(tap), std::move(v), VhostNetOptions{"eth0", {6, 0, 0, 0, 0, 1}, {}});
        t = std::make_unique<MmioTransport>(mem, dev, irq, &loop);
        std::vector<embervm::vmm::EventFd> kicks(2);
        for (auto& k : kicks) kick_fds.push_back(k.fd());
        t->set_queue_events(std::move(kicks));
    }
    ~MmioVhostSide() {
        t.reset();
        run();
    }
    void w32(uint64_t offset, uint32_t v) {
        const std::array<uint8_t, 4> b{static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8),
                                       static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 24)};
        t->write(offset, b);
    }
    void bring_up(uint64_t features) {
        testing::mmio_accept_features([this](uint64_t offset, uint32_t v) { w32(offset, v); }, features);
        for (uint32_t q = 0; q < 2; q++) {
            const uint64_t base = 0x10000 + 0x10000 * q;
            w32(mmio::kQueueSel, q);
            w32(mmio::kQueueNum, 32);
            w32(mmio::kQueueDescLow, static_cast<uint32_t>(base));
            w32(mmio::kQueueDriverLow, static_cast<uint32_t>(base + 0x1000));
            w32(mmio::kQueueDeviceLow, static_cast<uint32_t>(base + 0x2000));
            w32(mmio::kQueueReady, 1);
        }
        w32(mmio::kStatus, status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk);
        run();
        REQUIRE(t->is_activated());
    }
    void set_used(uint32_t q, uint16_t idx) { mem.write_obj<uint16_t>(GuestAddress(0x12002 + 0x10000 * q), idx); }
    void run() { poll_ready(io); }
};

}  // namespace

TEST_CASE("vhost-net over virtio-mmio: snapshot and restore through the transport", "[vhost][snapshot]") {
    GuestMemory mem{{{GuestAddress(0), 0x100000}}};
    MmioVhostSide a(mem);
    const uint64_t features = feature::kVersion1 | feature::kRingEventIdx | net_feature::kMac;
    a.bring_up(features);
    a.vhost->bases = {12, 5};
    a.set_used(0, 12);
    a.set_used(1, 5);
    a.vhost->signal(a.vhost->call[0]);  // a frame received just before the pause, not relayed yet
    a.t->pause();
    const std::vector<uint8_t> saved = a.t->save_state();
    CHECK(a.t->queue(0).next_avail() == 12);
    CHECK(a.t->queue(1).next_avail() == 5);
    CHECK((a.t->interrupt_status() & interrupt::kUsedBuffer) != 0);  // in the saved state
    a.t->resume();
    a.run();
    CHECK(a.vhost->backend == std::array<int, 2>{a.vhost->tap_fd, a.vhost->tap_fd});

    SECTION("restored: the rings start at the saved bases and are kicked once, the interrupt raised again") {
        MmioVhostSide b(mem);
        b.t->restore_state(saved);
        b.run();
        CHECK(b.t->is_activated());
        const auto& calls = b.vhost->calls;
        CHECK(std::find(calls.begin(), calls.end(), "BASE 0 12") != calls.end());
        CHECK(std::find(calls.begin(), calls.end(), "BASE 1 5") != calls.end());
        CHECK(calls.back() == "BACKEND 1 tap");
        CHECK(b.vhost->kick[0] == b.kick_fds[0]);
        uint64_t kicked = 0;
        CHECK(::read(b.kick_fds[1], &kicked, sizeof(kicked)) == sizeof(kicked));
        CHECK(kicked == 1);
        CHECK(b.irq->count >= 1);
        CHECK((b.t->interrupt_status() & interrupt::kUsedBuffer) != 0);
    }
    SECTION("a vhost that offers fewer features now: one line naming the device, the transport reset") {
        MmioVhostSide b(mem, kVhostRingFeatures & ~feature::kRingEventIdx);
        // The offered features differ too (EVENT_IDX is vhost's): the transport says so first.
        CHECK_THROWS_AS(b.t->restore_state(saved), embervm::StateError);
        CHECK_FALSE(b.t->is_activated());
        CHECK(calls_from(*b.vhost, 1).empty());
    }
    SECTION("guest memory whose used ring is not where the snapshot says: refused, nothing handed over") {
        a.set_used(1, 4);
        MmioVhostSide b(mem);
        CHECK_THROWS_WITH(b.t->restore_state(saved), Catch::Contains("virtio-net eth0 (vhost)") &&
                                                          Catch::Contains("used index is 4"));
        CHECK_FALSE(b.t->is_activated());
        CHECK(calls_from(*b.vhost, 1).empty());
        a.set_used(1, 5);
    }
}

}  // namespace embervm::virtio::net::net_test
