// Tests for virtio/vhost_user/vhost_user_device as virtio-fs against Debian's virtiofsd
// (/usr/lib/qemu/virtiofsd, QEMU 7.2's C daemon; needs root) on a temporary directory, no KVM:
// the test is the FUSE driver. It writes FUSE_INIT and FUSE_LOOKUP requests into a request
// queue of memfd-backed guest memory, kicks the queue's eventfd and reads the daemon's answers;
// also the configuration space, a queue count the daemon cannot serve, and the daemon's death.
#include <catch2/catch.hpp>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "tests/unit/temp_dir.h"
#include "tests/unit/virtio/ring_driver.h"
#include "virtio/vhost_user/vhost_user_device.h"
#include "vmm/sys/eventfd.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_vhost_user_fs_test {

using namespace embervm::virtio;
using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using embervm::memory::MemoryBacking;
using embervm::virtio::testing::Buf;
using embervm::virtio::testing::FakeInterrupt;
using embervm::virtio::testing::RingDriver;
using embervm::virtio::vhost_user::FsOptions;
using embervm::virtio::vhost_user::VhostUserDevice;


namespace {

constexpr const char* kVirtiofsd = "/usr/lib/qemu/virtiofsd";
constexpr uint64_t kRings = 0x10000;  // queue q's rings at kRings + q * 0x4000
constexpr uint64_t kIn = 0x40000;
constexpr uint64_t kOut = 0x41000;
constexpr uint32_t kFuseInit = 26;
constexpr uint32_t kFuseLookup = 1;

// Whether a Unix socket listens at `path` (/proc/net/unix, flag __SO_ACCEPTCON). virtiofsd
// serves one connection and exits when it closes, so the test may not probe by connecting.
bool listening(const std::string& path) {
    std::ifstream in("/proc/net/unix");
    std::string line;
    while (std::getline(in, line)) {
        if (line.size() > path.size() && line.compare(line.size() - path.size(), path.size(), path) == 0 &&
            line.find(" 00010000 ") != std::string::npos) {
            return true;
        }
    }
    return false;
}

// virtiofsd sharing `dir` at `socket`, our child; killed at the end.
class Virtiofsd {
public:
    Virtiofsd(const std::string& dir, const std::string& socket) {
        const std::string sock_arg = "--socket-path=" + socket;
        const std::string source = "source=" + dir;
        // sandbox=chroot: one process. With the default (namespace) virtiofsd forks a child that
        // serves the socket and only gets SIGTERM when its parent dies, so killing the pid we
        // know would leave the daemon answering for a while.
        const char* argv[] = {kVirtiofsd, sock_arg.c_str(), "-o", source.c_str(), "-o", "cache=none",
                              "-o", "sandbox=chroot", "-o", "log_level=warn", nullptr};
        REQUIRE(::posix_spawn(&pid_, kVirtiofsd, nullptr, nullptr, const_cast<char**>(argv), ::environ) == 0);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!listening(socket) && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        REQUIRE(listening(socket));
    }
    ~Virtiofsd() { stop(); }
    void stop() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

private:
    pid_t pid_ = -1;
};

// The FUSE driver's side: hiprio queue 0 and request queue 1.
struct FuseDriver {
    GuestMemory mem{{{GuestAddress(0), 0x100000}}, MemoryBacking::SharedMemfd};
    std::vector<Queue> queues{Queue(1024), Queue(1024)};
    std::vector<RingDriver> rings;
    embervm::vmm::EventFd kicks[2];
    int kick_fds[2] = {kicks[0].fd(), kicks[1].fd()};
    FakeInterrupt irq;
    uint64_t unique = 1;

