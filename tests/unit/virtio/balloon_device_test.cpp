// Tests for virtio/balloon/balloon_device: features, queue numbering per accepted features,
// configuration (target, driver-written actual), inflate (pages discarded and reading as zeros,
// invalid PFNs skipped), deflate, statistics (parsed, held, handed back), free page reporting,
// malformed chains and run-time target changes.
#include <catch2/catch.hpp>

#include <cstring>
#include <memory>
#include <vector>

#include "memory/guest_memory.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/balloon/balloon_device.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_balloon_device_test {

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using namespace embervm::virtio::balloon;
using embervm::virtio::testing::FakeInterrupt;
using embervm::virtio::testing::RingDriver;

namespace {

constexpr uint64_t kMemSize = 0x800000;  // 8 MiB
constexpr uint64_t kRings = 0x10000;     // queue i at kRings + 0x4000 * i
constexpr uint64_t kArrays = 0x40000;    // PFN arrays, stats buffers
constexpr uint64_t kPages = 0x400000;    // pages the guest gives away

struct Harness {
    GuestMemory mem{{{GuestAddress(0), kMemSize}}};
    std::vector<Queue> queues;
    std::vector<std::unique_ptr<RingDriver>> rings;
    FakeInterrupt irq;
    BalloonDevice dev;

    explicit Harness(BalloonOptions o, uint64_t drop = 0) : dev(o) {
        const auto sizes = dev.queue_max_sizes();
        for (size_t i = 0; i < sizes.size(); i++) queues.emplace_back(sizes[i]);
        for (size_t i = 0; i < sizes.size(); i++) {
            rings.push_back(std::make_unique<RingDriver>(mem, queues[i], kRings + 0x4000 * i, 16));
        }
        dev.activate(mem, queues, (dev.available_features() | feature::kVersion1) & ~drop, irq);
    }
    void pfns(uint16_t q, uint64_t addr, const std::vector<uint32_t>& list) {
        mem.write(GuestAddress(addr), std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(list.data()),
                                                                list.size() * 4));
        rings[q]->add({{addr, static_cast<uint32_t>(list.size() * 4), false}});
        dev.queue_notify(q);
    }
    uint32_t cfg32(uint64_t off) const {
        uint32_t v = 0;
        dev.read_config(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
        return v;
    }
};

std::vector<uint8_t> stat_entries(const std::vector<std::pair<uint16_t, uint64_t>>& entries) {
    std::vector<uint8_t> out;
    for (const auto& [tag, val] : entries) {
        uint8_t e[10];
        std::memcpy(e, &tag, 2);
        std::memcpy(e + 2, &val, 8);
        out.insert(out.end(), e, e + 10);
    }
    return out;
}

}  // namespace

TEST_CASE("balloon: features and queues follow the options", "[virtio][balloon]") {
    BalloonDevice plain({64, false, 0, false});
    CHECK((plain.available_features() & (balloon_feature::kStatsVq | balloon_feature::kDeflateOnOom |
                                         balloon_feature::kPageReporting)) == 0);
    CHECK(plain.queue_max_sizes().size() == 2);
    BalloonDevice all({64, true, 5, true});
    CHECK((all.available_features() & balloon_feature::kStatsVq) != 0);
    CHECK((all.available_features() & balloon_feature::kDeflateOnOom) != 0);
    CHECK((all.available_features() & balloon_feature::kPageReporting) != 0);
    CHECK((all.available_features() & (balloon_feature::kFreePageHint | balloon_feature::kPagePoison)) == 0);
    CHECK(all.queue_max_sizes().size() == 4);
}

TEST_CASE("balloon: configuration: target and the driver's actual", "[virtio][balloon]") {
    Harness h({64, false, 0, false});
    CHECK(h.cfg32(0) == 64 * 256);  // num_pages
    CHECK(h.cfg32(4) == 0);         // actual
    const uint32_t actual = 1234;
    h.dev.write_config(4, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&actual), 4));
    CHECK(h.cfg32(4) == 1234);
    CHECK(h.dev.actual_pages() == 1234);
    // num_pages is not driver-writable; a byte write to actual is.
    const uint32_t junk = 7;
    h.dev.write_config(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&junk), 4));
    CHECK(h.cfg32(0) == 64 * 256);
    const uint8_t b = 0;
    h.dev.write_config(5, std::span<const uint8_t>(&b, 1));
    CHECK(h.dev.actual_pages() == (1234u & ~0xff00u));

    // Run-time target: new num_pages and a configuration-change interrupt.
    h.dev.set_target_mib(16);
    CHECK(h.cfg32(0) == 16 * 256);
    CHECK(h.dev.target_mib() == 16);
    CHECK(h.irq.config == 1);
}

TEST_CASE("balloon: inflate gives pages back; invalid PFNs are skipped", "[virtio][balloon]") {
    Harness h({64, false, 0, false});
    h.mem.fill(GuestAddress(kPages), 0x10000, 0xab);
    const uint32_t base = kPages / 4096;
    // Contiguous and scattered pages, a duplicate, one beyond guest memory.
    h.pfns(0, kArrays, {base, base + 1, base + 2, base + 5, base + 5, uint32_t(kMemSize / 4096 + 3)});
    CHECK(h.rings[0]->used_idx() == 1);
    CHECK(h.irq.errors.empty());
    for (const uint32_t p : {0u, 1u, 2u, 5u}) CHECK(h.mem.read_obj<uint64_t>(GuestAddress(kPages + p * 4096ULL)) == 0);
    CHECK(h.mem.read_obj<uint8_t>(GuestAddress(kPages + 3 * 4096)) == 0xab);  // not in the list
    const auto c = h.dev.counters();
    CHECK(c.inflated_pages == 6);
    CHECK(c.discarded_bytes == 4 * 4096);
    CHECK(c.invalid_pfns == 1);
    CHECK(h.irq.used == std::vector<uint16_t>{0});

    // Deflate: accepted and counted, nothing else to do.
    h.pfns(1, kArrays + 0x1000, {base, base + 1});
    CHECK(h.rings[1]->used_idx() == 1);
    CHECK(h.dev.counters().deflated_pages == 2);
}

