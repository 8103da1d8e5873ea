// Fuzz target: virtio-vsock (virtio/vsock/vsock_device.h), its packet handling and connection
// state machine between a fuzzed guest and real host sockets. The device runs on an event loop
// of its own with its listener in a temporary directory; two host "services" listen at
// <uds>_1024 and <uds>_1025. The input is a sequence of guest actions (packets with fuzzed
// header fields biased towards the ports and operations in play, receive buffers, raw bytes
// poked into guest memory, kicks, configuration accesses, resets) and host actions (a client
// connecting with a CONNECT line or garbage, data written to or shutdown/close of any host
// socket), with the loop run in between.
//
// Oracles besides the sanitizers and the guard pages: every packet the device puts in a
// receive buffer is from the host CID to the guest's, a stream packet of a known operation,
// and its header's len is exactly what the used length says beyond the header; no more used
// elements than chains taken.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <fmt/format.h>

#include "tests/fuzz/virtio_fuzz.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/vsock/vsock_device.h"
#include "vmm/sys/event_loop.h"
#include "vmm/sys/fd.h"

using embervm::FileDescriptor;
using embervm::fuzz::check;
using embervm::fuzz::FuzzInput;
using embervm::memory::GuestAddress;
using embervm::virtio::Activation;
using embervm::virtio::Queue;
using embervm::virtio::testing::FakeInterrupt;
using embervm::virtio::testing::RingDriver;
using namespace embervm::virtio::vsock;

namespace {

constexpr size_t kMaxOps = 128;
constexpr uint64_t kCid = 7;
constexpr uint16_t kRing = 16;
// Queue q's rings at q * 0x3000 (descriptors, available ring +0x1000, used ring +0x2000).
constexpr uint64_t kRingBase = 0x3000;
constexpr uint64_t kTxBufs = 0x9000, kTxSlot = 0x800, kTxSlots = 8;
constexpr uint64_t kRxBufs = 0x10000, kRxBuf = 0x1000, kRxSlots = 16;
constexpr size_t kMaxHostSockets = 12;
constexpr std::array<uint32_t, 2> kServicePorts{1024, 1025};

// One temporary directory per process for the device's socket and the services'.
const std::string& socket_dir() {
    static const std::string dir = [] {
        std::string tmpl = "/tmp/embervm-fuzz-vsock-XXXXXX";
        check(::mkdtemp(tmpl.data()) != nullptr, "mkdtemp");
        return tmpl;
    }();
    return dir;
}

sockaddr_un address(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    check(path.size() < sizeof(a.sun_path), "socket path too long");
    std::memcpy(a.sun_path, path.data(), path.size());
    return a;
}

FileDescriptor stream_socket() {
    FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    check(fd.get() >= 0, "socket");
    return fd;
}

class VsockFuzzer {
public:
    VsockFuzzer(const embervm::memory::GuestMemory& mem, FuzzInput& input) : mem_(mem), in_(input) {}

    void run() {
        const std::string uds = socket_dir() + "/v.sock";
        for (uint32_t port : kServicePorts) {
            const std::string path = fmt::format("{}_{}", uds, port);
            ::unlink(path.c_str());
            FileDescriptor s = stream_socket();
            const sockaddr_un a = address(path);
            check(::bind(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof(a)) == 0, "bind service");
            check(::listen(s.get(), 64) == 0, "listen service");
            services_.push_back(std::move(s));
        }
        Limits limits;
        limits.max_connections = 1 + in_.below(8);
        dev_ = std::make_unique<VsockDevice>(kCid, uds, limits);
        for (int i = 0; i < 3; i++) queues_.emplace_back(kVsockQueueSize);
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
        for (auto& q : queues_) q.reset();
        drivers_.clear();
        // A driver sets a device up with fresh rings (Linux allocates them zeroed): what a
        // previous activation left there would read as entries this one's driver never made.
        for (uint16_t q = 0; q < 3; q++) mem_.fill(GuestAddress(kRingBase * q), kRingBase, 0);
        rx_rings_overwritten_ = false;
        for (uint16_t q = 0; q < 3; q++) {
            drivers_.push_back(std::make_unique<RingDriver>(mem_, queues_[q], kRingBase * q, kRing));
            queues_[q].set_event_idx_enabled((acked & embervm::virtio::feature::kRingEventIdx) != 0);
        }
        rx_seen_ = 0;
        rx_outstanding_ = 0;
        dev_->activate(Activation{mem_, std::span<Queue>(queues_), acked, irq_, {}, &loop_});
        run_loop();
    }

