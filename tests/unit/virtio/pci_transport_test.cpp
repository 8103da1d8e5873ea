// Tests for virtio/pci_transport: the virtio-pci (modern) function's configuration space and
// capabilities, the common config through BAR 0 (shared state machine with virtio-mmio),
// notifications, the ISR, and MSI-X (vector table, masking, pending bits, out-of-range values).
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "devices/pci/config_space.h"
#include "devices/pci/msix.h"
#include "devices/pci/pci_bus.h"
#include "fake_transport_device.h"
#include "memory/guest_memory.h"
#include "virtio/pci_transport.h"
#include "virtio/virtio_defs.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_pci_transport_test {

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using namespace embervm::devices::pci;
using embervm::virtio::testing::FakeDevice;
using embervm::virtio::testing::kDeviceBit5;
using embervm::StateError;

namespace {

class RecordingVectors : public MsiVectors {
public:
    void route(uint16_t index, const MsiMessage& message) override { routes.emplace_back(index, message); }
    void trigger(uint16_t index) override { triggers.push_back(index); }
    // Stand-ins for the irqfds of the vectors (never written here).
    int irqfd(uint16_t index) const override { return kIrqfdBase + index; }
    static constexpr int kIrqfdBase = 1000;
    std::vector<std::pair<uint16_t, MsiMessage>> routes;
    std::vector<uint16_t> triggers;
};

constexpr uint64_t kBarBase = 0xc0000000;

struct Fixture {
    GuestMemory mem{{{GuestAddress(0), 0x10000}}};
    std::shared_ptr<FakeDevice> dev = std::make_shared<FakeDevice>();
    std::shared_ptr<RecordingVectors> vectors = std::make_shared<RecordingVectors>();
    PciTransport t{mem, dev, vectors};

    uint64_t rd(uint64_t offset, size_t width) {
        std::array<uint8_t, 8> b{};
        t.bar_read(0, offset, std::span(b).first(width));
        uint64_t v = 0;
        std::memcpy(&v, b.data(), 8);
        return v;
    }
    void wr(uint64_t offset, size_t width, uint64_t v) {
        std::array<uint8_t, 8> b{};
        std::memcpy(b.data(), &v, 8);
        t.bar_write(0, offset, std::span<const uint8_t>(b).first(width));
    }
    uint32_t cfg32(uint16_t offset) {
        std::array<uint8_t, 4> b{};
        t.config_read(offset, b);
        uint32_t v = 0;
        std::memcpy(&v, b.data(), 4);
        return v;
    }
    void cfg_write16(uint16_t offset, uint16_t v) {
        std::array<uint8_t, 2> b{};
        std::memcpy(b.data(), &v, 2);
        t.config_write(offset, b);
    }
    uint32_t status() { return static_cast<uint32_t>(rd(common_cfg::kDeviceStatus, 1)); }
    void negotiate(uint64_t features = feature::kVersion1 | kDeviceBit5 | feature::kRingEventIdx) {
        wr(common_cfg::kDeviceStatus, 1, 0);
        wr(common_cfg::kDeviceStatus, 1, status::kAcknowledge);
        wr(common_cfg::kDeviceStatus, 1, status::kAcknowledge | status::kDriver);
        wr(common_cfg::kDriverFeatureSelect, 4, 0);
        wr(common_cfg::kDriverFeature, 4, static_cast<uint32_t>(features));
        wr(common_cfg::kDriverFeatureSelect, 4, 1);
        wr(common_cfg::kDriverFeature, 4, features >> 32);
        wr(common_cfg::kDeviceStatus, 1, status::kAcknowledge | status::kDriver | status::kFeaturesOk);
    }
    void setup_queue(uint16_t index, uint16_t size, uint64_t desc, uint64_t avail, uint64_t used, uint16_t vector) {
        wr(common_cfg::kQueueSelect, 2, index);
        wr(common_cfg::kQueueSize, 2, size);
        wr(common_cfg::kQueueDesc, 4, static_cast<uint32_t>(desc));
        wr(common_cfg::kQueueDesc + 4, 4, desc >> 32);
        wr(common_cfg::kQueueDriver, 8, avail);
        wr(common_cfg::kQueueDevice, 4, static_cast<uint32_t>(used));
        wr(common_cfg::kQueueDevice + 4, 4, used >> 32);
        wr(common_cfg::kQueueMsixVector, 2, vector);
        wr(common_cfg::kQueueEnable, 2, 1);
    }
    void driver_ok() { wr(common_cfg::kDeviceStatus, 1, status() | status::kDriverOk); }
    // Programs MSI-X vector `v` (unmasked) and enables MSI-X.
    void program_vector(uint16_t v, uint64_t address, uint32_t data, bool unmask = true) {
        const uint64_t e = pci_layout::kMsixTable + 16ull * v;
        wr(e, 4, static_cast<uint32_t>(address));
        wr(e + 4, 4, address >> 32);
        wr(e + 8, 4, data);
        wr(e + 12, 4, unmask ? 0 : 1);
    }
    void enable_msix(bool function_mask = false) {
        cfg_write16(t.msix_capability() + 2, static_cast<uint16_t>(kMsixEnable | (function_mask ? kMsixFunctionMask : 0)));
    }
};

}  // namespace

