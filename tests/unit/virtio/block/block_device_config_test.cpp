// Tests for virtio/block/block_device: the features it offers and its configuration space.
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tests/unit/virtio/block/block_harness.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_block_device_config_test {

using namespace embervm::virtio;
using namespace embervm::virtio::block;
using namespace embervm::virtio::testing;

TEST_CASE("virtio-blk device: identity and features follow the options", "[virtio][block][block_device]") {
    struct Case {
        bool ro_option, ro_backend, flush;
    };
    const Case c = GENERATE(Case{false, false, false}, Case{false, false, true}, Case{true, false, false},
                            Case{true, false, true}, Case{false, true, true});
    INFO("ro_option " << c.ro_option << " ro_backend " << c.ro_backend << " flush " << c.flush);
    Harness h({"disk7", c.ro_option, c.flush}, Options{.ro_backend = c.ro_backend});
    CHECK(h.dev->device_type() == 2);
    CHECK(h.dev->queue_max_sizes() == std::vector<uint16_t>{256});
    CHECK(h.dev->name().find("disk7") != std::string::npos);

    const uint64_t f = h.dev->available_features();
    const bool ro = c.ro_option || c.ro_backend;
    // Always: SEG_MAX, BLK_SIZE, EVENT_IDX, INDIRECT_DESC.
    CHECK((f & feature_bit(2)) != 0);
    CHECK((f & feature_bit(6)) != 0);
    CHECK((f & feature_bit(28)) != 0);
    CHECK((f & feature_bit(29)) != 0);
    CHECK(((f & feature_bit(5)) != 0) == ro);             // RO
    CHECK(((f & feature_bit(9)) != 0) == c.flush);        // FLUSH only with options.flush
    CHECK(((f & feature_bit(13)) != 0) == !ro);           // DISCARD
    CHECK(((f & feature_bit(14)) != 0) == !ro);           // WRITE_ZEROES
    // Nothing else: no SIZE_MAX, GEOMETRY, TOPOLOGY, MQ, CONFIG_WCE, packed ring, ...
    const uint64_t known = feature_bit(2) | feature_bit(5) | feature_bit(6) | feature_bit(9) | feature_bit(13) |
                           feature_bit(14) | feature_bit(28) | feature_bit(29);
    CHECK((f & ~known) == 0);
}

TEST_CASE("virtio-blk device: configuration space, byte by byte and at every width", "[virtio][block][block_device]") {
    // 1000 sectors and a partial one: capacity rounds down.
    const bool ro = GENERATE(false, true);
    Harness h({"cfg", ro, true}, Options{.disk_bytes = 1000 * 512 + 300});
    CHECK(h.dev->capacity_sectors() == 1000);

    std::array<uint8_t, 60> want{};
    const auto put = [&](size_t off, uint64_t v, size_t n) {
        for (size_t i = 0; i < n; i++) want[off + i] = static_cast<uint8_t>(v >> (8 * i));
    };
    put(0, 1000, 8);               // capacity
    put(12, 254, 4);               // seg_max: queue size 256 minus header and status
    put(20, 512, 4);               // blk_size
    put(34, 1, 2);                 // num_queues
    put(36, kMaxDiscardSectors, 4);  // max_discard_sectors
    put(40, 1, 4);                 // max_discard_seg
    put(44, 1, 4);                 // discard_sector_alignment
    put(48, kMaxDiscardSectors, 4);  // max_write_zeroes_sectors
    put(52, 1, 4);                 // max_write_zeroes_seg
    put(56, 1, 1);                 // write_zeroes_may_unmap

    for (size_t off = 0; off < 64 + 8; off++) {
        INFO("offset " << off);
        uint8_t b = 0xaa;
        h.dev->read_config(off, std::span<uint8_t>(&b, 1));
        CHECK(b == (off < want.size() ? want[off] : 0));
    }
    for (const size_t width : {2u, 4u, 8u}) {
        for (size_t off = 0; off + width <= 72; off += width) {
            INFO("offset " << off << " width " << width);
            std::array<uint8_t, 8> got{};
            got.fill(0xaa);
            h.dev->read_config(off, std::span<uint8_t>(got.data(), width));
            for (size_t i = 0; i < width; i++) CHECK(got[i] == (off + i < want.size() ? want[off + i] : 0));
        }
    }
    // Far beyond the end: zeros.
    uint64_t far = ~uint64_t{0};
    h.dev->read_config(0x1000, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&far), 8));
    CHECK(far == 0);

    // Writes are ignored everywhere (writeback needs CONFIG_WCE, not offered).
    std::array<uint8_t, 8> junk;
    junk.fill(0x5c);
    for (size_t off = 0; off < 64; off += 4) h.dev->write_config(off, std::span<const uint8_t>(junk.data(), 4));
    std::array<uint8_t, 60> after{};
    h.dev->read_config(0, after);
    CHECK(after == want);
}

}  // namespace unit_block_device_config_test
