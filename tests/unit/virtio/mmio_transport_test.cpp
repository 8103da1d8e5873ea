// Tests for virtio/mmio_transport: the virtio-mmio v2 register file, feature negotiation,
// status state machine, queue configuration, activation, interrupts and notifications, in
// front of a fake VirtioDevice.
#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "devices/irq.h"
#include "memory/guest_memory.h"
#include "virtio/device.h"
#include "virtio/mmio_transport.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"
#include "fake_transport_device.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_mmio_transport_test {

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using embervm::virtio::testing::FakeDevice;
using embervm::virtio::testing::kDeviceBit5;

namespace {

class CountingIrq : public embervm::devices::IrqLine {
public:
    void trigger() override { ++count_; }
    int count() const { return count_.load(); }

private:
    std::atomic<int> count_{0};
};

constexpr uint32_t kAck = status::kAcknowledge;
constexpr uint32_t kDrv = status::kDriver;
constexpr uint32_t kFeat = status::kFeaturesOk;
constexpr uint32_t kOk = status::kDriverOk;

struct Fixture {
    GuestMemory mem{{{GuestAddress(0), 0x10000}}};
    std::shared_ptr<FakeDevice> dev = std::make_shared<FakeDevice>();
    std::shared_ptr<CountingIrq> irq = std::make_shared<CountingIrq>();
    MmioTransport t{mem, dev, irq};

    uint32_t r32(uint64_t offset) {
        std::array<uint8_t, 4> b{};
        t.read(offset, b);
        return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
    }
    void w32(uint64_t offset, uint32_t v) {
        const std::array<uint8_t, 4> b{static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8),
                                       static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 24)};
        t.write(offset, b);
    }
    uint32_t status() { return r32(mmio::kStatus); }
    void write_features(uint64_t features) {
        w32(mmio::kDriverFeaturesSel, 0);
        w32(mmio::kDriverFeatures, static_cast<uint32_t>(features));
        w32(mmio::kDriverFeaturesSel, 1);
        w32(mmio::kDriverFeatures, static_cast<uint32_t>(features >> 32));
    }
    // Driver init up to FEATURES_OK (spec 3.1.1 steps 1-6).
    void negotiate(uint64_t features = feature::kVersion1 | kDeviceBit5 | feature::kRingEventIdx) {
        w32(mmio::kStatus, 0);
        w32(mmio::kStatus, kAck);
        w32(mmio::kStatus, kAck | kDrv);
        write_features(features);
        w32(mmio::kStatus, kAck | kDrv | kFeat);
    }
    void setup_queue(uint32_t index, uint32_t size, uint64_t desc, uint64_t avail, uint64_t used) {
        w32(mmio::kQueueSel, index);
        w32(mmio::kQueueNum, size);
        w32(mmio::kQueueDescLow, static_cast<uint32_t>(desc));
        w32(mmio::kQueueDescHigh, static_cast<uint32_t>(desc >> 32));
        w32(mmio::kQueueDriverLow, static_cast<uint32_t>(avail));
        w32(mmio::kQueueDriverHigh, static_cast<uint32_t>(avail >> 32));
        w32(mmio::kQueueDeviceLow, static_cast<uint32_t>(used));
        w32(mmio::kQueueDeviceHigh, static_cast<uint32_t>(used >> 32));
        w32(mmio::kQueueReady, 1);
    }
    void driver_ok() { w32(mmio::kStatus, status() | kOk); }
    // A complete, valid bring-up with queue 0 set up and queue 1 left alone.
    void bring_up() {
        negotiate();
        setup_queue(0, 16, 0x1000, 0x2000, 0x3000);
        driver_ok();
    }
};

}  // namespace