TEST_CASE("virtio-pci: identity and capability list", "[virtio][pci]") {
    Fixture f;
    CHECK(f.cfg32(reg::kVendorId) == 0x10421af4);  // 0x1040 + virtio-blk (2)
    CHECK(f.cfg32(reg::kRevision) >> 8 == 0x018000);
    CHECK((f.cfg32(reg::kRevision) & 0xff) == 1);
    CHECK(f.cfg32(reg::kSubsystemVendorId) == 0x00401af4);
    CHECK(f.cfg32(reg::kBar0) == kBarMem64);
    CHECK(f.t.bar_sizes()[0] == pci_layout::kBarSize);
    // Walk the capabilities as Linux's virtio_pci_find_capability does.
    struct Cap {
        uint8_t type, bar;
        uint32_t offset, length;
    };
    std::vector<Cap> virtio_caps;
    uint16_t msix = 0;
    uint32_t multiplier = 0;
    for (uint8_t p = static_cast<uint8_t>(f.cfg32(reg::kCapabilitiesPointer)); p != 0;
         p = static_cast<uint8_t>(f.cfg32(p) >> 8)) {
        REQUIRE(virtio_caps.size() < 10);
        const uint32_t head = f.cfg32(p);
        if ((head & 0xff) == cap_id::kMsix) {
            msix = p;
            continue;
        }
        REQUIRE((head & 0xff) == cap_id::kVendorSpecific);
        const uint8_t len = static_cast<uint8_t>(head >> 16);
        const Cap c{static_cast<uint8_t>(head >> 24), static_cast<uint8_t>(f.cfg32(p + 4)), f.cfg32(p + 8),
                    f.cfg32(p + 12)};
        CHECK(len == (c.type == pci_layout::kCapNotify ? 20 : 16));
        if (c.type == pci_layout::kCapNotify) multiplier = f.cfg32(p + 16);
        virtio_caps.push_back(c);
    }
    REQUIRE(virtio_caps.size() == 4);
    CHECK(virtio_caps[0].type == pci_layout::kCapCommon);
    CHECK(virtio_caps[0].length >= 0x38);
    CHECK(virtio_caps[1].type == pci_layout::kCapNotify);
    CHECK(virtio_caps[1].length == 2 * 4);
    CHECK(multiplier == 4);
    CHECK(virtio_caps[2].type == pci_layout::kCapIsr);
    CHECK(virtio_caps[3].type == pci_layout::kCapDevice);
    for (const auto& c : virtio_caps) {
        CHECK(c.bar == 0);
        CHECK(c.offset + c.length <= pci_layout::kBarSize);
    }
    REQUIRE(msix == f.t.msix_capability());
    CHECK(((f.cfg32(msix) >> 16) & 0x7ff) == 2);  // table size N-1: 2 queues + config
    CHECK(f.cfg32(msix + 4) == pci_layout::kMsixTable);  // BIR 0
    CHECK(f.cfg32(msix + 8) == pci_layout::kMsixPba);
}

