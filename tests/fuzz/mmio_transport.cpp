// Fuzz target: the virtio-mmio transport (virtio/mmio_transport.h) in front of a real device
// (virtio-blk on an in-memory backend, virtio-net on a backend that takes every frame, or
// virtio-balloon; the input picks one). The input is a sequence of register reads and writes
// of any offset and width, mixed with steps a driver takes (a feature negotiation, a queue set
// up at the layout of embervm::fuzz::RingDriver) so that fuzzing gets past DRIVER_OK, and with
// chains made available there, then kicked through QueueNotify.
//
// Oracles besides the sanitizers and the guard pages: the identification registers never
// change; an activated device has FEATURES_OK and DRIVER_OK, features accepted within those
// offered (with VERSION_1), and only valid ready queues.
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "devices/irq.h"
#include "tests/fuzz/transport_devices.h"
#include "tests/fuzz/virtio_fuzz.h"
#include "virtio/mmio_transport.h"

using embervm::fuzz::check;
using embervm::fuzz::FuzzInput;
using namespace embervm::virtio;

namespace {

constexpr size_t kMaxOps = 160;

class CountingIrq final : public embervm::devices::IrqLine {
public:
    void trigger() override { ++count; }
    uint64_t count = 0;
};

// The registers a driver writes, so that a one-byte choice names a meaningful one.
constexpr uint64_t kWritable[] = {
    mmio::kDeviceFeaturesSel, mmio::kDriverFeatures, mmio::kDriverFeaturesSel, mmio::kQueueSel,
    mmio::kQueueNum,          mmio::kQueueReady,     mmio::kQueueNotify,       mmio::kInterruptAck,
    mmio::kStatus,            mmio::kQueueDescLow,   mmio::kQueueDescHigh,     mmio::kQueueDriverLow,
    mmio::kQueueDriverHigh,   mmio::kQueueDeviceLow, mmio::kQueueDeviceHigh,   mmio::kShmSel,
    mmio::kQueueReset,        mmio::kConfig,
};

class TransportFuzzer {
public:
    TransportFuzzer(const embervm::memory::GuestMemory& mem, FuzzInput& input) : mem_(mem), in_(input) {}

    void run() {
        auto device = embervm::fuzz::make_transport_device(in_, &fake_block_);
        irq_ = std::make_shared<CountingIrq>();
        transport_ = std::make_unique<MmioTransport>(mem_, device, irq_);
        for (uint16_t q = 0; q < transport_->num_queues(); q++) rings_.emplace_back(mem_, q);
        for (size_t n = 0; n < kMaxOps && !in_.empty(); n++) {
            step();
            check_invariants();
        }
        transport_.reset();  // resets an activated device
    }

private:
    uint32_t read32(uint64_t offset) {
        uint8_t b[4] = {};
        transport_->read(offset, b);
        uint32_t v;
        std::memcpy(&v, b, 4);
        return v;
    }
    void write32(uint64_t offset, uint32_t v) {
        uint8_t b[4];
        std::memcpy(b, &v, 4);
        transport_->write(offset, b);
    }

    void step() {
        switch (in_.below(12)) {
            case 0:
            case 1:
            case 2: {  // a write to a register a driver writes
                const uint64_t offset = kWritable[in_.below(std::size(kWritable))];
                write32(offset, in_.u32());
                break;
            }
            case 3: {  // any access: offset, width, value
                const uint64_t offset = in_.u16() % (mmio::kConfig + 0x40);
                const size_t width = size_t{1} << in_.below(4);
                uint8_t b[8] = {};
                if (in_.flag()) {
                    transport_->read(offset, std::span(b, width));
                } else {
                    const uint64_t v = in_.u64();
                    std::memcpy(b, &v, 8);
                    transport_->write(offset, std::span(b, width));
                }
                break;
            }
            case 4:
                read32(static_cast<uint64_t>(in_.below(0x40)) * 4);
                break;
            case 5: {  // feature negotiation: ACK | DRIVER, accept a subset, FEATURES_OK
                write32(mmio::kStatus, status::kAcknowledge | status::kDriver);
                const uint64_t mask = in_.u64();
                for (uint32_t sel = 0; sel < 2; sel++) {
                    write32(mmio::kDeviceFeaturesSel, sel);
                    const uint32_t offered = read32(mmio::kDeviceFeatures);
                    write32(mmio::kDriverFeaturesSel, sel);
                    write32(mmio::kDriverFeatures, offered & static_cast<uint32_t>(mask >> (32 * sel)));
                }
                write32(mmio::kStatus, status::kAcknowledge | status::kDriver | status::kFeaturesOk);
                break;
            }
            case 6: {  // set up a queue at the driver layout
                const uint16_t q = static_cast<uint16_t>(in_.below(transport_->num_queues() + 1));
                write32(mmio::kQueueSel, q);
                if (q >= rings_.size()) break;
                const uint16_t size = static_cast<uint16_t>(1u << in_.below(8));
                write32(mmio::kQueueNum, size);
                write32(mmio::kQueueDescLow, static_cast<uint32_t>(rings_[q].desc()));
                write32(mmio::kQueueDescHigh, 0);
                write32(mmio::kQueueDriverLow, static_cast<uint32_t>(rings_[q].avail()));
                write32(mmio::kQueueDriverHigh, 0);
                write32(mmio::kQueueDeviceLow, static_cast<uint32_t>(rings_[q].used()));
                write32(mmio::kQueueDeviceHigh, 0);
                write32(mmio::kQueueReady, 1);
                mem_.fill(embervm::memory::GuestAddress(rings_[q].desc()), 0x1000, 0);
                rings_[q].restart(size);
                break;
            }
            case 7:  // DRIVER_OK
                write32(mmio::kStatus, status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk);
                break;
            case 8:
            case 9:
                if (!rings_.empty()) rings_[in_.below(rings_.size())].act(in_);
                break;
            case 10:
                write32(mmio::kQueueNotify, static_cast<uint32_t>(in_.below(rings_.size() + 1)));
                break;
            default:
                if (!embervm::fuzz::vary_block_backend(in_, fake_block_)) {
                    write32(mmio::kInterruptAck, read32(mmio::kInterruptStatus));
                    transport_->raise_used_again();
                    transport_->used_interrupt_pending_since();
                }
                break;
        }
    }

    void check_invariants() {
        check(read32(mmio::kMagicValue) == mmio::kMagic && read32(mmio::kVersionReg) == mmio::kVersion &&
                  read32(mmio::kDeviceId) == transport_->device().device_type(),
              "identification registers changed");
        if (!transport_->is_activated()) return;
        const uint32_t s = transport_->status();
        check((s & status::kFeaturesOk) != 0 && (s & status::kDriverOk) != 0, "activated without FEATURES_OK and DRIVER_OK");
        const uint64_t f = transport_->driver_features();
        check((f & ~transport_->offered_features()) == 0, "activated with features that were not offered");
        check((f & feature::kVersion1) != 0, "activated without VERSION_1");
        for (uint16_t q = 0; q < transport_->num_queues(); q++) {
            const Queue queue = transport_->queue(q);
            check(!queue.ready() || queue.is_valid(mem_), "activated with an invalid ready queue");
        }
    }

    const embervm::memory::GuestMemory& mem_;
    FuzzInput& in_;
    std::shared_ptr<CountingIrq> irq_;
    embervm::virtio::testing::FakeBlockBackend* fake_block_ = nullptr;
    std::unique_ptr<MmioTransport> transport_;
    std::vector<embervm::fuzz::RingDriver> rings_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return embervm::fuzz::run_device_target<TransportFuzzer>(data, size);
}
