// Tests for BlockDevice::counters() (virtio/block/block_device): every request type, bytes,
// IOERR and UNSUPP completions and NEEDS_RESET, through the real backends on a temporary image;
// io_uring at queue depth 2 makes the device meet a full backend, whose refused requests must
// not be counted twice.
#include <catch2/catch.hpp>

#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/block/backend.h"
#include "virtio/block/block_device.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"

#include "ring_driver.h"

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using namespace embervm::virtio::block;
using embervm::virtio::testing::Buf;

namespace {

constexpr uint64_t kRings = 0x1000;     // descriptors, available and used ring
constexpr uint64_t kHeaders = 0x8000;   // request headers, 16 apart
constexpr uint64_t kStatus = 0xa000;    // status bytes, 16 apart
constexpr uint64_t kData = 0x10000;
constexpr uint64_t kDiskBytes = 64 * kSectorSize;

struct Header {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};
struct Segment {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};

class TempImage {
public:
    TempImage() {
        char tmpl[] = "/tmp/embervm-blk-counters-XXXXXX";
        const int fd = mkstemp(tmpl);
        REQUIRE(fd >= 0);
        REQUIRE(ftruncate(fd, kDiskBytes) == 0);
        close(fd);
        path_ = tmpl;
    }
    ~TempImage() { unlink(path_.c_str()); }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

struct Harness {
    GuestMemory mem{{{GuestAddress(0), 0x100000}}};
    Queue queue{kQueueSize};
    testing::FakeInterrupt irq;
    std::unique_ptr<BlockDevice> dev;
    std::unique_ptr<testing::RingDriver> ring;
    unsigned requests = 0;

    Harness(const std::string& path, IoEngine engine, unsigned depth) {
        dev = std::make_unique<BlockDevice>(open_block_backend(path, false, engine, depth),
                                            BlockDeviceOptions{"counted", false, true});
        ring = std::make_unique<testing::RingDriver>(mem, queue, kRings, 64);
        // Plain rings: no EVENT_IDX or indirect descriptors.
        const uint64_t acked =
            (dev->available_features() | feature::kVersion1) & ~(feature::kRingEventIdx | feature::kRingIndirectDesc);
        dev->activate(mem, std::span<Queue>(&queue, 1), acked, irq);
    }

    // header, `data`, status byte; returns the status byte's address.
    uint64_t add(uint32_t type, uint64_t sector, std::vector<Buf> data) {
        const uint64_t header = kHeaders + 16ULL * requests;
        const uint64_t status = kStatus + 16ULL * requests;
        requests++;
        mem.write_obj(GuestAddress(header), Header{type, 0, sector});
        mem.write_obj<uint8_t>(GuestAddress(status), 0xee);
        std::vector<Buf> bufs{{header, 16, false}};
        bufs.insert(bufs.end(), data.begin(), data.end());
        bufs.push_back({status, 1, true});
        ring->add(bufs);
        return status;
    }

    // Kicks the queue, then serves completions until `n` requests are used.
    void run(uint16_t n) {
        dev->queue_notify(0);
        for (int i = 0; i < 500 && ring->used_idx() < n; i++) {
            pollfd pfd{dev->backend_completion_fd(), POLLIN, 0};
            poll(&pfd, 1, 10);
            dev->process_completions();
        }
        REQUIRE(ring->used_idx() == n);
    }

    uint8_t status(uint64_t addr) const { return mem.read_obj<uint8_t>(GuestAddress(addr)); }
};

}  // namespace

TEST_CASE("virtio-blk counters: requests by type, bytes, IOERR and UNSUPP", "[virtio][blk][metrics]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO(to_string(engine));
    TempImage image;
    Harness h(image.path(), engine, 2);  // depth 2: the async backend is full most of the time
    CHECK(h.dev->counters().read_requests == 0);

    std::vector<uint64_t> ok;
    for (uint64_t i = 0; i < 3; i++) ok.push_back(h.add(req::kOut, 4 * i, {{kData + 0x1000 * i, 1024, false}}));
    for (uint64_t i = 0; i < 2; i++) ok.push_back(h.add(req::kIn, 4 * i, {{kData + 0x8000 + 0x1000 * i, 512, true}}));
    ok.push_back(h.add(req::kFlush, 0, {}));
    ok.push_back(h.add(req::kGetId, 0, {{kData + 0x10000, 20, true}}));
    h.mem.write_obj(GuestAddress(kData + 0x11000), Segment{8, 2, 0});
    ok.push_back(h.add(req::kDiscard, 0, {{kData + 0x11000, 16, false}}));
    h.mem.write_obj(GuestAddress(kData + 0x12000), Segment{10, 1, 0});
    ok.push_back(h.add(req::kWriteZeroes, 0, {{kData + 0x12000, 16, false}}));
    const uint64_t out_of_range = h.add(req::kIn, 64, {{kData + 0x13000, 512, true}});
    const uint64_t unknown = h.add(99, 0, {});
    h.run(static_cast<uint16_t>(ok.size() + 2));

    for (const uint64_t s : ok) CHECK(h.status(s) == blk_status::kOk);
    CHECK(h.status(out_of_range) == blk_status::kIoErr);
    CHECK(h.status(unknown) == blk_status::kUnsupp);
    const BlockCounters c = h.dev->counters();
    CHECK(c.write_requests == 3);
    CHECK(c.read_requests == 3);  // the out-of-range read is a read request too
    CHECK(c.flush_requests == 1);
    CHECK(c.get_id_requests == 1);
    CHECK(c.discard_requests == 1);
    CHECK(c.write_zeroes_requests == 1);
    CHECK(c.write_bytes == 3 * 1024);
    CHECK(c.read_bytes == 2 * 512);  // not the failed read's
    CHECK(c.io_errors == 1);
    CHECK(c.unsupported_requests == 1);
    CHECK(c.device_errors == 0);
    CHECK(h.irq.errors.empty());
}

TEST_CASE("virtio-blk counters: a malformed chain is one device error", "[virtio][blk][metrics]") {
    TempImage image;
    Harness h(image.path(), IoEngine::Sync, 8);
    // No device-writable buffer: there is nowhere to put the status.
    const uint64_t header = kHeaders;
    h.mem.write_obj(GuestAddress(header), Header{req::kIn, 0, 0});
    h.ring->add({{header, 16, false}});
    h.dev->queue_notify(0);
    CHECK(h.irq.errors.size() == 1);
    CHECK(h.dev->counters().device_errors == 1);
    // The device is broken until reset: another kick changes nothing.
    h.add(req::kIn, 0, {{kData, 512, true}});
    h.dev->queue_notify(0);
    CHECK(h.dev->counters().device_errors == 1);
    CHECK(h.dev->counters().read_requests == 0);
}