TEST_CASE("virtio-mmio identification registers", "[virtio]") {
    Fixture f;
    CHECK(f.r32(mmio::kMagicValue) == 0x74726976);
    CHECK(f.r32(mmio::kVersionReg) == 2);
    CHECK(f.r32(mmio::kDeviceId) == 2);
    CHECK(f.r32(mmio::kVendorIdReg) == 0x52424d45);
    CHECK(f.r32(mmio::kShmLenLow) == 0xffffffff);
    CHECK(f.r32(mmio::kShmLenHigh) == 0xffffffff);
    CHECK(f.r32(mmio::kConfigGeneration) == 0);
    CHECK(f.r32(mmio::kStatus) == 0);
    CHECK(f.r32(mmio::kInterruptStatus) == 0);
    CHECK(f.r32(0x0f0) == 0);  // reserved
    f.w32(mmio::kQueueSel, 0);
    CHECK(f.r32(mmio::kQueueNumMax) == 16);
    f.w32(mmio::kQueueSel, 1);
    CHECK(f.r32(mmio::kQueueNumMax) == 8);
    f.w32(mmio::kQueueSel, 2);
    CHECK(f.r32(mmio::kQueueNumMax) == 0);  // no such queue
    CHECK(f.r32(mmio::kQueueReady) == 0);
    CHECK(f.t.num_queues() == 2);
    CHECK(mmio_cmdline_entry(0xd0001000, 5) == "virtio_mmio.device=4K@0xd0001000:5");
}

TEST_CASE("virtio-mmio offers the device's features plus VERSION_1", "[virtio]") {
    Fixture f;
    f.w32(mmio::kDeviceFeaturesSel, 0);
    CHECK(f.r32(mmio::kDeviceFeatures) == 0x30000020);  // bits 5, 28, 29
    f.w32(mmio::kDeviceFeaturesSel, 1);
    CHECK(f.r32(mmio::kDeviceFeatures) == 1);  // bit 32: VIRTIO_F_VERSION_1
    f.w32(mmio::kDeviceFeaturesSel, 2);
    CHECK(f.r32(mmio::kDeviceFeatures) == 0);
}

TEST_CASE("virtio-mmio feature negotiation", "[virtio]") {
    Fixture f;
    SECTION("a subset with VERSION_1 is accepted") {
        f.negotiate(feature::kVersion1 | kDeviceBit5);
        CHECK(f.status() == (kAck | kDrv | kFeat));
        CHECK(f.t.driver_features() == (feature::kVersion1 | kDeviceBit5));
        // Features are frozen once FEATURES_OK is set.
        f.w32(mmio::kDriverFeaturesSel, 0);
        f.w32(mmio::kDriverFeatures, 0);
        CHECK(f.t.driver_features() == (feature::kVersion1 | kDeviceBit5));
    }
    SECTION("without VERSION_1 FEATURES_OK does not stick") {
        f.negotiate(kDeviceBit5);
        CHECK(f.status() == (kAck | kDrv));
        // ... and DRIVER_OK cannot follow.
        f.w32(mmio::kStatus, kAck | kDrv | kFeat | kOk);
        CHECK(f.status() == (kAck | kDrv));
        CHECK(f.dev->activations == 0);
    }
    SECTION("features that were not offered are refused") {
        f.negotiate(feature::kVersion1 | feature_bit(6));
        CHECK(f.status() == (kAck | kDrv));
        f.negotiate(feature::kVersion1 | feature::kAccessPlatform);
        CHECK(f.status() == (kAck | kDrv));
    }
    SECTION("features beyond bit 63 are refused") {
        f.w32(mmio::kStatus, kAck);
        f.w32(mmio::kStatus, kAck | kDrv);
        f.write_features(feature::kVersion1);
        f.w32(mmio::kDriverFeaturesSel, 2);
        f.w32(mmio::kDriverFeatures, 1);
        f.w32(mmio::kStatus, kAck | kDrv | kFeat);
        CHECK(f.status() == (kAck | kDrv));
    }
    SECTION("driver features are ignored before DRIVER") {
        f.w32(mmio::kStatus, kAck);
        f.write_features(feature::kVersion1);
        CHECK(f.t.driver_features() == 0);
    }
}