TEST_CASE("virtio-pci: driver bring-up through the common config activates the device", "[virtio][pci]") {
    Fixture f;
    CHECK(f.rd(common_cfg::kNumQueues, 2) == 2);
    f.wr(common_cfg::kDeviceFeatureSelect, 4, 1);
    CHECK(f.rd(common_cfg::kDeviceFeature, 4) == 1);  // VERSION_1
    f.wr(common_cfg::kQueueSelect, 2, 1);
    CHECK(f.rd(common_cfg::kQueueSize, 2) == 8);
    CHECK(f.rd(common_cfg::kQueueNotifyOff, 2) == 1);
    f.negotiate();
    CHECK(f.status() == (status::kAcknowledge | status::kDriver | status::kFeaturesOk));
    f.setup_queue(0, 16, 0x1000, 0x2000, 0x3000, 0);
    f.wr(common_cfg::kQueueSelect, 2, 0);
    CHECK(f.rd(common_cfg::kQueueDesc, 8) == 0x1000);
    CHECK(f.rd(common_cfg::kQueueDriver + 4, 4) == 0);
    CHECK(f.rd(common_cfg::kQueueMsixVector, 2) == 0);
    CHECK(f.rd(common_cfg::kQueueEnable, 2) == 1);
    f.driver_ok();
    CHECK(f.t.is_activated());
    CHECK(f.dev->activations == 1);
    CHECK(f.dev->acked_features == (feature::kVersion1 | kDeviceBit5 | feature::kRingEventIdx));
    // Device config through the BAR.
    CHECK(f.rd(pci_layout::kDeviceCfg, 4) == 0x04030201);
    // A notify write for queue 0 reaches the device; out-of-range and unaligned ones do not.
    f.wr(pci_layout::kNotify, 2, 0);
    f.wr(pci_layout::kNotify + 4, 2, 1);  // queue 1 is not ready
    f.wr(pci_layout::kNotify + 2, 2, 0);
    f.wr(pci_layout::kNotify + 8, 2, 2);
    CHECK(f.dev->notifications == std::vector<uint16_t>{0});
    // Status 0 resets the device and the transport's selectors and vectors.
    const int resets = f.dev->resets;
    f.wr(common_cfg::kDeviceStatus, 1, 0);
    CHECK(f.dev->resets == resets + 1);
    CHECK_FALSE(f.t.is_activated());
    CHECK(f.rd(common_cfg::kQueueMsixVector, 2) == pci_layout::kNoVector);
}

TEST_CASE("virtio-pci: bad guest values are refused, not trusted", "[virtio][pci]") {
    Fixture f;
    f.negotiate();
    SECTION("vector numbers beyond the table read back as NO_VECTOR") {
        f.wr(common_cfg::kConfigMsixVector, 2, 3);
        CHECK(f.rd(common_cfg::kConfigMsixVector, 2) == pci_layout::kNoVector);
        f.wr(common_cfg::kConfigMsixVector, 2, 2);
        CHECK(f.rd(common_cfg::kConfigMsixVector, 2) == 2);
        f.wr(common_cfg::kQueueSelect, 2, 0);
        f.wr(common_cfg::kQueueMsixVector, 2, 0x7ff);
        CHECK(f.rd(common_cfg::kQueueMsixVector, 2) == pci_layout::kNoVector);
    }
    SECTION("a queue selector out of range reads as an absent queue and ignores writes") {
        f.wr(common_cfg::kQueueSelect, 2, 9);
        CHECK(f.rd(common_cfg::kQueueSize, 2) == 0);
        CHECK(f.rd(common_cfg::kQueueMsixVector, 2) == pci_layout::kNoVector);
        f.wr(common_cfg::kQueueSize, 2, 4);
        f.wr(common_cfg::kQueueEnable, 2, 1);
        f.wr(common_cfg::kQueueMsixVector, 2, 0);
        CHECK(f.rd(common_cfg::kQueueEnable, 2) == 0);
    }
    SECTION("accesses of the wrong width are ignored") {
        f.wr(common_cfg::kQueueSelect, 4, 1);  // a 16-bit field
        CHECK(f.rd(common_cfg::kQueueSelect, 2) == 0);
        CHECK(f.rd(common_cfg::kNumQueues, 4) == 0);
        CHECK(f.rd(common_cfg::kQueueDesc + 2, 4) == 0);
    }
    SECTION("a queue size that is not a power of two breaks only this device at DRIVER_OK") {
        f.setup_queue(0, 12, 0x1000, 0x2000, 0x3000, 0);
        f.driver_ok();
        CHECK_FALSE(f.t.is_activated());
        CHECK((f.status() & status::kDeviceNeedsReset) != 0);
        CHECK(f.t.needs_reset_events() == 1);
        // Reset recovers.
        f.wr(common_cfg::kDeviceStatus, 1, 0);
        CHECK(f.status() == 0);
        f.negotiate();
        f.setup_queue(0, 16, 0x1000, 0x2000, 0x3000, 0);
        f.driver_ok();
        CHECK(f.t.is_activated());
    }
    SECTION("a queue outside guest memory breaks only this device") {
        f.setup_queue(0, 16, 0xfff000, 0x2000, 0x3000, 0);
        f.driver_ok();
        CHECK_FALSE(f.t.is_activated());
        CHECK((f.status() & status::kDeviceNeedsReset) != 0);
    }
    SECTION("MSI-X table and PBA accesses out of range or misaligned are ignored") {
        f.wr(pci_layout::kMsixTable + 3 * 16, 4, 0x1234);  // vector 3 does not exist
        CHECK(f.rd(pci_layout::kMsixTable + 3 * 16, 4) == 0);
        f.wr(pci_layout::kMsixTable + 2, 4, 0xffffffff);  // misaligned
        CHECK(f.rd(pci_layout::kMsixTable, 4) == 0);
        f.wr(pci_layout::kMsixTable + 12, 2, 0);  // 2-byte access to vector control
        CHECK(f.t.msix().masked(0));
        f.wr(pci_layout::kMsixPba, 8, ~0ull);  // the PBA is read-only
        CHECK(f.rd(pci_layout::kMsixPba, 8) == 0);
        f.wr(pci_layout::kMsixPba + 0x800, 4, 1);  // beyond everything
        CHECK(f.rd(pci_layout::kMsixPba + 0x800, 4) == 0);
        CHECK(f.vectors->routes.empty());
    }
}

