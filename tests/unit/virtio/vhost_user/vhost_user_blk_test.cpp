// Tests for virtio/vhost_user/vhost_user_device as vhost-user-blk against a real
// qemu-storage-daemon on a temporary image (no KVM): the test is the driver, writes requests
// into memfd-backed guest memory, kicks the queue's eventfd and waits for the backend's used
// elements; then the image on disk is checked. Also: reset and re-activation, a backend that
// goes away, and a reconnect to a new one.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "tests/unit/temp_dir.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/vhost_user/vhost_user_device.h"
#include "vmm/sys/eventfd.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_vhost_user_blk_test {

using namespace embervm::virtio;
using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using embervm::memory::MemoryBacking;
using embervm::virtio::testing::Buf;
using embervm::virtio::testing::FakeInterrupt;
using embervm::virtio::testing::RingDriver;
using embervm::virtio::vhost_user::VhostUserDevice;

namespace {

constexpr uint64_t kRings = 0x10000;
constexpr uint64_t kHeader = 0x20000;
constexpr uint64_t kData = 0x21000;
constexpr uint64_t kStatus = 0x22000;
constexpr uint32_t kSector = 512;

// qemu-storage-daemon exporting `image` at `socket`, daemonized; killed at the end.
class StorageDaemon {
public:
    StorageDaemon(const embervm::test::TempDir& dir, const std::string& image, const std::string& socket)
        : pidfile_(dir.file("qsd.pid")) {
        const std::string cmd = fmt::format(
            "qemu-storage-daemon --daemonize --pidfile {} --blockdev driver=file,node-name=d,filename={} "
            "--export type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path={},writable=on "
            ">{} 2>&1",
            pidfile_, image, socket, dir.file("qsd.log"));
        REQUIRE(std::system(cmd.c_str()) == 0);
        std::ifstream in(pidfile_);
        in >> pid_;
        REQUIRE(pid_ > 0);
    }
    ~StorageDaemon() { stop(); }
    void stop() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGTERM);
        // Not our child (daemonized): wait for the pid to go.
        for (int i = 0; i < 500 && ::kill(pid_, 0) == 0; i++) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        pid_ = -1;
    }

private:
    std::string pidfile_;
    pid_t pid_ = -1;
};

struct Driver {
    GuestMemory mem{{{GuestAddress(0), 0x100000}}, MemoryBacking::SharedMemfd};
    std::vector<Queue> queues{Queue(256)};
    std::optional<RingDriver> ring;
    embervm::vmm::EventFd kick;
    FakeInterrupt irq;
    uint16_t used_seen = 0;

    void set_up() {
        queues[0].reset();
        mem.fill(GuestAddress(kRings), 0x3000, 0);
        ring.emplace(mem, queues[0], kRings, 64);
        used_seen = 0;
    }
    Activation activation(uint64_t features) {
        kick_fd_ = kick.fd();
        return Activation{mem, queues, features, irq, std::span<const int>(&kick_fd_, 1), nullptr};
    }
    // One request (header, `len` data bytes at kData, status), kicked; waits for its used element.
    uint8_t run(uint32_t type, uint64_t sector, uint32_t len) {
        mem.write_obj<uint32_t>(GuestAddress(kHeader), type);
        mem.write_obj<uint32_t>(GuestAddress(kHeader + 4), 0);
        mem.write_obj<uint64_t>(GuestAddress(kHeader + 8), sector);
        mem.write_obj<uint8_t>(GuestAddress(kStatus), 0xee);
        std::vector<Buf> bufs{{kHeader, 16, false}};
        if (len > 0) bufs.push_back({kData, len, type == 0});
        bufs.push_back({kStatus, 1, true});
        ring->add(bufs);
        kick.signal();
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (ring->used_idx() == used_seen && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        REQUIRE(ring->used_idx() == static_cast<uint16_t>(used_seen + 1));
        used_seen++;
        return mem.read_obj<uint8_t>(GuestAddress(kStatus));
    }

private:
    int kick_fd_ = -1;
};

std::string make_image(const embervm::test::TempDir& dir) {
    std::string content(1 << 20, '\0');
    for (size_t i = 0; i < kSector; i++) content[3 * kSector + i] = static_cast<char>(i * 7);
    return dir.write("disk.raw", content);
}

}  // namespace