TEST_CASE("virtio-mmio status state machine", "[virtio]") {
    Fixture f;
    f.w32(mmio::kStatus, kDrv);  // DRIVER without ACKNOWLEDGE
    CHECK(f.status() == 0);
    f.w32(mmio::kStatus, kAck);
    CHECK(f.status() == kAck);
    f.w32(mmio::kStatus, kAck | kOk);  // skips DRIVER and FEATURES_OK
    CHECK(f.status() == kAck);
    f.w32(mmio::kStatus, kAck | 0x10);  // unknown bit
    CHECK(f.status() == kAck);
    f.w32(mmio::kStatus, kAck | kDrv);
    CHECK(f.status() == (kAck | kDrv));
    f.w32(mmio::kStatus, kAck);  // clearing a bit other than by writing 0
    CHECK(f.status() == (kAck | kDrv));
    f.w32(mmio::kStatus, kAck | kDrv | status::kFailed);
    CHECK(f.status() == (kAck | kDrv | status::kFailed));
    f.write_features(feature::kVersion1);
    f.w32(mmio::kStatus, kAck | kDrv | kFeat | status::kFailed);  // nothing but reset after FAILED
    CHECK(f.status() == (kAck | kDrv | status::kFailed));
    CHECK(f.dev->resets == 0);
    f.w32(mmio::kStatus, 0);
    CHECK(f.status() == 0);
    CHECK(f.dev->resets == 1);
    // Several steps in one write are fine when each has its prerequisite.
    f.w32(mmio::kStatus, kAck | kDrv);
    CHECK(f.status() == (kAck | kDrv));
}

TEST_CASE("virtio-mmio queue configuration registers", "[virtio]") {
    Fixture f;
    // Before FEATURES_OK queue configuration is refused.
    f.w32(mmio::kStatus, kAck);
    f.w32(mmio::kStatus, kAck | kDrv);
    f.w32(mmio::kQueueSel, 0);
    f.w32(mmio::kQueueNum, 4);
    f.w32(mmio::kQueueReady, 1);
    CHECK(f.t.queue(0).size() == 16);
    CHECK_FALSE(f.t.queue(0).ready());

    f.write_features(feature::kVersion1);
    f.w32(mmio::kStatus, kAck | kDrv | kFeat);
    f.w32(mmio::kQueueSel, 1);
    f.w32(mmio::kQueueNum, 4);
    f.w32(mmio::kQueueDescHigh, 0x1);
    f.w32(mmio::kQueueDescLow, 0x1000);
    f.w32(mmio::kQueueDriverLow, 0x2000);
    f.w32(mmio::kQueueDeviceLow, 0x3000);
    f.w32(mmio::kQueueDeviceHigh, 0x2);
    Queue q = f.t.queue(1);
    CHECK(q.size() == 4);
    CHECK(q.desc_table().value == 0x100001000ULL);
    CHECK(q.avail_ring().value == 0x2000);
    CHECK(q.used_ring().value == 0x200003000ULL);
    CHECK(f.t.queue(0).size() == 16);  // other queue untouched

    f.w32(mmio::kQueueReady, 1);
    CHECK(f.r32(mmio::kQueueReady) == 1);
    f.w32(mmio::kQueueNum, 8);  // refused while the queue is ready
    f.w32(mmio::kQueueDescLow, 0x5000);
    CHECK(f.t.queue(1).size() == 4);
    CHECK(f.t.queue(1).desc_table().value == 0x100001000ULL);
    f.w32(mmio::kQueueReady, 0);
    CHECK(f.r32(mmio::kQueueReady) == 0);
    f.w32(mmio::kQueueNum, 8);
    CHECK(f.t.queue(1).size() == 8);
    f.w32(mmio::kQueueNum, 0x10000);  // does not fit: becomes an invalid size
    CHECK(f.t.queue(1).size() == 0);

    f.w32(mmio::kQueueSel, 7);  // no such queue: writes go nowhere
    f.w32(mmio::kQueueNum, 2);
    f.w32(mmio::kQueueReady, 1);
    CHECK(f.r32(mmio::kQueueReady) == 0);

    // After DRIVER_OK everything is frozen.
    f.setup_queue(0, 16, 0x1000, 0x2000, 0x3000);
    f.driver_ok();
    REQUIRE(f.t.is_activated());
    f.w32(mmio::kQueueSel, 0);
    f.w32(mmio::kQueueReady, 0);
    f.w32(mmio::kQueueNum, 2);
    CHECK(f.r32(mmio::kQueueReady) == 1);
    CHECK(f.t.queue(0).size() == 16);
}