TEST_CASE("virtio-pci: MSI-X vectors, masking and pending bits", "[virtio][pci]") {
    Fixture f;
    f.dev->process = true;
    f.negotiate(feature::kVersion1);
    f.wr(common_cfg::kConfigMsixVector, 2, 2);
    f.setup_queue(0, 16, 0x1000, 0x2000, 0x3000, 0);
    f.driver_ok();
    REQUIRE(f.t.is_activated());
    // Every vector starts masked; the table reads back what was written.
    CHECK(f.t.msix().masked(0));
    f.program_vector(0, 0xfee00000, 0x4021, false);
    CHECK(f.rd(pci_layout::kMsixTable, 8) == 0xfee00000);
    CHECK(f.rd(pci_layout::kMsixTable + 8, 4) == 0x4021);
    CHECK(f.rd(pci_layout::kMsixTable + 12, 4) == 1);

    SECTION("MSI-X disabled: the ISR is set, no vector fires; reading the ISR clears it") {
        f.dev->interrupt->signal_used_queue(0);
        CHECK(f.vectors->triggers.empty());
        CHECK(f.rd(pci_layout::kIsr, 1) == interrupt::kUsedBuffer);
        CHECK(f.rd(pci_layout::kIsr, 1) == 0);
    }
    SECTION("a masked vector is left pending and delivered when unmasked") {
        f.enable_msix();
        f.dev->interrupt->signal_used_queue(0);
        CHECK(f.vectors->triggers.empty());
        CHECK(f.t.msix().pending(0));
        CHECK(f.rd(pci_layout::kMsixPba, 4) == 1);
        CHECK(f.vectors->routes.empty());
        f.wr(pci_layout::kMsixTable + 12, 4, 0);  // unmask
        REQUIRE(f.vectors->routes.size() == 1);
        CHECK(f.vectors->routes[0].first == 0);
        CHECK(f.vectors->routes[0].second == MsiMessage{0xfee00000, 0x4021});
        CHECK(f.vectors->triggers == std::vector<uint16_t>{0});
        CHECK_FALSE(f.t.msix().pending(0));
        CHECK(f.rd(pci_layout::kMsixPba, 4) == 0);
        // Unmasked: delivered at once, routed only once.
        f.dev->interrupt->signal_used_queue(0);
        CHECK(f.vectors->triggers == std::vector<uint16_t>{0, 0});
        CHECK(f.vectors->routes.size() == 1);
        // A new message while unmasked is routed again before the next delivery.
        f.wr(pci_layout::kMsixTable + 8, 4, 0x4022);
        REQUIRE(f.vectors->routes.size() == 2);
        CHECK(f.vectors->routes[1].second.data == 0x4022);
    }
    SECTION("the function mask holds every vector; clearing it delivers what is pending") {
        f.program_vector(0, 0xfee00000, 0x4021);
        f.program_vector(2, 0xfee00000, 0x4023);
        f.enable_msix(true);
        f.dev->interrupt->signal_used_queue(0);
        f.dev->interrupt->signal_config_change();
        CHECK(f.vectors->triggers.empty());
        CHECK(f.rd(pci_layout::kMsixPba, 4) == 0b101);
        f.enable_msix(false);
        CHECK(f.vectors->triggers == std::vector<uint16_t>{0, 2});
    }
    SECTION("a queue with NO_VECTOR raises nothing") {
        f.program_vector(0, 0xfee00000, 0x4021);
        f.enable_msix();
        f.wr(common_cfg::kQueueSelect, 2, 0);
        f.wr(common_cfg::kQueueMsixVector, 2, pci_layout::kNoVector);
        f.dev->interrupt->signal_used_queue(0);
        CHECK(f.vectors->triggers.empty());
    }
    SECTION("a device error raises the config vector with DEVICE_NEEDS_RESET") {
        f.program_vector(2, 0xfee00000, 0x4023);
        f.enable_msix();
        f.dev->interrupt->device_error("test");
        CHECK(f.vectors->triggers == std::vector<uint16_t>{2});
        CHECK((f.status() & status::kDeviceNeedsReset) != 0);
    }
}