    void run_loop() {
        for (int i = 0; i < 4; i++) {
            io_.restart();
            if (io_.poll() == 0) break;
        }
        accept_service_connections();
        drain_host_sockets();
        check_received();
        embervm::fuzz::check_used_within_taken(queues_, irq_);
    }

    void kick(uint16_t q) {
        embervm::fuzz::kick(*dev_, q, irq_);
        run_loop();
    }

    void step() {
        switch (in_.below(12)) {
            case 0:
            case 1:
            case 2: guest_packet(); break;
            case 3: post_rx(); break;
            case 4: kick(static_cast<uint16_t>(in_.below(3))); break;
            case 5: host_connect(); break;
            case 6: host_write(); break;
            case 7: host_close(); break;
            case 8: {
                // Raw bytes anywhere in guest memory (a ring entry, a header being read).
                const uint64_t addr = in_.guest_addr();
                const auto bytes = in_.bytes(in_.u8() % 64);
                if (mem_.try_write(GuestAddress(addr), bytes) && addr < kRingBase * (kRxQueue + 1) &&
                    addr + bytes.size() > kRingBase * kRxQueue) {
                    rx_rings_overwritten_ = true;
                }
                break;
            }
            case 9:
                dev_->reset();
                activate();
                break;
            case 10: embervm::fuzz::config_access(in_, *dev_, 16); break;
            default: run_loop(); break;
        }
    }

    // A port: mostly one in play (the services', a host port the device used, a small guest
    // port), sometimes any value.
    uint32_t port() {
        switch (in_.below(4)) {
            case 0: return kServicePorts[in_.below(kServicePorts.size())];
            case 1: return host_ports_.empty() ? in_.u32() : host_ports_[in_.below(host_ports_.size())];
            case 2: return 1000 + in_.below(4);
            default: return in_.u32();
        }
    }

    void guest_packet() {
        PacketHeader h;
        const uint8_t mode = in_.u8();
        h.src_cid = (mode & 1) != 0 ? in_.u64() : kCid;
        h.dst_cid = (mode & 2) != 0 ? in_.u64() : kHostCid;
        h.src_port = port();
        h.dst_port = port();
        h.type = (mode & 4) != 0 ? in_.u16() : socket_type::kStream;
        h.op = (mode & 8) != 0 ? in_.u16() : static_cast<uint16_t>(1 + in_.below(7));
        h.flags = in_.below(4);
        h.buf_alloc = (mode & 16) != 0 ? in_.u32() : 1u << 18;
        h.fwd_cnt = in_.u32() % 4096;
        const auto data = in_.bytes(in_.u16() % (kTxSlot - 0x40));
        h.len = (mode & 32) != 0 ? in_.u32() : static_cast<uint32_t>(data.size());
        const uint64_t slot = kTxBufs + kTxSlot * (tx_slot_++ % kTxSlots);
        mem_.write_obj(GuestAddress(slot), h);
        mem_.write(GuestAddress(slot + 0x40), data);
        if ((mode & 64) != 0 || data.empty()) {
            // Header and payload in one buffer, as far as they go.
            mem_.write(GuestAddress(slot + sizeof h), data.subspan(0, std::min<size_t>(data.size(), kTxSlot - sizeof h)));
            drivers_[kTxQueue]->add({{slot, static_cast<uint32_t>(sizeof h + data.size()), false}});
        } else {
            drivers_[kTxQueue]->add({{slot, sizeof h, false}, {slot + 0x40, static_cast<uint32_t>(data.size()), false}});
        }
        if (in_.flag()) kick(kTxQueue);
    }

    void post_rx() {
        if (rx_outstanding_ >= kRing) return;
        const uint64_t slot = kRxBufs + kRxBuf * (rx_posted_++ % kRxSlots);
        const uint32_t len = in_.flag() ? static_cast<uint32_t>(kRxBuf) : in_.u16() % kRxBuf;
        const uint16_t head = drivers_[kRxQueue]->add({{slot, len, true}});
        rx_slots_[head % kRing] = {slot, len};
        rx_outstanding_++;
        if (in_.flag()) kick(kRxQueue);
    }