TEST_CASE("virtio-mmio activation hands valid queues and acked features to the device", "[virtio]") {
    Fixture f;
    f.bring_up();
    CHECK(f.status() == (kAck | kDrv | kFeat | kOk));
    CHECK(f.t.is_activated());
    REQUIRE(f.dev->activations == 1);
    CHECK(f.dev->acked_features == (feature::kVersion1 | kDeviceBit5 | feature::kRingEventIdx));
    REQUIRE(f.dev->queues.size() == 2);
    CHECK(f.dev->queues[0].ready());
    CHECK(f.dev->queues[0].size() == 16);
    CHECK(f.dev->queues[0].event_idx_enabled());
    CHECK_FALSE(f.dev->queues[0].indirect_enabled());
    CHECK_FALSE(f.dev->queues[1].ready());  // not set up by the driver
    CHECK(f.dev->interrupt == &f.t);
    CHECK(f.irq->count() == 0);
}

TEST_CASE("virtio-mmio activation with an invalid queue sets DEVICE_NEEDS_RESET", "[virtio]") {
    Fixture f;
    f.negotiate();
    SECTION("size not a power of two") { f.setup_queue(0, 3, 0x1000, 0x2000, 0x3000); }
    SECTION("misaligned descriptor table") { f.setup_queue(0, 16, 0x1008, 0x2000, 0x3000); }
    SECTION("used ring outside guest memory") { f.setup_queue(0, 16, 0x1000, 0x2000, 0xfffc); }
    SECTION("size larger than the maximum") { f.setup_queue(1, 16, 0x1000, 0x2000, 0x3000); }
    f.driver_ok();
    CHECK(f.status() == (kAck | kDrv | kFeat | kOk | status::kDeviceNeedsReset));
    CHECK(f.t.needs_reset());
    CHECK(f.r32(mmio::kInterruptStatus) == interrupt::kConfigChange);
    CHECK(f.irq->count() == 1);
    CHECK(f.dev->activations == 0);
    CHECK_FALSE(f.t.is_activated());
    f.w32(mmio::kQueueNotify, 0);
    CHECK(f.dev->notifications.empty());
    // Reported once, and counted once.
    f.t.device_error("again");
    CHECK(f.irq->count() == 1);
    CHECK(f.t.needs_reset_events() == 1);
    // A driver echoing NEEDS_RESET in a status write does not clear anything.
    f.w32(mmio::kStatus, f.status());
    CHECK(f.t.needs_reset());

    // Reset clears it and a correct bring-up works.
    f.w32(mmio::kStatus, 0);
    CHECK(f.status() == 0);
    CHECK(f.r32(mmio::kInterruptStatus) == 0);
    f.bring_up();
    CHECK(f.t.is_activated());
    CHECK(f.dev->activations == 1);
    CHECK(f.status() == (kAck | kDrv | kFeat | kOk));
    // Each time the device breaks again is a new event (metrics count them).
    f.t.device_error("broken after the reset");
    CHECK(f.t.needs_reset_events() == 2);
}

TEST_CASE("virtio-mmio: a device that fails to activate needs reset", "[virtio]") {
    Fixture f;
    f.dev->throw_on_activate = true;
    f.bring_up();
    CHECK((f.status() & status::kDeviceNeedsReset) != 0);
    CHECK(f.irq->count() == 1);
    f.w32(mmio::kQueueNotify, 0);
    CHECK(f.dev->notifications.empty());
}

TEST_CASE("virtio-mmio reset (status 0) releases everything", "[virtio]") {
    Fixture f;
    f.bring_up();
    f.dev->interrupt->signal_used_queue(0);
    REQUIRE(f.r32(mmio::kInterruptStatus) == interrupt::kUsedBuffer);
    f.w32(mmio::kStatus, 0);
    CHECK(f.dev->resets == 2);  // the one in negotiate() and this one
    CHECK(f.dev->interrupt == nullptr);
    CHECK_FALSE(f.t.is_activated());
    CHECK(f.status() == 0);
    CHECK(f.r32(mmio::kInterruptStatus) == 0);
    CHECK(f.t.driver_features() == 0);
    Queue q = f.t.queue(0);
    CHECK_FALSE(q.ready());
    CHECK(q.size() == 16);
    CHECK(q.desc_table().value == 0);
    CHECK(q.used_ring().value == 0);
    f.w32(mmio::kQueueNotify, 0);
    CHECK(f.dev->notifications.empty());
}

