// Tests for virtio/watchdog (StallWatchdog) and Queue::progress(): a completion the driver never
// takes and a request stuck in the backend are reported once, with the clock driven by the test.
#include <catch2/catch.hpp>

#include <chrono>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"
#include "virtio/watchdog.h"

#include "ring_driver.h"

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using namespace std::chrono_literals;

namespace {

using Clock = StallWatchdog::Clock;

QueueProgress queue_at(uint16_t avail, uint16_t used, std::optional<uint16_t> used_event, uint16_t size = 16) {
    QueueProgress q;
    q.size = size;
    q.avail_idx = avail;
    q.next_avail = avail;
    q.used_idx = used;
    q.used_event = used_event;
    return q;
}

DeviceProgress device_with(std::vector<QueueProgress> queues) {
    DeviceProgress p;
    p.queues = std::move(queues);
    return p;
}

}  // namespace

TEST_CASE("watchdog: unacknowledged completions follow used_event", "[virtio][watchdog]") {
    CHECK(unacknowledged_completions(queue_at(5, 5, 5)) == 0);   // the driver waits for entry 5
    CHECK(unacknowledged_completions(queue_at(6, 6, 5)) == 1);   // entry 5 is there
    CHECK(unacknowledged_completions(queue_at(9, 9, 5)) == 4);
    CHECK(unacknowledged_completions(queue_at(9, 9, 12)) == 0);  // the driver asked for later
    CHECK(unacknowledged_completions(queue_at(2, 2, 65534)) == 4);  // across the wrap
    CHECK(unacknowledged_completions(queue_at(40, 40, 5)) == 0);    // more than a ring: not a position
    CHECK(unacknowledged_completions(queue_at(9, 9, std::nullopt)) == 0);  // no EVENT_IDX: unknown
}

TEST_CASE("watchdog: a driver that does not take its completions is reported once per stall", "[virtio][watchdog]") {
    StallWatchdog w("virtio-test", 10s, 3s);
    const auto t0 = Clock::now();
    const auto stuck = device_with({queue_at(7, 7, 6)});

    CHECK(w.check(stuck, t0, true).empty());
    CHECK(w.check(stuck, t0 + 2s, true).empty());
    const auto warnings = w.check(stuck, t0 + 3s, true);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("virtio-test: queue 0: the driver has not taken 1 completion for 3.0 s") == 0);
    CHECK(w.report().driver_stalls == 1);
    CHECK(w.report().stalled_queues == 1);
    CHECK(w.check(stuck, t0 + 10s, true).empty());  // the same stall: no second warning
    CHECK(w.report().driver_stalls == 1);
    CHECK(w.report().stalled_queues == 1);

    // The driver takes them (used_event moves): the stall is over.
    CHECK(w.check(device_with({queue_at(7, 7, 7)}), t0 + 11s, true).empty());
    CHECK(w.report().stalled_queues == 0);
    // A new one later is a new stall.
    const auto again = device_with({queue_at(8, 8, 7)});
    CHECK(w.check(again, t0 + 12s, true).empty());
    CHECK(w.check(again, t0 + 15s, true).size() == 1);
    CHECK(w.report().driver_stalls == 2);
}

TEST_CASE("watchdog: a driver that keeps moving, or a paused guest, is no stall", "[virtio][watchdog]") {
    StallWatchdog w("virtio-test", 10s, 3s);
    const auto t0 = Clock::now();
    // Completions stay unacknowledged, but the driver keeps adding buffers (polling).
    for (int i = 0; i < 10; i++) {
        CHECK(w.check(device_with({queue_at(static_cast<uint16_t>(10 + i), 10, 6)}), t0 + i * 1s, true).empty());
    }
    // Paused: the guest cannot take them; the clock starts again on resume.
    const auto stuck = device_with({queue_at(20, 20, 18)});
    CHECK(w.check(stuck, t0 + 20s, false).empty());
    CHECK(w.check(stuck, t0 + 40s, false).empty());
    CHECK(w.check(stuck, t0 + 41s, true).empty());
    CHECK(w.check(stuck, t0 + 43s, true).empty());
    CHECK(w.check(stuck, t0 + 44s, true).size() == 1);
    // Without EVENT_IDX nothing can be said about the driver.
    StallWatchdog plain("virtio-test", 10s, 3s);
    for (int i = 0; i < 10; i++) {
        CHECK(plain.check(device_with({queue_at(3, 3, std::nullopt)}), t0 + i * 10s, true).empty());
    }
    CHECK(plain.report().driver_stalls == 0);
}

TEST_CASE("watchdog: a request stuck in the backend is warned about every period", "[virtio][watchdog]") {
    StallWatchdog w("virtio-test", 5s, 3s);
    const auto t0 = Clock::now();
    DeviceProgress p;
    p.in_flight = 3;
    p.oldest_submitted = t0;
    CHECK(w.check(p, t0 + 1s, true).empty());
    CHECK(w.report().in_flight == 3);
    REQUIRE(w.report().oldest_in_flight);
    CHECK(*w.report().oldest_in_flight == 1000ms);
    const auto first = w.check(p, t0 + 5s, true);
    REQUIRE(first.size() == 1);
    CHECK(first[0] == "virtio-test: a request has been in the backend for 5.0 s (3 in flight)");
    CHECK(w.check(p, t0 + 9s, true).empty());
    CHECK(w.check(p, t0 + 10s, true).size() == 1);
    CHECK(w.report().slow_request_warnings == 2);
    // Done: nothing in flight, no age.
    CHECK(w.check(DeviceProgress{}, t0 + 11s, true).empty());
    CHECK(w.report().in_flight == 0);
    CHECK_FALSE(w.report().oldest_in_flight);
}

TEST_CASE("Queue::progress reads the driver's indexes without touching the queue", "[virtio][watchdog]") {
    GuestMemory mem({{GuestAddress(0), 0x10000}});
    Queue q(16);
    testing::RingDriver driver(mem, q, 0x1000, 8);
    CHECK(q.progress(mem).has_value());
    q.set_ready(false);
    CHECK_FALSE(q.progress(mem).has_value());
    q.set_ready(true);

    q.set_event_idx_enabled(true);
    const uint16_t head = driver.add({{0x8000, 16, false}});
    driver.set_used_event(0);
    auto chain = q.pop_available(mem);
    REQUIRE(chain);
    q.add_used(mem, head, 0);
    const auto p = q.progress(mem);
    REQUIRE(p);
    CHECK(p->size == 8);
    CHECK(p->avail_idx == 1);
    CHECK(p->next_avail == 1);
    CHECK(p->used_idx == 1);
    REQUIRE(p->used_event);
    CHECK(*p->used_event == 0);
    CHECK(unacknowledged_completions(*p) == 1);
    CHECK(q.next_avail() == 1);  // nothing consumed by looking

    // Rings outside guest memory: no snapshot, no exception.
    q.set_avail_ring(GuestAddress(0x20000));
    CHECK_FALSE(q.progress(mem).has_value());
}
