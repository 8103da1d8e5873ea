// Tests for virtio/watchdog (StallWatchdog) and Queue::progress(): an interrupt the driver does not
// acknowledge is raised again and then reported, a request stuck in the backend is reported,
// with the clock driven by the test.
#include <catch2/catch.hpp>

#include <chrono>
#include <vector>

#include <fmt/format.h>

#include "memory/guest_memory.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"
#include "virtio/watchdog.h"

#include "ring_driver.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_watchdog_test {

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

WatchdogTimes times(std::chrono::milliseconds slow, std::chrono::milliseconds reraise, std::chrono::milliseconds stall) {
    WatchdogTimes t;
    t.slow_request = slow;
    t.reraise_after = reraise;
    t.driver_stall = stall;
    return t;
}

TEST_CASE("watchdog: the interrupt controller's view of the device's interrupt ends the re-raise and stall lines",
          "[virtio][watchdog]") {
    int asked = 0;
    StallWatchdog w("virtio-test", times(10s, 1s, 2s), [&] { return fmt::format("IOAPIC pin 5: ask {}", ++asked); });
    const auto t0 = Clock::now();
    const std::optional<Clock::time_point> since = t0;
    const auto p = device_with({queue_at(7, 7, 6)});
    auto r = w.check(p, since, t0 + 500ms, true);
    CHECK(r.warnings.empty());
    CHECK(asked == 0);  // asked only when there is something to log
    r = w.check(p, since, t0 + 1s, true);
    REQUIRE(r.warnings.size() == 1);
    CHECK(r.warnings[0].find("raising it again") != std::string::npos);
    CHECK(r.warnings[0].ends_with("; IOAPIC pin 5: ask 1"));
    r = w.check(p, since, t0 + 3s, true);  // driver_stall
    REQUIRE(!r.warnings.empty());
    CHECK(r.warnings.back().find("the guest stopped running its driver") != std::string::npos);
    CHECK(r.warnings.back().ends_with(fmt::format("; IOAPIC pin 5: ask {}", asked)));

    // Without one, or with an empty answer, the lines end as before.
    StallWatchdog quiet("virtio-test", times(10s, 1s, 2s), [] { return std::string(); });
    r = quiet.check(p, since, t0 + 1s, true);
    REQUIRE(r.warnings.size() == 1);
    CHECK(r.warnings[0].find("IOAPIC") == std::string::npos);
    CHECK_FALSE(r.warnings[0].ends_with("; "));
}

TEST_CASE("watchdog: an unacknowledged interrupt is raised again with growing gaps, then warned about",
          "[virtio][watchdog]") {
    StallWatchdog w("virtio-test", times(10s, 1s, 10s));
    const auto t0 = Clock::now();
    auto p = device_with({queue_at(7, 7, 6)});
    p.queues[0].index = 2;
    const std::optional<Clock::time_point> since = t0;

    auto r = w.check(p, since, t0, true);
    CHECK(r.warnings.empty());
    CHECK_FALSE(r.reraise);
    CHECK_FALSE(w.check(p, since, t0 + 500ms, true).reraise);
    r = w.check(p, since, t0 + 1s, true);  // reraise_after: raised again, logged
    CHECK(r.reraise);
    REQUIRE(r.warnings.size() == 1);
    CHECK(r.warnings[0].find("virtio-test: the driver has not acknowledged the used-buffer interrupt for 1.0 s: "
                             "raising it again (1 so far") == 0);
    CHECK(r.warnings[0].find("queue 2: 1 completion not taken (used.idx 7, used_event 6, avail.idx 7)") !=
          std::string::npos);
    // Then after 2 s, 4 s, 8 s, and at most every driver_stall (10 s).
    std::vector<int> reraised_at;
    for (int ms = 1100; ms <= 40000; ms += 100) {
        r = w.check(p, since, t0 + std::chrono::milliseconds(ms), true);
        if (r.reraise) reraised_at.push_back(ms);
    }
    CHECK(reraised_at == std::vector<int>{3000, 7000, 15000, 25000, 35000});
    CHECK(w.report().interrupts_reraised == 6);
    CHECK(w.report().driver_stalls == 1);  // warned once, at 10 s
    CHECK(w.report().stalled);

    // Acknowledged: over; a new interrupt later is a new episode from its own time.
    r = w.check(p, std::nullopt, t0 + 41s, true);
    CHECK_FALSE(r.reraise);
    CHECK_FALSE(w.report().stalled);
    const std::optional<Clock::time_point> later = t0 + 50s;
    CHECK_FALSE(w.check(p, later, t0 + 50500ms, true).reraise);
    CHECK(w.check(p, later, t0 + 51s, true).reraise);
    CHECK(w.report().interrupts_reraised == 7);
}

