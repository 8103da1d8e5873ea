// Fuzz target: virtio-blk request handling (virtio/block/block_device.h, request.h) on fuzzed
// descriptor chains, with an in-memory backend (tests/unit/virtio/fake_block_backend.h) that
// can hold requests, refuse them (queue depth) or fail them. The input is the drive's options
// and the features the driver accepts, then a sequence of driver actions (chains, raw bytes:
// request headers, discard segments), kicks, backend actions (hold, release, depth, errors),
// configuration space accesses and resets with another feature set.
//
// Oracles besides the sanitizers and the guard pages: every I/O the device hands the backend
// lies in guest memory (each iovec inside one region) and inside the disk; the used index never
// runs ahead of what was made available.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tests/fuzz/virtio_fuzz.h"
#include "tests/unit/virtio/fake_block_backend.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/block/block_device.h"
#include "virtio/block/request.h"

using embervm::fuzz::check;
using embervm::fuzz::FuzzInput;
using embervm::virtio::Activation;
using embervm::virtio::Queue;
using embervm::virtio::block::BlockBackend;
using embervm::virtio::block::BlockDevice;
using embervm::virtio::block::BlockDeviceOptions;
using embervm::virtio::block::IoCompletion;
using embervm::virtio::block::IoEngine;
using embervm::virtio::block::IoRequest;
using embervm::virtio::testing::FakeBlockBackend;
using embervm::virtio::testing::FakeInterrupt;
namespace feature = embervm::virtio::feature;

namespace {

constexpr size_t kMaxOps = 96;

// Checks each request on its way to the fake: its buffers are guest memory, its range the disk.
class CheckingBackend final : public BlockBackend {
public:
    explicit CheckingBackend(FakeBlockBackend& fake) : fake_(fake) {}
    uint64_t size_bytes() const override { return fake_.size_bytes(); }
    bool read_only() const override { return fake_.read_only(); }
    IoEngine engine() const override { return fake_.engine(); }
    bool submit(IoRequest r) override {
        uint64_t bytes = 0;
        for (const iovec& v : r.iov) {
            check(embervm::fuzz::device_memory().host_inside(v.iov_base, v.iov_len), "block I/O buffer outside guest memory");
            bytes += v.iov_len;
        }
        const uint64_t len = r.op == IoRequest::Op::Read || r.op == IoRequest::Op::Write ? bytes : r.length;
        if (r.op != IoRequest::Op::Flush) {
            check(r.offset <= size_bytes() && len <= size_bytes() - r.offset, "block I/O beyond the end of the disk");
        }
        check(r.op != IoRequest::Op::Write || !read_only(), "a write reached a read-only backend");
        return fake_.submit(std::move(r));
    }
    void flush_submissions() override { fake_.flush_submissions(); }
    int completion_fd() const override { return fake_.completion_fd(); }
    std::vector<IoCompletion> reap_completions() override { return fake_.reap_completions(); }
    size_t in_flight() const override { return fake_.in_flight(); }

private:
    FakeBlockBackend& fake_;
};

class BlkFuzzer {
public:
    BlkFuzzer(const embervm::memory::GuestMemory& mem, FuzzInput& input) : mem_(mem), in_(input), ring_(mem, 0) {}

    void run() {
        const uint8_t opts = in_.u8();
        // Up to 32 KiB: the fake fills its disk for every input, which dominated the time per input.
        const uint64_t sectors = 1 + in_.u8() % 64;
        const auto id_bytes = in_.bytes(in_.below(24));
        BlockDeviceOptions o{std::string(id_bytes.begin(), id_bytes.end()), (opts & 1) != 0, (opts & 2) != 0};
        // A read-only drive has a read-only backend (the VMM opens it so).
        fake_ = std::make_unique<FakeBlockBackend>(sectors * embervm::virtio::block::kSectorSize, o.read_only);
        dev_ = std::make_unique<BlockDevice>(std::make_unique<CheckingBackend>(*fake_), o);
        activate();
        for (size_t n = 0; n < kMaxOps && !in_.empty(); n++) step();
        fake_->release_held();  // the device's destructor waits for held requests
        dev_.reset();
    }

private:
    void activate() {
        // The driver accepts a subset of the offered features (the transport enforces that).
        const uint64_t acked = embervm::fuzz::accept_features(in_, *dev_);
        irq_ = FakeInterrupt{};
        queue_.reset();
        ring_.configure(queue_, in_.u8(), (acked & feature::kRingEventIdx) != 0, (acked & feature::kRingIndirectDesc) != 0);
        dev_->activate(Activation{mem_, std::span<Queue>(&queue_, 1), acked, irq_});
    }

    void step() {
        switch (in_.below(8)) {
            case 0:
            case 1:
            case 2:
                ring_.act(in_);
                break;
            case 3:
                kick();
                break;
            case 4:
                switch (in_.below(4)) {
                    case 0: fake_->hold = !fake_->hold; break;
                    case 1: fake_->release_held(); kick(); break;
                    case 2: fake_->depth = 1 + in_.below(8); break;
                    default: fake_->fail_with = in_.flag() ? -EIO : 0; break;
                }
                break;
            case 5:
                embervm::fuzz::config_access(in_, *dev_, 256);
                break;
            case 6:
                // The driver resets the device (the transport waits for nothing: the device
                // finishes its requests in flight itself) and sets it up again.
                fake_->hold = false;
                fake_->release_held();
                dev_->reset();
                activate();
                break;
            default:
                dev_->counters();
                dev_->capacity_sectors();
                break;
        }
    }

    void kick() {
        embervm::fuzz::kick(*dev_, 0, irq_);
        embervm::fuzz::check_used_within_taken(std::span(&queue_, 1), irq_);
    }

    const embervm::memory::GuestMemory& mem_;
    FuzzInput& in_;
    embervm::fuzz::RingDriver ring_;
    Queue queue_{embervm::virtio::block::kQueueSize};
    FakeInterrupt irq_;
    std::unique_ptr<FakeBlockBackend> fake_;
    std::unique_ptr<BlockDevice> dev_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return embervm::fuzz::run_device_target<BlkFuzzer>(data, size);
}
