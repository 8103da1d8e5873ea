// Tests for virtio/device_base: a device subscribes its queue eventfds, its other event sources
// and its timer on the event loop when activated and drops them on reset; a kick written to a
// queue eventfd reaches the device through the loop (also one written before the watch
// existed); a broken, reset or destroyed device sees nothing.
#include <catch2/catch.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "memory/guest_memory.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/device_base.h"
#include "vmm/sys/event_loop.h"
#include "vmm/sys/eventfd.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_device_base_test {

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using embervm::virtio::testing::FakeInterrupt;

namespace {

class RecordingDevice : public DeviceBase {
public:
    uint32_t device_type() const override { return 0x7f; }
    uint64_t available_features() const override { return 0; }
    std::vector<uint16_t> queue_max_sizes() const override { return {8, 8}; }
    void read_config(uint64_t, std::span<uint8_t>) const override {}
    void write_config(uint64_t, std::span<const uint8_t>) override {}
    std::string name() const override { return "virtio-recording"; }
    DeviceProgress progress() const override { return {}; }
    nlohmann::json metrics_json() const override { return {{"kicks", kicks.size()}}; }
    void log_counters() const override {}

    std::vector<uint16_t> kicks;
    int source_events = 0;
    int timer_events = 0;
    int resets = 0;
    bool keep_watching_source = true;
    std::optional<std::chrono::nanoseconds> interval;
    embervm::vmm::EventFd source;

private:
    void on_activate_locked(const Activation&) override {}
    void on_queue_locked(uint16_t q) override { kicks.push_back(q); }
    void on_reset_locked() override { resets++; }
    std::vector<EventSource> event_sources_locked() override {
        return {EventSource{source.fd(), [this] {
                                source_events++;
                                if (keep_watching_source) source.consume();
                                return keep_watching_source;
                            }}};
    }
    std::optional<std::chrono::nanoseconds> timer_interval_locked() const override { return interval; }
    void on_timer_locked() override { timer_events++; }
};

struct Fixture {
    boost::asio::io_context io;
    embervm::vmm::EventLoop loop{io};
    GuestMemory mem{{{GuestAddress(0), 0x10000}}};
    std::vector<Queue> queues;
    std::vector<embervm::vmm::EventFd> events;
    std::vector<int> event_fds;
    FakeInterrupt irq;
    std::shared_ptr<RecordingDevice> dev = std::make_shared<RecordingDevice>();

    Fixture() {
        for (int i = 0; i < 2; i++) {
            queues.emplace_back(8);
            queues.back().set_ready(true);
            events.emplace_back();
            event_fds.push_back(events.back().fd());
        }
    }
    void activate() { dev->activate(Activation{mem, queues, 0, irq, event_fds, &loop}); }
    // Runs the loop until `done` or a second has passed.
    void run_until(const std::function<bool()>& done) {
        const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        while (!done() && std::chrono::steady_clock::now() < end) {
            io.restart();
            io.run_for(std::chrono::milliseconds(5));
        }
    }
    void settle() {
        io.restart();
        io.run_for(std::chrono::milliseconds(50));
    }
};

}  // namespace

TEST_CASE("DeviceBase: a queue eventfd kick reaches the activated device through the loop", "[virtio][device_base]") {
    Fixture f;
    f.events[1].signal();  // before the activation and its watch: seen once watched
    f.activate();
    f.run_until([&] { return !f.dev->kicks.empty(); });
    CHECK(f.dev->kicks == std::vector<uint16_t>{1});
    f.events[0].signal();
    f.run_until([&] { return f.dev->kicks.size() == 2; });
    CHECK(f.dev->kicks == std::vector<uint16_t>{1, 0});
    // The kick was consumed: nothing more comes.
    f.settle();
    CHECK(f.dev->kicks.size() == 2);
    // The transport's path (a QueueNotify write without ioeventfd) reaches it too.
    f.dev->queue_notify(0);
    CHECK(f.dev->kicks.size() == 3);
}

TEST_CASE("DeviceBase: reset drops the subscriptions", "[virtio][device_base]") {
    Fixture f;
    f.activate();
    f.settle();
    f.dev->reset();
    CHECK(f.dev->resets == 1);
    f.events[0].signal();
    f.dev->source.signal();
    f.settle();
    CHECK(f.dev->kicks.empty());
    CHECK(f.dev->source_events == 0);
    f.dev->queue_notify(0);  // not activated: ignored
    CHECK(f.dev->kicks.empty());
    // A new activation watches again, and the kick written meanwhile is not lost.
    f.activate();
    f.run_until([&] { return !f.dev->kicks.empty() && f.dev->source_events > 0; });
    CHECK(f.dev->kicks == std::vector<uint16_t>{0});
    CHECK(f.dev->source_events == 1);
}

TEST_CASE("DeviceBase: reset and activation before the loop ran leave one set of watches", "[virtio][device_base]") {
    Fixture f;
    f.activate();
    f.dev->reset();
    f.activate();
    f.events[0].signal();
    f.run_until([&] { return !f.dev->kicks.empty(); });
    f.settle();
    CHECK(f.dev->kicks == std::vector<uint16_t>{0});
}

TEST_CASE("DeviceBase: a broken device takes no kick and stops watching its sources", "[virtio][device_base]") {
    Fixture f;
    f.activate();
    f.settle();
    f.irq.device_error("test");
    f.events[0].signal();
    f.dev->source.signal();
    f.settle();
    CHECK(f.dev->kicks.empty());
    CHECK(f.dev->source_events == 0);
    f.dev->queue_notify(0);
    CHECK(f.dev->kicks.empty());
}

TEST_CASE("DeviceBase: a source whose handler returns false is paused until resubscribed", "[virtio][device_base]") {
    Fixture f;
    f.dev->keep_watching_source = false;  // and leaves the eventfd readable
    f.activate();
    f.dev->source.signal();
    f.run_until([&] { return f.dev->source_events > 0; });
    f.settle();
    CHECK(f.dev->source_events == 1);  // not again and again
    f.dev->reset();
    f.dev->keep_watching_source = true;
    f.activate();
    f.run_until([&] { return f.dev->source_events == 2; });
    CHECK(f.dev->source_events == 2);
}

TEST_CASE("DeviceBase: the device's timer runs while activated", "[virtio][device_base]") {
    Fixture f;
    f.dev->interval = std::chrono::milliseconds(1);
    f.activate();
    f.run_until([&] { return f.dev->timer_events >= 2; });
    CHECK(f.dev->timer_events >= 2);
    f.dev->reset();
    f.settle();
    const int after_reset = f.dev->timer_events;
    f.settle();
    CHECK(f.dev->timer_events == after_reset);
}

TEST_CASE("DeviceBase: a device destroyed with a kick pending is not called", "[virtio][device_base]") {
    Fixture f;
    f.activate();
    f.settle();
    f.events[0].signal();
    f.dev->reset();
    const std::weak_ptr<RecordingDevice> gone = f.dev;
    f.dev.reset();  // the subscriptions' sync is still queued on the loop
    f.settle();     // runs it against a device that is gone
    CHECK(gone.expired());
    // The watches went with the device: nobody read the kick.
    CHECK(f.events[0].consume() == 1);
}

}  // namespace unit_device_base_test