    FuseDriver() {
        for (size_t q = 0; q < queues.size(); q++) rings.emplace_back(mem, queues[q], kRings + q * 0x4000, 64);
    }
    Activation activation(uint64_t features) {
        return Activation{mem, queues, features, irq, std::span<const int>(kick_fds, 2), nullptr};
    }
    // One request on the request queue: the in header + `body`; answers into `out_len` bytes.
    // Returns the answer (out header included) or an empty vector if none came in `wait`.
    std::vector<uint8_t> request(uint32_t opcode, uint64_t nodeid, const std::vector<uint8_t>& body, uint32_t out_len,
                                 std::chrono::milliseconds wait = std::chrono::seconds(10)) {
        std::vector<uint8_t> in(40, 0);
        const uint32_t len = static_cast<uint32_t>(in.size() + body.size());
        std::memcpy(in.data(), &len, 4);
        std::memcpy(in.data() + 4, &opcode, 4);
        std::memcpy(in.data() + 8, &unique, 8);
        std::memcpy(in.data() + 16, &nodeid, 8);
        in.insert(in.end(), body.begin(), body.end());
        mem.write(GuestAddress(kIn), in);
        mem.fill(GuestAddress(kOut), out_len, 0);
        RingDriver& ring = rings[1];
        const uint16_t before = ring.used_idx();
        ring.add({Buf{kIn, len, false}, Buf{kOut, out_len, true}});
        kicks[1].signal();
        const auto deadline = std::chrono::steady_clock::now() + wait;
        while (ring.used_idx() == before && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        if (ring.used_idx() == before) return {};
        const auto [id, used_len] = ring.used(before);
        std::vector<uint8_t> out(std::min(used_len, out_len));
        mem.read(GuestAddress(kOut), out);
        unique++;
        return out;
    }
    // FUSE_INIT 7.31; returns the answer's error field.
    int32_t init() {
        std::vector<uint8_t> body(64, 0);  // fuse_init_in: major, minor, max_readahead, flags, flags2, unused
        const uint32_t major = 7, minor = 31;
        std::memcpy(body.data(), &major, 4);
        std::memcpy(body.data() + 4, &minor, 4);
        const auto out = request(kFuseInit, 0, body, 16 + 256);
        REQUIRE(out.size() >= 16 + 8);
        int32_t error = 0;
        std::memcpy(&error, out.data() + 4, 4);
        uint32_t got_major = 0;
        std::memcpy(&got_major, out.data() + 16, 4);
        if (error == 0) CHECK(got_major == 7);
        return error;
    }
};

FsOptions fs_options(const std::string& tag, uint32_t queues = 1) {
    FsOptions o;
    o.tag = tag;
    o.num_request_queues = queues;
    return o;
}

embervm::virtio::vhost_user::VhostUserDeviceOptions device_options(const std::string& socket) {
    embervm::virtio::vhost_user::VhostUserDeviceOptions o;
    o.id = "share";
    o.socket_path = socket;
    o.reply_timeout = std::chrono::seconds(5);
    o.queue_size = 1024;
    return o;
}

}  // namespace

TEST_CASE("virtio-fs: virtiofsd answers FUSE_INIT and LOOKUP of a host file", "[vhost_user][virtiofsd]") {
    embervm::test::TempDir dir;
    const std::string share = dir.file("share");
    std::filesystem::create_directory(share);
    std::ofstream(share + "/hello.txt") << "hello from the host\n";
    Virtiofsd daemon(share, dir.file("fs.sock"));

    auto dev = VhostUserDevice::connect_fs(device_options(dir.file("fs.sock")), fs_options("hostshare"));
    CHECK(dev->device_type() == device_id::kFs);
    CHECK(dev->queue_max_sizes() == std::vector<uint16_t>{1024, 1024});
    CHECK((dev->available_features() & ~(feature::kRingIndirectDesc | feature::kRingEventIdx)) == 0);
    // virtio_fs_config: the tag NUL-padded to 36 bytes, then num_request_queues (le32).
    uint8_t config[40];
    std::memset(config, 0xee, sizeof(config));
    dev->read_config(0, config);
    CHECK(std::string(reinterpret_cast<char*>(config)) == "hostshare");
    CHECK(config[9] == 0);
    CHECK(config[35] == 0);
    CHECK(config[36] == 1);
    CHECK(config[39] == 0);

    FuseDriver d;
    dev->activate(d.activation(feature::kVersion1 | dev->available_features()));
    REQUIRE(d.init() == 0);
    const std::string name = "hello.txt";
    std::vector<uint8_t> body(name.begin(), name.end());
    body.push_back(0);
    const auto entry = d.request(kFuseLookup, 1, body, 16 + 128);
    REQUIRE(entry.size() >= 16 + 56);
    int32_t error = -1;
    std::memcpy(&error, entry.data() + 4, 4);
    CHECK(error == 0);
    uint64_t size = 0;  // fuse_entry_out.attr.size
    std::memcpy(&size, entry.data() + 16 + 48, 8);
    CHECK(size == 20);
    // A name that is not there: ENOENT from the daemon, nothing for the VMM.
    const std::string missing = "missing";
    std::vector<uint8_t> body2(missing.begin(), missing.end());
    body2.push_back(0);
    const auto none = d.request(kFuseLookup, 1, body2, 16 + 128);
    REQUIRE(none.size() >= 16);
    std::memcpy(&error, none.data() + 4, 4);
    CHECK(error == -ENOENT);
    CHECK(d.irq.errors.empty());
    CHECK(dev->metrics_json()["call_relays"] == 0);  // no event loop here: the relay is not run
    dev->reset();
}

TEST_CASE("virtio-fs: more request queues than virtiofsd serves is an error naming the socket",
          "[vhost_user][virtiofsd]") {
    embervm::test::TempDir dir;
    const std::string share = dir.file("share");
    std::filesystem::create_directory(share);
    Virtiofsd daemon(share, dir.file("fs.sock"));
    // QEMU 7.2's virtiofsd serves two queues: high priority and one request queue.
    CHECK_THROWS_WITH(VhostUserDevice::connect_fs(device_options(dir.file("fs.sock")), fs_options("t", 2)),
                      Catch::Contains("vhost-user-fs socket " + dir.file("fs.sock")) &&
                          Catch::Contains("3 wanted"));
}

TEST_CASE("virtio-fs: bad tags and queue counts are refused before connecting", "[vhost_user]") {
    embervm::test::TempDir dir;
    const auto opts = device_options(dir.file("none.sock"));
    CHECK_THROWS_WITH(VhostUserDevice::connect_fs(opts, fs_options("")), Catch::Contains("1 to 36 bytes"));
    CHECK_THROWS_WITH(VhostUserDevice::connect_fs(opts, fs_options(std::string(37, 'x'))),
                      Catch::Contains("1 to 36 bytes"));
    CHECK_THROWS_WITH(VhostUserDevice::connect_fs(opts, fs_options("t", 0)), Catch::Contains("num_request_queues 0"));
    CHECK_THROWS_WITH(VhostUserDevice::connect_fs(opts, fs_options("t", 17)), Catch::Contains("num_request_queues 17"));
    CHECK_THROWS_WITH(VhostUserDevice::connect_fs(opts, fs_options(std::string(36, 'x'))),
                      Catch::Contains("vhost-user-fs socket") && Catch::Contains("No such file"));
}

TEST_CASE("virtio-fs: virtiofsd killed fails the device, not the caller", "[vhost_user][virtiofsd]") {
    embervm::test::TempDir dir;
    const std::string share = dir.file("share");
    std::filesystem::create_directory(share);
    auto daemon = std::make_unique<Virtiofsd>(share, dir.file("fs.sock"));
    auto dev = VhostUserDevice::connect_fs(device_options(dir.file("fs.sock")), fs_options("t"));
    FuseDriver d;
    dev->activate(d.activation(feature::kVersion1));
    REQUIRE(d.init() == 0);
    daemon->stop();
    // The next request gets no answer; the reset's GET_VRING_BASE meets the closed socket.
    CHECK(d.request(kFuseLookup, 1, {'x', 0}, 16 + 128, std::chrono::milliseconds(500)).empty());
    dev->reset();
    CHECK_FALSE(dev->connected());
    CHECK_THROWS_WITH(dev->activate(d.activation(feature::kVersion1)), Catch::Contains("no connection"));
}

}  // namespace unit_vhost_user_fs_test