TEST_CASE("virtio-pci: a queue is offered its vector's irqfd exactly while the vector is deliverable",
          "[virtio][pci][irqfd]") {
    Fixture f;
    constexpr int kFd0 = RecordingVectors::kIrqfdBase;
    constexpr int kFd1 = RecordingVectors::kIrqfdBase + 1;
    f.negotiate(feature::kVersion1);
    f.wr(common_cfg::kConfigMsixVector, 2, 2);
    f.setup_queue(0, 16, 0x1000, 0x2000, 0x3000, 0);
    f.enable_msix();
    f.program_vector(0, 0xfee00000, 0x4021);
    f.program_vector(1, 0xfee00000, 0x4022);
    // Nothing is offered before the device is activated.
    CHECK(f.dev->irqfd_offers.empty());
    f.driver_ok();
    REQUIRE(f.t.is_activated());
    // Activated, MSI-X on, vector 0 unmasked: queue 0 gets vector 0's irqfd. Queue 1 (not set
    // up, no vector) gets nothing.
    CHECK(f.dev->irqfd_offers == std::vector<std::pair<uint16_t, int>>{{0, kFd0}});
    const uint64_t entry0 = pci_layout::kMsixTable;

    SECTION("masking the vector withdraws it, unmasking offers it again") {
        f.wr(entry0 + 12, 4, 1);
        CHECK(f.dev->irqfds[0] == -1);
        // Signalled while masked (the relay's path): pending, not delivered.
        f.dev->interrupt->signal_used_queue(0);
        CHECK(f.vectors->triggers.empty());
        CHECK(f.t.msix().pending(0));
        f.wr(entry0 + 12, 4, 0);
        CHECK(f.dev->irqfds[0] == kFd0);
        CHECK(f.vectors->triggers == std::vector<uint16_t>{0});  // the pending one, once
        CHECK_FALSE(f.t.msix().pending(0));
        CHECK(f.dev->irqfd_offers.size() == 3);
    }
    SECTION("the function mask withdraws every offer, clearing it offers them again") {
        f.enable_msix(true);
        CHECK(f.dev->irqfds[0] == -1);
        f.enable_msix(false);
        CHECK(f.dev->irqfds[0] == kFd0);
    }
    SECTION("MSI-X disabled withdraws it") {
        f.cfg_write16(f.t.msix_capability() + 2, 0);
        CHECK(f.dev->irqfds[0] == -1);
        f.enable_msix();
        CHECK(f.dev->irqfds[0] == kFd0);
    }
    SECTION("a new vector for the queue: that vector's irqfd, or none") {
        f.wr(common_cfg::kQueueSelect, 2, 0);
        f.wr(common_cfg::kQueueMsixVector, 2, 1);
        CHECK(f.dev->irqfds[0] == kFd1);
        f.wr(common_cfg::kQueueMsixVector, 2, pci_layout::kNoVector);
        CHECK(f.dev->irqfds[0] == -1);
        f.wr(common_cfg::kQueueMsixVector, 2, 7);  // no such vector: as NO_VECTOR
        CHECK(f.dev->irqfds[0] == -1);
        f.wr(common_cfg::kQueueMsixVector, 2, 0);
        CHECK(f.dev->irqfds[0] == kFd0);
    }
    SECTION("a new message for an unmasked vector keeps the offer (the irqfd follows the GSI's route)") {
        const size_t routes = f.vectors->routes.size();
        f.wr(entry0 + 8, 4, 0x4031);
        CHECK(f.vectors->routes.size() == routes + 1);
        CHECK(f.dev->irqfd_offers.size() == 1);
        CHECK(f.dev->irqfds[0] == kFd0);
    }
    SECTION("a reset forgets it; the next activation offers it again") {
        f.wr(common_cfg::kDeviceStatus, 1, 0);
        CHECK(f.dev->irqfds[0] == -1);  // the device's reset dropped it
        CHECK(f.dev->irqfd_offers.size() == 1);
        f.negotiate(feature::kVersion1);
        f.setup_queue(0, 16, 0x1000, 0x2000, 0x3000, 0);
        f.driver_ok();
        CHECK(f.dev->irqfds[0] == kFd0);
        CHECK(f.dev->irqfd_offers.size() == 2);
    }
    SECTION("DEVICE_NEEDS_RESET: the next change withdraws it and nothing is offered again") {
        f.dev->interrupt->device_error("test");
        f.wr(entry0 + 12, 4, 1);
        CHECK(f.dev->irqfds[0] == -1);
        f.wr(entry0 + 12, 4, 0);
        CHECK(f.dev->irqfds[0] == -1);
    }
}