TEST_CASE("balloon: malformed inflate chains put the device into NEEDS_RESET", "[virtio][balloon]") {
    SECTION("length not a multiple of 4") {
        Harness h({64, false, 0, false});
        h.rings[0]->add({{kArrays, 6, false}});
        h.dev.queue_notify(0);
        REQUIRE(h.irq.errors.size() == 1);
        CHECK(h.rings[0]->used_idx() == 0);
    }
    SECTION("a device-writable descriptor") {
        Harness h({64, false, 0, false});
        h.rings[1]->add({{kArrays, 8, true}});
        h.dev.queue_notify(1);
        REQUIRE(h.irq.errors.size() == 1);
    }
    SECTION("an array outside guest memory") {
        Harness h({64, false, 0, false});
        h.rings[0]->add({{kMemSize - 4, 8, false}});
        h.dev.queue_notify(0);
        REQUIRE(h.irq.errors.size() == 1);
    }
}

TEST_CASE("balloon: queue numbering follows the accepted features", "[virtio][balloon]") {
    SECTION("statistics refused, reporting accepted: reporting is queue 2") {
        Harness h({64, false, 1, true}, balloon_feature::kStatsVq);
        h.mem.fill(GuestAddress(kPages), 0x2000, 0xcd);
        h.rings[2]->add({{kPages, 0x2000, true}});
        h.dev.queue_notify(2);
        CHECK(h.rings[2]->used_idx() == 1);
        CHECK(h.mem.read_obj<uint8_t>(GuestAddress(kPages + 0x1fff)) == 0);
        CHECK(h.dev.counters().reported_ranges == 1);
        CHECK(h.irq.errors.empty());
    }
    SECTION("both: statistics queue 2, reporting queue 3") {
        Harness h({64, false, 1, true});
        h.mem.fill(GuestAddress(kPages), 0x1000, 0xcd);
        h.rings[3]->add({{kPages, 0x1000, true}, {kPages + 0x800, 0x800, true}});  // 2nd: unaligned, skipped
        h.dev.queue_notify(3);
        CHECK(h.rings[3]->used_idx() == 1);
        CHECK(h.mem.read_obj<uint8_t>(GuestAddress(kPages)) == 0);
        CHECK(h.dev.counters().reported_ranges == 2);
        CHECK(h.dev.counters().discarded_bytes == 0x1000);
    }
}

TEST_CASE("balloon: statistics are parsed, held and handed back", "[virtio][balloon]") {
    Harness h({64, false, 1, false});
    CHECK_FALSE(h.dev.stats());
    CHECK_FALSE(h.dev.request_stats());  // nothing held yet
    auto buf = stat_entries({{4, 100 << 20}, {5, 256 << 20}, {6, 120 << 20}, {99, 1}, {0, 7}});
    buf.push_back(0xff);  // a truncated trailing entry is ignored
    h.mem.write(GuestAddress(kArrays), buf);
    h.rings[2]->add({{kArrays, static_cast<uint32_t>(buf.size()), false}});
    h.dev.queue_notify(2);
    CHECK(h.rings[2]->used_idx() == 0);  // held
    const auto s = h.dev.stats();
    REQUIRE(s);
    CHECK(s->free_memory == uint64_t{100} << 20);
    CHECK(s->total_memory == uint64_t{256} << 20);
    CHECK(s->available_memory == uint64_t{120} << 20);
    CHECK(s->swap_in == 7u);
    CHECK_FALSE(s->major_faults);

    CHECK(h.dev.request_stats());
    CHECK(h.rings[2]->used_idx() == 1);
    CHECK(h.irq.used == std::vector<uint16_t>{2});
    CHECK_FALSE(h.dev.request_stats());  // handed back already

    // A device-writable statistics buffer is malformed.
    h.rings[2]->add({{kArrays, 10, true}});
    h.dev.queue_notify(2);
    CHECK(h.irq.errors.size() == 1);
}

TEST_CASE("balloon: buffers queued before activation are processed at activation", "[virtio][balloon]") {
    GuestMemory mem({{GuestAddress(0), kMemSize}});
    BalloonDevice dev({64, false, 1, false});
    std::vector<Queue> queues;
    for (const auto sz : dev.queue_max_sizes()) queues.emplace_back(sz);
    std::vector<std::unique_ptr<RingDriver>> rings;
    for (size_t i = 0; i < queues.size(); i++) {
        rings.push_back(std::make_unique<RingDriver>(mem, queues[i], kRings + 0x4000 * i, 16));
    }
    const auto buf = stat_entries({{5, 64 << 20}});
    mem.write(GuestAddress(kArrays), buf);
    rings[2]->add({{kArrays, static_cast<uint32_t>(buf.size()), false}});  // kicked before DRIVER_OK
    FakeInterrupt irq;
    dev.activate(mem, queues, dev.available_features() | feature::kVersion1, irq);
    REQUIRE(dev.stats());
    CHECK(dev.stats()->total_memory == uint64_t{64} << 20);
    dev.reset();
    CHECK_FALSE(dev.request_stats());  // the held buffer was forgotten
    CHECK(dev.actual_pages() == 0);
}

}  // namespace unit_balloon_device_test
