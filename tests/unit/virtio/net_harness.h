// The virtio-net unit tests' harness: a fake backend that queues inbound frames and records
// outbound ones, and a device driven as in the VMM (activated on an event loop, kicked through its
// queue eventfds, receiving when the backend's fd is readable). Used by net_device_test.cpp and
// net_rate_limiter_test.cpp.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <numeric>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "memory/guest_memory.h"
#include "tests/unit/virtio/fake_rate_limiter_clock.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/net/net_device.h"
#include "vmm/sys/event_loop.h"
#include "vmm/sys/eventfd.h"

namespace embervm::virtio::net::net_test {

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::virtio;
using namespace embervm::virtio::net;
using embervm::virtio::testing::Buf;
using embervm::virtio::testing::FakeInterrupt;
using embervm::virtio::testing::FakeRateLimiterClock;
using embervm::virtio::testing::FakeRateLimiterTimer;
using namespace std::chrono_literals;
using embervm::virtio::testing::RingDriver;

inline constexpr uint64_t kRxRing = 0x10000, kTxRing = 0x20000;
inline constexpr uint64_t kBufs = 0x100000;  // receive / transmit buffers
inline constexpr uint64_t kMemSize = 0x400000;
inline constexpr uint16_t kRingSize = 32;

// Runs what is ready on `io` (kicks, readable fds, posted work) until nothing is.
inline void poll_ready(boost::asio::io_context& io) {
    io.restart();
    io.poll();
}

class FakeNetBackend : public NetBackend {
public:
    // Readable like a TAP: from a frame's arrival until a read finds none waiting.
    int fd() const override { return event.fd(); }
    // Like the kernel's TAP: a frame longer than the buffers is truncated, and its full length
    // is returned.
    ssize_t read_frame(std::span<const iovec> iov) override {
        reads++;
        if (read_error) return read_error;
        if (inbound.empty()) {
            event.consume();
            return -EAGAIN;
        }
        const auto f = inbound.front();
        inbound.pop_front();
        reads_iovecs.push_back(iov.size());
        size_t pos = 0;
        for (const iovec& v : iov) {
            const size_t n = std::min(v.iov_len, f.size() - pos);
            std::memcpy(v.iov_base, f.data() + pos, n);
            pos += n;
        }
        return static_cast<ssize_t>(f.size());
    }
    ssize_t write_frame(std::span<const iovec> iov) override {
        if (write_error) return write_error;
        std::vector<uint8_t> f;
        for (const iovec& v : iov) f.insert(f.end(), static_cast<uint8_t*>(v.iov_base), static_cast<uint8_t*>(v.iov_base) + v.iov_len);
        outbound.push_back(f);
        writes_iovecs.push_back(iov.size());
        return static_cast<ssize_t>(f.size());
    }
    uint64_t supported_offload_features() const override { return offloads; }
    void set_offloads(uint64_t acked) override { set_offloads_calls.push_back(acked); }
    std::string name() const override { return "fake0"; }

    // A frame arrives (header + packet).
    void push(std::vector<uint8_t> frame) {
        inbound.push_back(std::move(frame));
        event.signal();
    }
    // A frame as the TAP delivers it: a 12-byte vnet header (num_buffers left 0) + packet.
    void push_frame(size_t packet_len, uint8_t seed) {
        std::vector<uint8_t> f(kNetHdrSize + packet_len, 0);
        std::iota(f.begin() + kNetHdrSize, f.end(), seed);
        push(std::move(f));
    }

    embervm::vmm::EventFd event;
    std::deque<std::vector<uint8_t>> inbound;
    std::vector<std::vector<uint8_t>> outbound;
    std::vector<size_t> writes_iovecs;
    std::vector<size_t> reads_iovecs;
    std::vector<uint64_t> set_offloads_calls;
    uint64_t offloads = net_feature::kCsum | net_feature::kGuestCsum;
    ssize_t write_error = 0;
    ssize_t read_error = 0;
    int reads = 0;
};

struct Harness {
    boost::asio::io_context io;
    embervm::vmm::EventLoop loop{io};
    GuestMemory mem{{{GuestAddress(0), kMemSize}}};
    std::vector<Queue> queues;
    std::vector<embervm::vmm::EventFd> kicks{2};  // the queues' ioeventfds
    std::unique_ptr<RingDriver> rx, tx;
    FakeInterrupt irq;
    FakeNetBackend* backend;
    std::unique_ptr<NetDevice> dev;

    explicit Harness(bool mrg = false, std::optional<uint16_t> mtu = std::nullopt, uint64_t drop = 0,
                     uint64_t offloads = net_feature::kCsum | net_feature::kGuestCsum,
                     const std::function<void(NetDeviceOptions&)>& more_options = {}) {
        queues.emplace_back(kNetQueueSize);
        queues.emplace_back(kNetQueueSize);
        rx = std::make_unique<RingDriver>(mem, queues[0], kRxRing, kRingSize);
        tx = std::make_unique<RingDriver>(mem, queues[1], kTxRing, kRingSize);
        auto b = std::make_unique<FakeNetBackend>();
        backend = b.get();
        backend->offloads = offloads;
        NetDeviceOptions o;
        o.id = "eth0";
        o.mac = {0x06, 0x00, 0x0a, 0x00, 0x02, 0x0f};
        o.mtu = mtu;
        if (more_options) more_options(o);
        dev = std::make_unique<NetDevice>(std::move(b), o);
        uint64_t acked = (dev->available_features() | feature::kVersion1) & ~drop;
        if (!mrg) acked &= ~net_feature::kMrgRxbuf;
        for (auto& q : queues) {
            q.set_event_idx_enabled((acked & feature::kRingEventIdx) != 0);
            q.set_indirect_enabled((acked & feature::kRingIndirectDesc) != 0);
        }
        activate(acked);
    }
    // What the transport does at DRIVER_OK: the device subscribes to the loop.
    void activate(uint64_t acked) {
        const std::vector<int> fds{kicks[0].fd(), kicks[1].fd()};
        dev->activate(Activation{mem, queues, acked, irq, fds, &loop});
        run();
    }
    // Runs what is ready on the loop (a kick, a readable backend, posted work) until nothing is.
    void run() { poll_ready(io); }
    // The driver notifies queue `q` (KVM writes its ioeventfd); the loop runs.
    void kick(uint16_t q) {
        kicks[q].signal();
        run();
    }
    // The backend's fd becomes readable: the device receives what fits the guest's buffers.
    // Returns whether it still watches the backend (false: it waits for receive buffers).
    bool receive() {
        run();
        return backend_watched();
    }
    // Whether the device reads the backend when it is readable: a wake-up with no frame
    // (harmless: the read finds none).
    bool backend_watched() {
        const int before = backend->reads;
        backend->event.signal();
        run();
        return backend->reads > before;
    }
    std::vector<uint8_t> bytes(uint64_t addr, size_t n) const {
        std::vector<uint8_t> v(n);
        mem.read(GuestAddress(addr), v);
        return v;
    }
    uint16_t num_buffers(uint64_t hdr_addr) const { return mem.read_obj<uint16_t>(GuestAddress(hdr_addr + 10)); }
};

inline std::vector<uint8_t> packet(size_t len, uint8_t seed) {
    std::vector<uint8_t> v(len);
    std::iota(v.begin(), v.end(), seed);
    return v;
}

}  // namespace embervm::virtio::net::net_test