TEST_CASE("virtio-pci: no irqfd offered when MSI-X is off or the vector masked at DRIVER_OK", "[virtio][pci][irqfd]") {
    Fixture f;
    f.negotiate(feature::kVersion1);
    f.setup_queue(0, 16, 0x1000, 0x2000, 0x3000, 0);
    f.program_vector(0, 0xfee00000, 0x4021, false);
    f.driver_ok();
    REQUIRE(f.t.is_activated());
    f.enable_msix();
    CHECK(f.dev->irqfd_offers.empty());  // enabled, but the vector is masked
    f.wr(pci_layout::kMsixTable + 12, 4, 0);
    CHECK(f.dev->irqfds[0] == RecordingVectors::kIrqfdBase);
}

TEST_CASE("virtio-pci: on the root bus, the notify region follows the BAR", "[virtio][pci]") {
    GuestMemory mem{{{GuestAddress(0), 0x10000}}};
    auto t = std::make_shared<PciTransport>(mem, std::make_shared<FakeDevice>(), std::make_shared<RecordingVectors>());
    std::vector<std::optional<uint64_t>> notify;
    t->set_notify_moved([&](std::optional<uint64_t> at) { notify.push_back(at); });
    PciRoot root(kBarBase, 0x100000);
    const uint8_t slot = root.add(t);
    CHECK(notify.empty());  // memory space still off
    const uint32_t enable_addr = 0x80000000u | (uint32_t{slot} << 11) | reg::kCommand;
    const uint32_t cmd = command::kMemorySpace | command::kBusMaster;
    auto io = root.config_io();
    io->write(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&enable_addr), 4));
    io->write(4, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&cmd), 4));
    REQUIRE(notify.size() == 1);
    CHECK(notify[0] == kBarBase + pci_layout::kNotify);
    // The common config answers at the BAR.
    uint16_t nq = 0;
    REQUIRE(root.mmio_read(kBarBase + common_cfg::kNumQueues, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&nq), 2)));
    CHECK(nq == 2);
    // Moved by the driver.
    const uint32_t bar_addr = 0x80000000u | (uint32_t{slot} << 11) | reg::kBar0;
    const uint32_t moved = kBarBase + 0x10000;
    io->write(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&bar_addr), 4));
    io->write(4, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&moved), 4));
    REQUIRE(notify.size() == 2);
    CHECK(notify[1] == moved + pci_layout::kNotify);
    // Moved out of the window: the notify eventfds go nowhere.
    const uint32_t outside = 0x1000;
    io->write(4, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&outside), 4));
    REQUIRE(notify.size() == 3);
    CHECK(notify[2] == std::nullopt);
}

// ---------------------------------------------------------------------------------------
// Snapshots (virtio/saved_state.h: the PCI transport's registers, configuration space, MSI-X)