    // Every packet the device published since the last look. Once the guest overwrote the
    // receive queue's rings with raw bytes, the device may have filled buffers this driver never
    // posted (and the used ring say anything): its packets are not checked until the next
    // activation.
    void check_received() {
        const auto used_idx = mem_.read_obj<uint16_t>(GuestAddress(kRingBase * kRxQueue + 0x2000 + 2));
        while (rx_seen_ != used_idx && rx_outstanding_ > 0) {
            const auto [id, len] = drivers_[kRxQueue]->used(rx_seen_);
            rx_seen_++;
            rx_outstanding_--;
            if (rx_rings_overwritten_) continue;
            const RxSlot s = rx_slots_[id % kRing];
            check(len <= s.len, "receive: used length beyond the buffer");
            if (len < sizeof(PacketHeader)) continue;  // only a broken device writes less
            const auto h = mem_.read_obj<PacketHeader>(GuestAddress(s.addr));
            check(h.src_cid == kHostCid && h.dst_cid == kCid, "receive: a packet not from the host to this guest");
            check(h.type == socket_type::kStream, "receive: not a stream packet");
            check(h.op >= op::kRequest && h.op <= op::kCreditRequest, "receive: unknown operation");
            check(sizeof(PacketHeader) + h.len == len, "receive: header len and used length disagree");
            if (host_ports_.size() < 8) host_ports_.push_back(h.src_port);
        }
    }

    void host_connect() {
        if (host_.size() >= kMaxHostSockets) return;
        FileDescriptor c = stream_socket();
        const sockaddr_un a = address(dev_->uds_path());
        if (::connect(c.get(), reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0) return;  // backlog full
        std::string line = in_.flag() ? fmt::format("CONNECT {}\n", port()) : [&] {
            const auto raw = in_.bytes(in_.u8() % 48);
            return std::string(raw.begin(), raw.end());
        }();
        (void)::send(c.get(), line.data(), line.size(), MSG_NOSIGNAL);
        host_.push_back(std::move(c));
        run_loop();
    }

    void host_write() {
        if (host_.empty()) return;
        const auto data = in_.bytes(in_.u16() % 2048);
        (void)::send(host_[in_.below(host_.size())].get(), data.data(), data.size(), MSG_NOSIGNAL);
        run_loop();
    }

    void host_close() {
        if (host_.empty()) return;
        const size_t i = in_.below(host_.size());
        if (in_.flag()) {
            ::shutdown(host_[i].get(), SHUT_WR);
        } else {
            host_.erase(host_.begin() + static_cast<long>(i));
        }
        run_loop();
    }

    void accept_service_connections() {
        for (const auto& s : services_) {
            while (host_.size() < kMaxHostSockets) {
                FileDescriptor c(::accept4(s.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
                if (c.get() < 0) break;
                host_.push_back(std::move(c));
            }
        }
    }

    // What the device wrote to host sockets is read and dropped, as a service would.
    void drain_host_sockets() {
        char buf[4096];
        for (const auto& h : host_) {
            while (::recv(h.get(), buf, sizeof buf, MSG_DONTWAIT) > 0) {
            }
        }
    }

    struct RxSlot {
        uint64_t addr = 0;
        uint32_t len = 0;
    };

    const embervm::memory::GuestMemory& mem_;
    FuzzInput& in_;
    boost::asio::io_context io_;
    embervm::vmm::EventLoop loop_{io_};
    std::vector<FileDescriptor> services_;
    std::vector<FileDescriptor> host_;
    std::vector<Queue> queues_;
    std::vector<std::unique_ptr<RingDriver>> drivers_;
    FakeInterrupt irq_;
    std::unique_ptr<VsockDevice> dev_;
    std::array<RxSlot, kRing> rx_slots_{};
    std::vector<uint32_t> host_ports_;
    uint16_t rx_seen_ = 0;
    bool rx_rings_overwritten_ = false;
    uint32_t rx_outstanding_ = 0;
    uint32_t rx_posted_ = 0;
    uint32_t tx_slot_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return embervm::fuzz::run_device_target<VsockFuzzer>(data, size);
}