TEST_CASE("vhost-user-blk reads and writes through qemu-storage-daemon", "[vhost_user][qsd]") {
    embervm::test::TempDir dir;
    const std::string image = make_image(dir);
    const std::string socket = dir.file("blk.sock");
    StorageDaemon qsd(dir, image, socket);

    auto dev = VhostUserDevice::connect_block({"disk0", socket, std::chrono::seconds(5)});
    CHECK(dev->device_type() == device_id::kBlock);
    CHECK(dev->capacity_sectors() == 2048);
    CHECK_FALSE(dev->read_only());
    CHECK((dev->available_features() & (uint64_t{1} << 9)) != 0);   // FLUSH passed on
    CHECK((dev->available_features() & (uint64_t{1} << 12)) == 0);  // MQ not (one queue)
    CHECK((dev->available_features() & (uint64_t{1} << 30)) == 0);  // never the protocol bit
    uint8_t cap[8] = {};
    dev->read_config(0, cap);
    CHECK(cap[1] == 0x08);  // 2048 = 0x800

    Driver d;
    d.set_up();
    const uint64_t features = feature::kVersion1 | (dev->available_features() & (uint64_t{1} << 9));
    dev->activate(d.activation(features));

    // Read sector 3 (the pattern).
    CHECK(d.run(0, 3, kSector) == 0);
    for (uint32_t i = 0; i < kSector; i++) {
        REQUIRE(d.mem.read_obj<uint8_t>(GuestAddress(kData + i)) == static_cast<uint8_t>(i * 7));
    }
    // Write sector 100, flush; the image on disk has it.
    d.mem.fill(GuestAddress(kData), kSector, 0xab);
    CHECK(d.run(1, 100, kSector) == 0);
    CHECK(d.run(4, 0, 0) == 0);  // FLUSH
    {
        embervm::FileDescriptor f(::open(image.c_str(), O_RDONLY | O_CLOEXEC));
        uint8_t buf[kSector];
        REQUIRE(::pread(f.get(), buf, sizeof(buf), 100 * kSector) == kSector);
        CHECK(buf[0] == 0xab);
        CHECK(buf[kSector - 1] == 0xab);
    }
    // A read past the end fails in the backend, not in the VMM.
    CHECK(d.run(0, 4096, kSector) == 1);  // VIRTIO_BLK_S_IOERR
    CHECK(d.irq.errors.empty());

    // Reset (GET_VRING_BASE) and a fresh activation with new rings work.
    dev->reset();
    CHECK(dev->connected());
    d.set_up();
    dev->activate(d.activation(features));
    CHECK(d.run(0, 100, kSector) == 0);
    CHECK(d.mem.read_obj<uint8_t>(GuestAddress(kData)) == 0xab);
    dev->reset();
}

TEST_CASE("vhost-user-blk: a backend that goes away fails the device, a new one is taken at the reset",
          "[vhost_user][qsd]") {
    embervm::test::TempDir dir;
    const std::string image = make_image(dir);
    const std::string socket = dir.file("blk.sock");
    auto qsd = std::make_unique<StorageDaemon>(dir, image, socket);
    auto dev = VhostUserDevice::connect_block({"disk0", socket, std::chrono::seconds(2), true});

    qsd->stop();
    ::unlink(socket.c_str());
    Driver d;
    d.set_up();
    // The activation's first request meets the closed socket.
    CHECK_THROWS_AS(dev->activate(d.activation(feature::kVersion1)), embervm::virtio::vhost_user::ProtocolError);
    CHECK_FALSE(dev->connected());

    // With no backend a reset leaves it disconnected; with a new one it connects again.
    dev->reset();
    CHECK_FALSE(dev->connected());
    qsd = std::make_unique<StorageDaemon>(dir, image, socket);
    dev->reset();
    CHECK(dev->connected());
    d.set_up();
    dev->activate(d.activation(feature::kVersion1));
    CHECK(d.run(0, 3, kSector) == 0);
    CHECK(d.mem.read_obj<uint8_t>(GuestAddress(kData + 1)) == 7);
    dev->reset();
    CHECK(dev->metrics_json()["reconnects"] == 1);
}