TEST_CASE("watchdog: the stall warning names the interrupt and the queues", "[virtio][watchdog]") {
    StallWatchdog w("virtio-test", times(10s, 1s, 3s));
    const auto t0 = Clock::now();
    const std::optional<Clock::time_point> since = t0;
    CHECK(w.check(device_with({}), since, t0 + 1s, true).reraise);
    const auto r = w.check(device_with({queue_at(9, 9, 5)}), since, t0 + 3s, true);
    REQUIRE_FALSE(r.warnings.empty());
    CHECK(r.warnings.back() ==
          "virtio-test: the driver has not acknowledged the used-buffer interrupt for 3.0 s, raised again 2 times: "
          "the guest stopped running its driver (or masks the interrupt and polls); queue 0: 4 completions not taken "
          "(used.idx 9, used_event 5, avail.idx 9)");
}

TEST_CASE("watchdog: a paused guest is not a stall; its clock starts again on resume", "[virtio][watchdog]") {
    StallWatchdog w("virtio-test", times(10s, 1s, 3s));
    const auto t0 = Clock::now();
    const std::optional<Clock::time_point> since = t0;
    CHECK_FALSE(w.check(device_with({}), since, t0 + 20s, false).reraise);
    CHECK_FALSE(w.check(device_with({}), since, t0 + 40s, false).reraise);
    CHECK_FALSE(w.check(device_with({}), since, t0 + 41s, true).reraise);  // resumed: watched from now
    CHECK_FALSE(w.check(device_with({}), since, t0 + 41500ms, true).reraise);
    CHECK(w.check(device_with({}), since, t0 + 42s, true).reraise);
    CHECK(w.report().driver_stalls == 0);
    CHECK(w.check(device_with({}), since, t0 + 44s, true).warnings.size() == 1);
    CHECK(w.report().driver_stalls == 1);
    // An acknowledged interrupt is never raised again.
    StallWatchdog quiet("virtio-test", times(10s, 1s, 3s));
    for (int i = 0; i < 10; i++) {
        const auto r = quiet.check(device_with({queue_at(3, 3, 2)}), std::nullopt, t0 + i * 10s, true);
        CHECK(r.warnings.empty());
        CHECK_FALSE(r.reraise);
    }
    CHECK(quiet.report().interrupts_reraised == 0);
}

TEST_CASE("watchdog: a line the guest masks is not raised again, counted apart, not a stall", "[virtio][watchdog]") {
    bool masked = true;
    int asked = 0;
    StallWatchdog w("virtio-test", times(10s, 1s, 3s), [] { return std::string("pin 5"); }, [&] {
        asked++;
        return masked;
    });
    const auto t0 = Clock::now();
    const std::optional<Clock::time_point> since = t0;
    std::vector<std::string> warnings;
    for (int ms = 0; ms <= 20000; ms += 100) {
        const auto r = w.check(device_with({}), since, t0 + std::chrono::milliseconds(ms), true);
        CHECK_FALSE(r.reraise);
        warnings.insert(warnings.end(), r.warnings.begin(), r.warnings.end());
    }
    CHECK(warnings.empty());
    CHECK(asked == 7);  // only when a re-raise was due: at 1, 3, 6, 9, 12, 15 and 18 s
    CHECK(w.report().interrupts_masked == static_cast<uint64_t>(asked));
    CHECK(w.report().interrupts_reraised == 0);
    CHECK(w.report().driver_stalls == 0);
    CHECK_FALSE(w.report().stalled);
    // The guest unmasks the line: the next due re-raise happens and counts as one.
    masked = false;
    bool reraised = false;
    for (int ms = 20100; ms <= 24000 && !reraised; ms += 100) {
        reraised = w.check(device_with({}), since, t0 + std::chrono::milliseconds(ms), true).reraise;
    }
    CHECK(reraised);
    CHECK(w.report().interrupts_reraised == 1);
}

TEST_CASE("watchdog: a request stuck in the backend is warned about every period", "[virtio][watchdog]") {
    StallWatchdog w("virtio-test", times(5s, 1s, 3s));
    const auto t0 = Clock::now();
    DeviceProgress p;
    p.in_flight = 3;
    p.oldest_submitted = t0;
    CHECK(w.check(p, std::nullopt, t0 + 1s, true).warnings.empty());
    CHECK(w.report().in_flight == 3);
    REQUIRE(w.report().oldest_in_flight);
    CHECK(*w.report().oldest_in_flight == 1000ms);
    const auto first = w.check(p, std::nullopt, t0 + 5s, true).warnings;
    REQUIRE(first.size() == 1);
    CHECK(first[0] == "virtio-test: a request has been in the backend for 5.0 s (3 in flight)");
    CHECK(w.check(p, std::nullopt, t0 + 9s, true).warnings.empty());
    CHECK(w.check(p, std::nullopt, t0 + 10s, true).warnings.size() == 1);
    CHECK(w.report().slow_request_warnings == 2);
    CHECK(w.report().interrupts_reraised == 0);  // a slow backend is not a lost interrupt
    // Done: nothing in flight, no age.
    CHECK(w.check(DeviceProgress{}, std::nullopt, t0 + 11s, true).warnings.empty());
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

}  // namespace unit_watchdog_test