namespace {

constexpr uint64_t kMsgA = 0xfee00000, kMsgB = 0xfee01000, kMsgC = 0xfee02000;

// An activated function as a driver leaves it: queues 0 and 1 on vectors 0 and 1, configuration
// changes on vector 2; vector 1 masked with an interrupt pending on it; BAR 0 moved and decoded;
// the selectors away from 0. Returns its saved state.
std::vector<uint8_t> saved_pci_function(Fixture& f) {
    f.negotiate();
    f.setup_queue(0, 16, 0x1000, 0x2000, 0x3000, 0);
    f.setup_queue(1, 8, 0x4000, 0x5000, 0x6000, 1);
    f.wr(common_cfg::kConfigMsixVector, 2, 2);
    f.program_vector(0, kMsgA, 0x41);
    f.program_vector(1, kMsgB, 0x42, false);
    f.program_vector(2, kMsgC, 0x43);
    f.enable_msix();
    f.t.assign_bar(0, kBarBase + 0x10000);
    f.cfg_write16(reg::kCommand, command::kMemorySpace | command::kBusMaster);
    f.driver_ok();
    f.t.signal_used_queue(1);  // masked: pending
    f.wr(common_cfg::kQueueSelect, 2, 1);
    f.wr(common_cfg::kDeviceFeatureSelect, 4, 1);
    f.wr(common_cfg::kDriverFeatureSelect, 4, 7);
    REQUIRE(f.t.msix().pending(1));
    f.t.pause();
    return f.t.save_state();
}

// The PCI transport's blob inside a saved state: just before the fake device's (u32 length +
// 8 bytes). Its layout: version, device/driver feature selects (u32), queue select and config
// vector (u16), queue count and the 2 queue vectors (u16), 256 configuration bytes, the MSI-X
// vector count (u16), 3 entries of 16 bytes, 8 bytes of PBA.
constexpr size_t kPciBlobSize = 4 + 4 + 4 + 2 + 2 + 2 + 2 * 2 + 256 + 2 + 3 * 16 + 8;
struct PciBlob {
    static constexpr size_t kQueueVector1 = 20, kConfig = 22, kMsixEntries = 22 + 256 + 2, kPba = kMsixEntries + 48;
};
size_t pci_blob_offset(const std::vector<uint8_t>& saved) {
    const size_t at = saved.size() - 12 - kPciBlobSize;
    uint32_t len = 0;
    std::memcpy(&len, &saved[at - 4], 4);
    REQUIRE(len == kPciBlobSize);
    return at;
}

// A restore of `saved` into the fresh fixture `b` that must be refused: one line naming the
// device and `field`, and nothing of it applied (no route set, not activated, status 0).
void check_pci_refused(Fixture& b, std::span<const uint8_t> saved, const std::string& field) {
    try {
        b.t.restore_state(saved);
        FAIL("the saved state was taken");
    } catch (const StateError& e) {
        const std::string what = e.what();
        INFO(what);
        CHECK(what.find('\n') == std::string::npos);
        CHECK(what.find("virtio-fake test") != std::string::npos);
        CHECK(what.find(field) != std::string::npos);
    }
    CHECK_FALSE(b.t.is_activated());
    CHECK(b.status() == 0);
    CHECK(b.vectors->routes.empty());
    CHECK(b.vectors->triggers.empty());
    CHECK_FALSE(b.t.msix().enabled());
    CHECK(b.t.bar_addresses()[0] == kBarBase);
}

}  // namespace

TEST_CASE("virtio-pci: a restored function has its registers, configuration space and MSI-X table",
          "[virtio][pci][snapshot]") {
    Fixture a;
    a.t.assign_bar(0, kBarBase);
    const std::vector<uint8_t> saved = saved_pci_function(a);

    Fixture b;
    b.t.assign_bar(0, kBarBase);  // where the root put the fresh function
    b.t.restore_state(saved);
    CHECK(b.t.is_activated());
    CHECK(b.dev->activations == 1);
    CHECK(b.status() == (status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk));
    // Common config: the selectors and the vectors.
    CHECK(b.rd(common_cfg::kQueueSelect, 2) == 1);
    CHECK(b.rd(common_cfg::kQueueMsixVector, 2) == 1);
    CHECK(b.rd(common_cfg::kQueueSize, 2) == 8);
    CHECK(b.rd(common_cfg::kDeviceFeatureSelect, 4) == 1);
    CHECK(b.rd(common_cfg::kDriverFeatureSelect, 4) == 7);
    CHECK(b.rd(common_cfg::kConfigMsixVector, 2) == 2);
    // Configuration space: command, BAR 0, MSI-X enabled.
    CHECK((b.cfg32(reg::kCommand) & 0xffff) == (command::kMemorySpace | command::kBusMaster));
    CHECK(b.t.bar_addresses()[0] == kBarBase + 0x10000);
    CHECK(b.t.msix().enabled());
    // The MSI-X table: messages, masks, the pending bit.
    CHECK(b.t.msix().message(0) == MsiMessage{kMsgA, 0x41});
    CHECK(b.t.msix().message(1) == MsiMessage{kMsgB, 0x42});
    CHECK(b.t.msix().message(2) == MsiMessage{kMsgC, 0x43});
    CHECK_FALSE(b.t.msix().masked(0));
    CHECK(b.t.msix().masked(1));
    CHECK(b.t.msix().pending(1));
    // The routes of the deliverable vectors were set, the masked one's not yet; after the
    // restore every queue's vector was signalled once: delivered on 0, still pending on 1.
    std::vector<uint16_t> routed;
    for (const auto& r : b.vectors->routes) routed.push_back(r.first);
    std::sort(routed.begin(), routed.end());
    CHECK(routed == std::vector<uint16_t>{0, 2});
    CHECK(b.vectors->triggers == std::vector<uint16_t>{0});
    // The direct interrupts were re-evaluated with the restored table: queue 0's vector is
    // deliverable, queue 1's masked.
    CHECK(b.dev->irqfds == std::array<int, 2>{RecordingVectors::kIrqfdBase + 0, -1});
    // The driver unmasks vector 1: its pending interrupt is delivered once, with its message.
    b.wr(pci_layout::kMsixTable + 16 + 12, 4, 0);
    CHECK(b.vectors->triggers == std::vector<uint16_t>{0, 1});
    CHECK_FALSE(b.t.msix().pending(1));
    CHECK(b.vectors->routes.back() == std::make_pair(uint16_t{1}, MsiMessage{kMsgB, 0x42}));
    CHECK(b.dev->irqfds == std::array<int, 2>{RecordingVectors::kIrqfdBase + 0, RecordingVectors::kIrqfdBase + 1});
    // The restored state saves to the same bytes (but for the pending bit now delivered).
    b.t.pause();
    auto again = b.t.save_state();
    auto expect = saved;
    expect[pci_blob_offset(saved) + PciBlob::kMsixEntries + 16 + 12] = 0;  // vector 1 unmasked
    expect[pci_blob_offset(saved) + PciBlob::kPba] = 0;                   // nothing pending
    CHECK(again == expect);
}