TEST_CASE("vhost-user-blk: an unreachable socket is a one-line error naming it", "[vhost_user]") {
    embervm::test::TempDir dir;
    CHECK_THROWS_WITH(VhostUserDevice::connect_block({"disk0", dir.file("none.sock"), std::chrono::seconds(1)}),
                      Catch::Contains("vhost-user-blk socket " + dir.file("none.sock")) &&
                          Catch::Contains("No such file"));
}

TEST_CASE("vhost-user-blk without reconnect stays failed after the backend went away", "[vhost_user][qsd]") {
    embervm::test::TempDir dir;
    const std::string image = make_image(dir);
    const std::string socket = dir.file("blk.sock");
    auto qsd = std::make_unique<StorageDaemon>(dir, image, socket);
    auto dev = VhostUserDevice::connect_block({"disk0", socket, std::chrono::seconds(2)});
    qsd->stop();
    ::unlink(socket.c_str());
    qsd = std::make_unique<StorageDaemon>(dir, image, socket);
    Driver d;
    d.set_up();
    CHECK_THROWS_AS(dev->activate(d.activation(feature::kVersion1)), embervm::virtio::vhost_user::ProtocolError);
    dev->reset();
    CHECK_FALSE(dev->connected());
    CHECK_THROWS_WITH(dev->activate(d.activation(feature::kVersion1)), Catch::Contains("no connection"));
    CHECK(dev->metrics_json()["reconnects"] == 0);
}