TEST_CASE("virtio-mmio interrupt status, acknowledge and config generation", "[virtio]") {
    Fixture f;
    f.bring_up();
    DeviceInterrupt& irq = *f.dev->interrupt;
    irq.signal_used_queue(0);
    CHECK(f.r32(mmio::kInterruptStatus) == 1);
    CHECK(f.irq->count() == 1);
    irq.signal_config_change();
    CHECK(f.r32(mmio::kInterruptStatus) == 3);
    CHECK(f.r32(mmio::kConfigGeneration) == 1);
    CHECK(f.irq->count() == 2);
    f.w32(mmio::kInterruptAck, interrupt::kUsedBuffer);
    CHECK(f.r32(mmio::kInterruptStatus) == 2);
    f.w32(mmio::kInterruptAck, interrupt::kConfigChange);
    CHECK(f.r32(mmio::kInterruptStatus) == 0);
    irq.signal_config_change();
    CHECK(f.r32(mmio::kConfigGeneration) == 2);
}

TEST_CASE("virtio-mmio raises the used-buffer interrupt again only for an activated, working device", "[virtio]") {
    Fixture f;
    CHECK_FALSE(f.t.raise_used_again());  // not activated
    CHECK(f.irq->count() == 0);
    f.bring_up();
    CHECK_FALSE(f.t.used_interrupt_pending_since());
    const auto before = std::chrono::steady_clock::now();
    CHECK(f.t.raise_used_again());
    CHECK(f.irq->count() == 1);
    CHECK(f.r32(mmio::kInterruptStatus) == interrupt::kUsedBuffer);
    const auto since = f.t.used_interrupt_pending_since();
    REQUIRE(since);
    CHECK(*since >= before);
    f.dev->interrupt->signal_used_queue(0);  // still unacknowledged: the same episode
    CHECK(f.t.used_interrupt_pending_since() == since);
    f.dev->interrupt->signal_config_change();
    f.w32(mmio::kInterruptAck, interrupt::kConfigChange);  // not the used-buffer bit
    CHECK(f.t.used_interrupt_pending_since() == since);
    f.w32(mmio::kInterruptAck, interrupt::kUsedBuffer);
    CHECK_FALSE(f.t.used_interrupt_pending_since());
    CHECK(f.t.raise_used_again());  // the bit comes back with the interrupt
    CHECK(f.r32(mmio::kInterruptStatus) == interrupt::kUsedBuffer);
    CHECK(f.irq->count() == 4);
    f.t.device_error("broken");
    CHECK(f.irq->count() == 5);  // the config-change interrupt of DEVICE_NEEDS_RESET
    CHECK_FALSE(f.t.raise_used_again());
    CHECK(f.irq->count() == 5);
    f.w32(mmio::kStatus, 0);
    CHECK_FALSE(f.t.raise_used_again());  // reset
    CHECK(f.r32(mmio::kInterruptStatus) == 0);
    CHECK_FALSE(f.t.used_interrupt_pending_since());
}

TEST_CASE("virtio-mmio config space takes any width", "[virtio]") {
    Fixture f;
    std::array<uint8_t, 1> b1{};
    f.t.read(mmio::kConfig + 2, b1);
    CHECK(b1[0] == 3);
    std::array<uint8_t, 2> b2{};
    f.t.read(mmio::kConfig + 1, b2);
    CHECK(b2 == std::array<uint8_t, 2>{2, 3});
    CHECK(f.r32(mmio::kConfig + 4) == 0x08070605);
    std::array<uint8_t, 8> b8{};
    f.t.read(mmio::kConfig, b8);
    CHECK(b8 == std::array<uint8_t, 8>{1, 2, 3, 4, 5, 6, 7, 8});
    f.t.read(mmio::kConfig + 6, b8);  // partly beyond the config: zeros
    CHECK(b8 == std::array<uint8_t, 8>{7, 8, 0, 0, 0, 0, 0, 0});
    const std::array<uint8_t, 2> w{0xaa, 0xbb};
    f.t.write(mmio::kConfig + 2, w);
    CHECK(f.dev->config[2] == 0xaa);
    CHECK(f.dev->config[3] == 0xbb);
}

