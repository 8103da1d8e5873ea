// Fuzz target: virtio-balloon (virtio/balloon/balloon_device.h): inflate and deflate PFN
// arrays, the statistics buffer and free page reports on fuzzed chains, against the guard-paged
// guest memory (inflated pages are really discarded from it). The input is the device's
// options and the features the driver accepts (which decide the queues' numbering), then a
// sequence of driver actions on any queue, kicks, target changes, statistics requests,
// configuration accesses and resets.
//
// Oracles besides the sanitizers and the guard pages: the counters add up (no more pages
// inflated or discarded than the chains could carry), and the target read from the
// configuration space is the one last set.
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "tests/fuzz/virtio_fuzz.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/balloon/balloon_device.h"

using embervm::fuzz::check;
using embervm::fuzz::FuzzInput;
using embervm::virtio::Activation;
using embervm::virtio::Queue;
using embervm::virtio::testing::FakeInterrupt;
using namespace embervm::virtio::balloon;
namespace feature = embervm::virtio::feature;

namespace {

constexpr size_t kMaxOps = 96;

class BalloonFuzzer {
public:
    BalloonFuzzer(const embervm::memory::GuestMemory& mem, FuzzInput& input) : mem_(mem), in_(input) {}

    void run() {
        const uint8_t opts = in_.u8();
        BalloonOptions o;
        o.amount_mib = in_.u8();
        o.deflate_on_oom = (opts & 1) != 0;
        o.stats_polling_interval_s = (opts & 2) != 0 ? 1 + in_.u8() : 0;
        o.free_page_reporting = (opts & 4) != 0;
        dev_ = std::make_unique<BalloonDevice>(o);
        const auto sizes = dev_->queue_max_sizes();
        for (size_t i = 0; i < sizes.size(); i++) {
            queues_.emplace_back(sizes[i]);
            rings_.emplace_back(mem_, static_cast<uint16_t>(i));
        }
        activate();
        for (size_t n = 0; n < kMaxOps && !in_.empty(); n++) step();
        dev_->reset();
    }

private:
    void activate() {
        const uint64_t acked = embervm::fuzz::accept_features(in_, *dev_);
        irq_ = FakeInterrupt{};
        const uint8_t sizes = in_.u8();
        for (size_t q = 0; q < queues_.size(); q++) {
            queues_[q].reset();
            // A driver sets up only the queues of the features it accepted; the others stay
            // not ready (sometimes it sets them up anyway).
            rings_[q].configure(queues_[q], static_cast<uint8_t>(sizes >> q), (acked & feature::kRingEventIdx) != 0,
                                (acked & feature::kRingIndirectDesc) != 0);
            if (q >= 2 && (sizes & 0x80) == 0) {
                const bool wanted = q == 2 ? (acked & (balloon_feature::kStatsVq | balloon_feature::kPageReporting)) != 0
                                           : (acked & balloon_feature::kStatsVq) != 0 && (acked & balloon_feature::kPageReporting) != 0;
                queues_[q].set_ready(wanted);
            }
        }
        dev_->activate(Activation{mem_, std::span<Queue>(queues_), acked, irq_});
    }

    void step() {
        switch (in_.below(8)) {
            case 0:
            case 1:
            case 2:
                rings_[in_.below(rings_.size())].act(in_);
                break;
            case 3:
                embervm::fuzz::kick(*dev_, static_cast<uint16_t>(in_.below(queues_.size())), irq_);
                break;
            case 4: {
                const uint64_t mib = in_.u16();
                dev_->set_target_mib(mib);
                check(dev_->target_mib() == mib || mib > UINT32_MAX / 256, "set_target_mib: target not kept");
                break;
            }
            case 5:
                dev_->request_stats();
                dev_->stats();
                break;
            case 6:
                dev_->reset();
                activate();
                break;
            default:
                embervm::fuzz::config_access(in_, *dev_, 16);
                break;
        }
        const BalloonCounters c = dev_->counters();
        check(c.discarded_bytes <= mem_.total_size() * (c.inflated_pages + c.reported_ranges + 1),
              "more bytes discarded than guest memory holds per page or range given");
        embervm::fuzz::check_used_within_taken(queues_, irq_);
    }

    const embervm::memory::GuestMemory& mem_;
    FuzzInput& in_;
    std::vector<Queue> queues_;
    std::vector<embervm::fuzz::RingDriver> rings_;
    FakeInterrupt irq_;
    std::unique_ptr<BalloonDevice> dev_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return embervm::fuzz::run_device_target<BalloonFuzzer>(data, size);
}
