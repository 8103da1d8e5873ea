// Fuzz target: virtio-net (virtio/net/net_device.h), transmit and receive, on fuzzed chains with
// a fake backend. The device runs on an event loop of its own (as in the VMM: receiving starts
// when the backend's fd is readable); the input is the device's options, the backend's offloads
// and the features the driver accepts, then a sequence of driver actions on either queue
// (chains, raw bytes), kicks, frames arriving (any length up to past the largest frame, with
// fuzzed virtio-net headers), backend errors, configuration accesses and resets.
//
// Oracles besides the sanitizers and the guard pages: every frame handed to the backend lies in
// guest memory, and no frame the backend delivers is longer than what it read.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "tests/fuzz/virtio_fuzz.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/net/net_device.h"
#include "vmm/sys/event_loop.h"
#include "vmm/sys/eventfd.h"

using embervm::fuzz::check;
using embervm::fuzz::FuzzInput;
using embervm::virtio::Activation;
using embervm::virtio::Queue;
using embervm::virtio::testing::FakeInterrupt;
using namespace embervm::virtio::net;
namespace feature = embervm::virtio::feature;

namespace {

constexpr size_t kMaxOps = 96;
constexpr size_t kMaxInbound = 8;

// A TAP-like backend: frames queued by the target arrive one per read (truncated to the
// buffers, their full length returned); frames written are checked and counted.
class FuzzNetBackend final : public NetBackend {
public:
    int fd() const override { return event.fd(); }
    EMBERVM_FUZZ_HARNESS_LOOP ssize_t read_frame(std::span<const iovec> iov) override {
        if (read_error != 0) return read_error;
        if (inbound.empty()) {
            event.consume();
            return -EAGAIN;
        }
        const std::vector<uint8_t> f = std::move(inbound.front());
        inbound.pop_front();
        size_t pos = 0;
        for (const iovec& v : iov) {
            const size_t n = std::min(v.iov_len, f.size() - pos);
            // The TAP leaves num_buffers (header bytes 10 and 11) alone.
            for (size_t k = 0; k < n; k++) {
                const size_t at = pos + k;
                if (at != 10 && at != 11) static_cast<uint8_t*>(v.iov_base)[k] = f[at];
            }
            pos += n;
        }
        return static_cast<ssize_t>(f.size());
    }
    ssize_t write_frame(std::span<const iovec> iov) override {
        size_t bytes = 0;
        for (const iovec& v : iov) {
            check(embervm::fuzz::device_memory().host_inside(v.iov_base, v.iov_len), "transmitted frame outside guest memory");
            bytes += v.iov_len;
        }
        if (write_error != 0) return write_error;
        written++;
        return static_cast<ssize_t>(bytes);
    }
    uint64_t supported_offload_features() const override { return offloads; }
    void set_offloads(uint64_t) override {}
    std::string name() const override { return "fuzz0"; }

    embervm::vmm::EventFd event;
    std::deque<std::vector<uint8_t>> inbound;
    uint64_t offloads = 0;
    ssize_t read_error = 0;
    ssize_t write_error = 0;
    uint64_t written = 0;
};

class NetFuzzer {
public:
    NetFuzzer(const embervm::memory::GuestMemory& mem, FuzzInput& input)
        : mem_(mem), in_(input), rings_{embervm::fuzz::RingDriver(mem, 0), embervm::fuzz::RingDriver(mem, 1)} {}

    void run() {
        const uint8_t opts = in_.u8();
        NetDeviceOptions o;
        o.id = "eth0";
        o.mac = {0x06, 0, 0, 0, 0, opts};
        if (opts & 1) o.mtu = in_.u16();
        auto b = std::make_unique<FuzzNetBackend>();
        backend_ = b.get();
        // Any set of the offloads a TAP can carry.
        static constexpr uint64_t kOffloads[] = {net_feature::kCsum, net_feature::kGuestCsum, net_feature::kGuestTso4,
                                                 net_feature::kGuestTso6, net_feature::kGuestEcn, net_feature::kGuestUfo,
                                                 net_feature::kHostTso4, net_feature::kHostTso6, net_feature::kHostEcn,
                                                 net_feature::kHostUfo};
        const uint16_t offload_bits = in_.u16();
        for (size_t i = 0; i < std::size(kOffloads); i++) {
            if (offload_bits & (1u << i)) backend_->offloads |= kOffloads[i];
        }
        dev_ = std::make_unique<NetDevice>(std::move(b), o);
        activate();
        for (size_t n = 0; n < kMaxOps && !in_.empty(); n++) step();
        dev_->reset();
        run_loop();
        dev_.reset();
    }

private:
    void activate() {
        const uint64_t acked = embervm::fuzz::accept_features(in_, *dev_);
        irq_ = FakeInterrupt{};
        const uint8_t sizes = in_.u8();
        for (size_t q = 0; q < 2; q++) {
            queues_[q].reset();
            rings_[q].configure(queues_[q], static_cast<uint8_t>(q == 0 ? sizes : sizes >> 4),
                                (acked & feature::kRingEventIdx) != 0, (acked & feature::kRingIndirectDesc) != 0);
        }
        dev_->activate(Activation{mem_, std::span<Queue>(queues_, 2), acked, irq_, {}, &loop_});
        run_loop();
    }

    void run_loop() {
        io_.restart();
        io_.poll();
    }

    void kick(uint16_t q) {
        embervm::fuzz::kick(*dev_, q, irq_);
        run_loop();
    }

    void step() {
        switch (in_.below(8)) {
            case 0:
            case 1:
            case 2:
                rings_[in_.below(2)].act(in_);
                break;
            case 3:
                kick(static_cast<uint16_t>(in_.below(2)));
                break;
            case 4: {
                // A frame arrives: a fuzzed header, then a packet of a fuzzed length (up to past
                // the largest frame the device takes).
                if (backend_->inbound.size() < kMaxInbound) {
                    const size_t len = in_.u32() % (kRxBounceBytes + 64);
                    std::vector<uint8_t> f(len, 0x42);
                    const auto head = in_.bytes(std::min<size_t>(len, kNetHdrSize + 16));
                    std::copy(head.begin(), head.end(), f.begin());
                    backend_->inbound.push_back(std::move(f));
                }
                backend_->event.signal();
                run_loop();
                break;
            }
            case 5: {
                static constexpr ssize_t kErrors[] = {0, -EAGAIN, -ENOBUFS, -EIO};
                backend_->write_error = kErrors[in_.below(4)];
                backend_->read_error = in_.u8() == 0xff ? -EIO : 0;
                break;
            }
            case 6:
                dev_->reset();
                run_loop();
                activate();
                break;
            default:
                embervm::fuzz::config_access(in_, *dev_, 256);
                break;
        }
        embervm::fuzz::check_used_within_taken(queues_, irq_);
    }

    const embervm::memory::GuestMemory& mem_;
    FuzzInput& in_;
    boost::asio::io_context io_;
    embervm::vmm::EventLoop loop_{io_};
    embervm::fuzz::RingDriver rings_[2];
    Queue queues_[2] = {Queue(kNetQueueSize), Queue(kNetQueueSize)};
    FakeInterrupt irq_;
    FuzzNetBackend* backend_ = nullptr;
    std::unique_ptr<NetDevice> dev_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return embervm::fuzz::run_device_target<NetFuzzer>(data, size);
}