TEST_CASE("virtio-pci: a function never touched by a driver restores as it is", "[virtio][pci][snapshot]") {
    Fixture a;
    a.t.assign_bar(0, kBarBase);
    const auto saved = a.t.save_state();
    Fixture b;
    b.t.assign_bar(0, kBarBase);
    b.t.restore_state(saved);
    CHECK_FALSE(b.t.is_activated());
    CHECK(b.vectors->routes.empty());
    CHECK(b.vectors->triggers.empty());
    CHECK(b.t.save_state() == saved);
}

TEST_CASE("virtio-pci: truncated and corrupt saved states are refused naming the field", "[virtio][pci][snapshot]") {
    Fixture a;
    a.t.assign_bar(0, kBarBase);
    const std::vector<uint8_t> saved = saved_pci_function(a);
    const size_t blob = pci_blob_offset(saved);
    auto corrupt = [&](size_t offset, uint8_t value, const std::string& field) {
        auto bad = saved;
        bad[blob + offset] = value;
        Fixture b;
        b.t.assign_bar(0, kBarBase);
        check_pci_refused(b, bad, field);
    };
    SECTION("every truncation of the PCI registers") {
        // The blob's own length prefix says how much there is: shorten the blob itself.
        for (size_t n = 0; n < kPciBlobSize; n += 7) {
            auto bad = std::vector<uint8_t>(saved.begin(), saved.begin() + static_cast<long>(blob) + static_cast<long>(n));
            const uint32_t len = static_cast<uint32_t>(n);
            std::memcpy(&bad[blob - 4], &len, 4);
            bad.insert(bad.end(), saved.end() - 12, saved.end());
            Fixture b;
            b.t.assign_bar(0, kBarBase);
            INFO("PCI registers truncated to " << n << " bytes");
            check_pci_refused(b, bad, "truncated");
        }
    }
    SECTION("a newer version") { corrupt(0, 2, "'version'"); }
    SECTION("a queue vector beyond the table") { corrupt(PciBlob::kQueueVector1, 3, "'queue MSI-X vector'"); }
    SECTION("the config vector beyond the table") { corrupt(14, 7, "'config MSI-X vector'"); }
    SECTION("a vendor ID that is not this function's") { corrupt(PciBlob::kConfig + reg::kVendorId, 0x34, "'vendor ID'"); }
    SECTION("BAR 0's type bits (reserved to the function)") { corrupt(PciBlob::kConfig + reg::kBar0, 0x0c, "'BAR 0'"); }
    SECTION("BAR 0's address below its size") { corrupt(PciBlob::kConfig + reg::kBar0 + 1, 0x10, "'BAR 0'"); }
    SECTION("a command bit the function does not have (I/O space)") {
        corrupt(PciBlob::kConfig + reg::kCommand, command::kIoSpace | command::kMemorySpace, "'command'");
    }
    SECTION("the MSI-X table size in the message control") {
        corrupt(PciBlob::kConfig + a.t.msix_capability() + 2, 7, "'MSI-X message control'");
    }
    SECTION("a reserved bit in a vector control") { corrupt(PciBlob::kMsixEntries + 12, 3, "'MSI-X entry vector control'"); }
    SECTION("a pending bit beyond the vectors") { corrupt(PciBlob::kPba, 0x0a, "'MSI-X PBA'"); }
    SECTION("a vector count of another function") { corrupt(PciBlob::kMsixEntries - 2, 4, "'MSI-X vector count'"); }
}

}  // namespace unit_pci_transport_test