namespace {

// Whether `fd` becomes readable within `timeout`; reads it then.
bool signalled_within(const embervm::vmm::EventFd& fd, std::chrono::milliseconds timeout) {
    pollfd p{fd.fd(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
    return fd.consume() != 0;
}

}  // namespace

TEST_CASE("vhost-user-blk: an offered irqfd becomes the backend's call, a withdrawal the relay again",
          "[vhost_user][qsd][irqfd]") {
    embervm::test::TempDir dir;
    const std::string image = make_image(dir);
    const std::string socket = dir.file("blk.sock");
    StorageDaemon qsd(dir, image, socket);
    auto dev = VhostUserDevice::connect_block({"disk0", socket, std::chrono::seconds(5)});
    Driver d;
    d.set_up();
    embervm::vmm::EventFd irqfd;  // stands for KVM's irqfd of the queue's MSI-X vector
    dev->set_queue_irqfd(0, irqfd.fd());  // before the activation: not kept
    dev->activate(d.activation(feature::kVersion1));
    CHECK(dev->metrics_json()["irqfd_queues"] == 0);

    // Offered: qemu-storage-daemon signals the irqfd itself for each completion (no EVENT_IDX:
    // it interrupts every time). libvhost-user writes a new call eventfd once as it takes it
    // (a spurious interrupt, harmless): taken here so the completions below are what is seen.
    dev->set_queue_irqfd(0, irqfd.fd());
    CHECK(dev->metrics_json()["irqfd_queues"] == 1);
    irqfd.consume();
    CHECK(d.run(0, 3, kSector) == 0);
    CHECK(signalled_within(irqfd, std::chrono::seconds(5)));
    CHECK(d.run(0, 4, kSector) == 0);
    CHECK(signalled_within(irqfd, std::chrono::seconds(5)));

    // Withdrawn: the completions go to the relay, the irqfd stays quiet.
    dev->set_queue_irqfd(0, -1);
    CHECK(dev->metrics_json()["irqfd_queues"] == 0);
    CHECK(d.run(0, 5, kSector) == 0);
    CHECK_FALSE(signalled_within(irqfd, std::chrono::milliseconds(300)));
    CHECK(dev->metrics_json()["call_switches"] == 2);
    CHECK(d.irq.errors.empty());

    // A reset forgets the offer; the next activation starts on the relay.
    dev->set_queue_irqfd(0, irqfd.fd());
    dev->reset();
    irqfd.consume();
    d.set_up();
    dev->activate(d.activation(feature::kVersion1));
    CHECK(dev->metrics_json()["irqfd_queues"] == 0);
    CHECK(d.run(0, 3, kSector) == 0);
    CHECK_FALSE(signalled_within(irqfd, std::chrono::milliseconds(300)));
    dev->reset();
}

TEST_CASE("vhost-user-blk: a pause stops the ring where the backend was; resume and a restore onto a new daemon "
          "go on from there",
          "[vhost_user][qsd][snapshot]") {
    embervm::test::TempDir dir;
    const std::string image = make_image(dir);
    const std::string first_socket = dir.file("first.sock");
    std::optional<StorageDaemon> first_qsd;
    first_qsd.emplace(dir, image, first_socket);
    auto dev = VhostUserDevice::connect_block({"disk0", first_socket, std::chrono::seconds(5)});
    Driver d;
    d.set_up();
    const uint64_t features = feature::kVersion1 | (dev->available_features() & (uint64_t{1} << 9));
    dev->activate(d.activation(features));
    d.mem.fill(GuestAddress(kData), kSector, 0xab);
    CHECK(d.run(1, 100, kSector) == 0);
    CHECK(d.run(0, 3, kSector) == 0);

    // The pause: GET_VRING_BASE says 2, the used ring is there, the transport's queue is set to it.
    dev->pause();
    CHECK(d.queues[0].next_avail() == 2);
    CHECK(d.queues[0].next_used() == 2);
    CHECK_FALSE(dev->save_state().empty());
    // Resume: the ring starts again at 2 and serves the next request.
    dev->resume();
    d.mem.fill(GuestAddress(kData), kSector, 0xcd);
    CHECK(d.run(1, 101, kSector) == 0);
    CHECK(d.irq.errors.empty());

    dev->pause();
    CHECK(d.queues[0].next_avail() == 3);
    const std::vector<uint8_t> state = dev->save_state();
    dev.reset();
    first_qsd.reset();  // the first daemon ends (it held the image's lock)

    // A new daemon on the same image, a new device restored from the state, the same guest memory
    // and queue (what the transport restores): the next request is number 4, and sees the data.
    const std::string second_socket = dir.file("second.sock");
    StorageDaemon second_qsd(dir, image, second_socket);
    auto restored = VhostUserDevice::connect_block({"disk0", second_socket, std::chrono::seconds(5)});
    SECTION("restored") {
        restored->restore_state(state);
        restored->activate(d.activation(features));
        CHECK(d.run(0, 101, kSector) == 0);
        CHECK(d.mem.read_obj<uint8_t>(GuestAddress(kData)) == 0xcd);
        CHECK(d.ring->used_idx() == 4);
        CHECK(d.irq.errors.empty());
        restored->reset();
    }
    SECTION("a queue the state does not match: refused before the backend hears of it") {
        d.queues[0].set_next_avail(2);
        restored->restore_state(state);
        CHECK_THROWS_WITH(restored->activate(d.activation(features)),
                          Catch::Contains("vhost-user-blk disk0") && Catch::Contains("'vhost queue base'"));
        CHECK(restored->connected());
    }
    SECTION("a truncated state") {
        CHECK_THROWS_AS(restored->restore_state(std::span(state).first(state.size() - 1)), embervm::StateError);
    }
    SECTION("another configuration space (another image size)") {
        auto bad = state;
        bad[8] ^= 1;  // after the version (4) and the blob's length (4): the capacity's first byte
        CHECK_THROWS_WITH(restored->restore_state(bad), Catch::Contains("'config space'"));
    }
}

}  // namespace unit_vhost_user_blk_test
