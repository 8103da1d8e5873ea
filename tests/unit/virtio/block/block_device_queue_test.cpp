// Tests for virtio/block/block_device: running the queue: a full backend, notification suppression.
#include <catch2/catch.hpp>

#include <cstdint>
#include <set>
#include <vector>

#include "tests/unit/virtio/block/block_harness.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_block_device_queue_test {

using namespace embervm::virtio;
using namespace embervm::virtio::block;
using namespace embervm::virtio::testing;

TEST_CASE("virtio-blk device: a full backend is retried after completions, in order", "[virtio][block][block_device]") {
    Harness h;
    h.backend->hold = true;
    h.backend->depth = 2;
    std::vector<Request> reqs;
    std::vector<std::vector<uint8_t>> written(6);
    for (uint64_t i = 0; i < 6; i++) {
        if (i % 2 == 0) {
            written[i] = h.fill_pattern(kData + 0x1000 * i, 512, static_cast<uint8_t>(i));
            reqs.push_back(h.request(req::kOut, 10 + i, {R(kData + 0x1000 * i, 512)}));
        } else {
            reqs.push_back(h.request(req::kIn, 10 + i - 1, {W(kData + 0x1000 * i, 512)}));  // reads the write before
        }
    }
    h.notify();
    CHECK(h.backend->held() == 2);
    CHECK(h.backend->refused >= 1);
    CHECK(h.used_idx() == 0);
    // A kick while full neither duplicates nor loses requests.
    h.notify();
    CHECK(h.backend->held() == 2);
    CHECK(h.backend->log.size() == 2);

    for (int round = 0; round < 10 && h.used_idx() < 6; round++) h.complete_held();
    REQUIRE(h.used_idx() == 6);
    REQUIRE(h.backend->log.size() == 6);
    std::set<uint64_t> tags;
    for (uint16_t i = 0; i < 6; i++) {
        INFO("request " << i);
        CHECK(h.status(reqs[i]) == blk_status::kOk);
        CHECK(h.used(i).first == reqs[i].head);  // completed in submission order
        CHECK(h.used(i).second == (i % 2 == 0 ? 1u : 513u));
        CHECK(h.backend->log[i].offset == (10 + i - i % 2) * 512ULL);
        tags.insert(h.backend->log[i].user_data);
    }
    CHECK(tags.size() == 6);
    for (uint64_t i = 1; i < 6; i += 2) CHECK(h.bytes(kData + 0x1000 * i, 512) == written[i - 1]);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: a full backend that completes inline drains the queue in one kick",
          "[virtio][block][block_device]") {
    // Completions are ready at submit() but not reaped: the device reaps them itself and
    // goes round again instead of waiting for an event that was already consumed.
    Harness h;
    h.backend->depth = 1;
    std::vector<Request> reqs;
    for (uint64_t i = 0; i < 7; i++) reqs.push_back(h.request(req::kIn, i, {W(kData + 0x1000 * i, 512)}));
    h.notify();
    CHECK(h.used_idx() == 7);
    for (const Request& r : reqs) CHECK(h.status(r) == blk_status::kOk);
    CHECK(h.backend->refused >= 1);
    CHECK(h.backend->in_flight() == 0);
}

TEST_CASE("virtio-blk device: EVENT_IDX: interrupts only when the used index passes used_event",
          "[virtio][block][block_device]") {
    Harness h;
    REQUIRE(h.queue.event_idx_enabled());
    h.ring->set_used_event(0);
    h.request(req::kIn, 0, {W(kData, 512)});
    h.notify();
    CHECK(h.used_idx() == 1);
    CHECK(h.irq.used.size() == 1);  // 0 in (0, 1]
    // The device asks for the next kick at the next avail index it has not seen.
    CHECK(h.ring->avail_event() == 1);

    h.ring->set_used_event(3);  // interrupt when used.idx goes past 3
    h.request(req::kIn, 0, {W(kData, 512)});
    h.request(req::kIn, 1, {W(kData, 512)});
    h.notify();
    CHECK(h.used_idx() == 3);
    CHECK(h.irq.used.size() == 1);  // 3 not in (1, 3]
    CHECK(h.ring->avail_event() == 3);
    h.request(req::kIn, 2, {W(kData, 512)});
    h.notify();
    CHECK(h.used_idx() == 4);
    CHECK(h.irq.used.size() == 2);  // 3 in (3, 4]

    // With held requests the interrupt comes when the loop hands the device the completions.
    h.backend->hold = true;
    h.ring->set_used_event(4);
    h.request(req::kIn, 0, {W(kData, 512)});
    h.notify();
    CHECK(h.irq.used.size() == 2);
    h.complete_held();
    CHECK(h.used_idx() == 5);
    CHECK(h.irq.used.size() == 3);
    h.ring->set_used_event(100);
    h.request(req::kIn, 0, {W(kData, 512)});
    h.notify();
    h.complete_held();
    CHECK(h.used_idx() == 6);
    CHECK(h.irq.used.size() == 3);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk device: without EVENT_IDX: NO_INTERRUPT and NO_NOTIFY flags", "[virtio][block][block_device]") {
    Harness h({"n", false, true}, Options{.ack_mask = ~feature::kRingEventIdx});
    REQUIRE_FALSE(h.queue.event_idx_enabled());
    h.ring->set_avail_flags(kAvailFlagNoInterrupt);
    h.request(req::kIn, 0, {W(kData, 512)});
    h.notify();
    CHECK(h.used_idx() == 1);
    CHECK(h.irq.used.empty());
    CHECK((h.ring->used_flags() & kUsedFlagNoNotify) == 0);  // kicks re-enabled after the pass
    h.ring->set_avail_flags(0);
    h.request(req::kIn, 0, {W(kData, 512)});
    h.notify();
    CHECK(h.used_idx() == 2);
    CHECK(h.irq.used == std::vector<uint16_t>{0});

    // While the backend is full the device does not want kicks (it resumes on completions).
    h.backend->hold = true;
    h.backend->depth = 1;
    h.request(req::kIn, 0, {W(kData, 512)});
    h.request(req::kIn, 1, {W(kData + 0x1000, 512)});
    h.notify();
    CHECK((h.ring->used_flags() & kUsedFlagNoNotify) != 0);
    for (int i = 0; i < 4 && h.used_idx() < 4; i++) h.complete_held();
    CHECK(h.used_idx() == 4);
    CHECK((h.ring->used_flags() & kUsedFlagNoNotify) == 0);
}

}  // namespace unit_block_device_queue_test