TEST_CASE("virtio-mmio registers take 32-bit aligned accesses only", "[virtio]") {
    Fixture f;
    std::array<uint8_t, 2> b2{0xff, 0xff};
    f.t.read(mmio::kMagicValue, b2);
    CHECK(b2 == std::array<uint8_t, 2>{0, 0});
    std::array<uint8_t, 8> b8{};
    b8.fill(0xff);
    f.t.read(mmio::kMagicValue, b8);
    CHECK(b8 == std::array<uint8_t, 8>{});
    CHECK(f.r32(mmio::kMagicValue + 2) == 0);  // unaligned
    const std::array<uint8_t, 1> ack{static_cast<uint8_t>(kAck)};
    f.t.write(mmio::kStatus, ack);
    CHECK(f.status() == 0);
    const std::array<uint8_t, 8> ack8{static_cast<uint8_t>(kAck), 0, 0, 0, 0, 0, 0, 0};
    f.t.write(mmio::kStatus, ack8);
    CHECK(f.status() == 0);
    f.w32(mmio::kStatus, kAck);
    CHECK(f.status() == kAck);
}

TEST_CASE("virtio-mmio queue notifications via MMIO writes", "[virtio]") {
    Fixture f;
    f.w32(mmio::kQueueNotify, 0);  // before activation: ignored
    f.w32(mmio::kQueueNotify, 0);
    CHECK(f.dev->notifications.empty());

    f.bring_up();
    f.w32(mmio::kQueueNotify, 0);
    f.w32(mmio::kQueueNotify, 0);
    CHECK(f.dev->notifications == std::vector<uint16_t>{0, 0});
    f.w32(mmio::kQueueNotify, 1);  // not ready
    f.w32(mmio::kQueueNotify, 9);  // no such queue
    f.w32(mmio::kQueueNotify, 0x10000);
    CHECK(f.dev->notifications.size() == 2);

    // A device error escaping queue_notify breaks the device, not the VMM.
    f.dev->throw_on_notify = true;
    f.w32(mmio::kQueueNotify, 0);
    CHECK((f.status() & status::kDeviceNeedsReset) != 0);
    CHECK(f.r32(mmio::kInterruptStatus) == interrupt::kConfigChange);
    CHECK(f.irq->count() == 1);
    f.w32(mmio::kQueueNotify, 0);
    CHECK(f.dev->notifications.size() == 3);
}

TEST_CASE("virtio-mmio end to end: a kick is served and the used buffer signalled", "[virtio]") {
    Fixture f;
    f.dev->process = true;
    f.bring_up();
    // Driver: one chain {readable 4 bytes, writable 8 bytes} in the rings set up by bring_up.
    f.mem.write_obj(GuestAddress(0x1000), Descriptor{0x8000, 4, desc_flags::kNext, 1});
    f.mem.write_obj(GuestAddress(0x1010), Descriptor{0x9000, 8, desc_flags::kWrite, 0});
    f.mem.write_obj<uint16_t>(GuestAddress(0x2004), 0);  // avail.ring[0] = head 0
    f.mem.write_obj<uint16_t>(GuestAddress(0x2002), 1);  // avail.idx = 1
    f.w32(mmio::kQueueNotify, 0);

    CHECK(f.mem.read_obj<uint16_t>(GuestAddress(0x3002)) == 1);        // used.idx
    CHECK(f.mem.read_obj<uint32_t>(GuestAddress(0x3004)) == 0);        // used.ring[0].id
    CHECK(f.mem.read_obj<uint32_t>(GuestAddress(0x3008)) == 2);        // used.ring[0].len
    CHECK(f.mem.read_obj<uint16_t>(GuestAddress(0x9000)) == 0x6b6f);  // "ok"
    CHECK(f.mem.read_obj<uint16_t>(GuestAddress(0x3000 + 4 + 8 * 16)) == 1);  // avail_event
    CHECK(f.r32(mmio::kInterruptStatus) == interrupt::kUsedBuffer);
    CHECK(f.irq->count() == 1);
    CHECK_FALSE(f.t.needs_reset());
}

}  // namespace unit_mmio_transport_test
