// Tests for virtio/vhost_user/channel and frontend: the request sequences against a scripted
// backend on a socketpair (replies queued before the frontend asks, recorded from
// qemu-storage-daemon), descriptors passed with SCM_RIGHTS, and a backend that misbehaves or
// goes away.
#include <catch2/catch.hpp>

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "memory/guest_memory.h"
#include "tests/unit/virtio/vhost_user/recorded.h"
#include "tests/unit/virtio/vhost_user/send_fd.h"
#include "virtio/vhost_user/frontend.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_frontend_test {

using namespace embervm::virtio::vhost_user;
using embervm::FileDescriptor;
using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using embervm::test::vhost_user::from_hex;
using embervm::test::vhost_user::send_with_fd;
namespace rec = embervm::test::vhost_user;

namespace {

// The backend's end of the socket.
class ScriptedBackend {
public:
    ScriptedBackend() {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        frontend_end_.reset(sv[0]);
        backend_end_.reset(sv[1]);
    }
    Channel channel(std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
        return Channel(std::move(frontend_end_), timeout);
    }
    void queue_reply(std::string_view hex) {
        const auto bytes = from_hex(hex);
        REQUIRE(::write(backend_end_.get(), bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    }
    void queue_reply_with_fd(std::string_view hex, int fd) {
        const auto bytes = from_hex(hex);
        REQUIRE(send_with_fd(backend_end_.get(), bytes, fd) == static_cast<ssize_t>(bytes.size()));
    }

    struct Received {
        std::vector<uint8_t> bytes;
        std::vector<FileDescriptor> fds;
    };
    // One message the frontend sent (header + its payload), with the descriptors it carried.
    Received next() {
        Received r;
        r.bytes.resize(kHeaderSize);
        read_into(r, 0, kHeaderSize);
        uint32_t size;
        std::memcpy(&size, r.bytes.data() + 8, 4);
        r.bytes.resize(kHeaderSize + size);
        read_into(r, kHeaderSize, size);
        return r;
    }
    std::string next_hex() {
        const auto r = next();
        CHECK(r.fds.empty());
        std::string s;
        for (uint8_t b : r.bytes) s += fmt::format("{:02x}", b);
        return s;
    }
    bool nothing_more() {
        uint8_t b;
        return ::recv(backend_end_.get(), &b, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN;
    }
    void hang_up() { backend_end_.reset(); }
    // Stops sending (the frontend reads EOF) but still takes what the frontend sends.
    void stop_sending() { ::shutdown(backend_end_.get(), SHUT_WR); }

private:
    void read_into(Received& r, size_t at, size_t len) {
        size_t done = 0;
        while (done < len) {
            alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)]{};
            iovec iov{r.bytes.data() + at + done, len - done};
            msghdr msg{};
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control;
            msg.msg_controllen = sizeof(control);
            const ssize_t n = ::recvmsg(backend_end_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
            REQUIRE(n > 0);
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
                const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < count; i++) {
                    int fd;
                    std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                    r.fds.emplace_back(fd);
                }
            }
            done += static_cast<size_t>(n);
        }
    }

    FileDescriptor frontend_end_;
    FileDescriptor backend_end_;
};

constexpr uint64_t kAllProtocol =
    (uint64_t{1} << kProtocolMq) | (uint64_t{1} << kProtocolReplyAck) | (uint64_t{1} << kProtocolConfig);

// Runs the set-up against the recorded qemu-storage-daemon replies.
Frontend connected(ScriptedBackend& b) {
    b.queue_reply(rec::kFeaturesReply);
    b.queue_reply(rec::kProtocolFeaturesReply);
    b.queue_reply(rec::kSetOwnerAck);
    b.queue_reply(rec::kQueueNumReply);
    Frontend f(b.channel());
    f.connect(kAllProtocol);
    return f;
}

bool same_file(int a, int b) {
    struct stat sa{}, sb{};
    return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

std::string ack_for(Request r, uint64_t status) {
    return fmt::format("{:02x}00000005000000080000000{}00000000000000", static_cast<uint32_t>(r), status);
}

}  // namespace

TEST_CASE("vhost-user set-up sends the recorded sequence and negotiates the common features", "[vhost_user]") {
    ScriptedBackend b;
    Frontend f = connected(b);
    CHECK(b.next_hex() == rec::kGetFeatures);
    CHECK(b.next_hex() == rec::kGetProtocolFeatures);
    CHECK(b.next_hex() == rec::kSetProtocolFeatures);  // MQ | REPLY_ACK | CONFIG of 0x8f2b
    CHECK(b.next_hex() == rec::kSetOwnerNeedReply);
    CHECK(b.next_hex() == rec::kGetQueueNum);
    CHECK(b.nothing_more());
    CHECK(f.backend_features() == 0x175007e46);
    CHECK(f.has_protocol_feature(kProtocolConfig));
    CHECK(f.has_protocol_feature(kProtocolReplyAck));
    CHECK(f.queue_num() == 1);

    b.queue_reply(rec::kConfig60Reply);
    const auto config = f.get_config(0, 60);
    CHECK(b.next_hex() == rec::kGetConfig60);
    CHECK(config.size() == 60);
    CHECK(config[0] == 0x00);
    CHECK(config[2] == 0x02);  // capacity 0x20000
}

TEST_CASE("vhost-user without protocol features: no protocol exchange, no acks, no ring enable", "[vhost_user]") {
    ScriptedBackend b;
    b.queue_reply("01000000050000000800000000000000" "01000000");  // VERSION_1 only
    Frontend f(b.channel());
    f.connect(kAllProtocol);
    CHECK(b.next_hex() == rec::kGetFeatures);
    CHECK(b.next_hex() == "030000000100000000000000");  // SET_OWNER, no reply asked
    CHECK(b.nothing_more());
    CHECK(f.queue_num() == 1);
    CHECK_THROWS_AS(f.get_config(0, 60), ProtocolError);

    f.set_features(uint64_t{1} << 32);
    CHECK(b.next_hex() == "02000000010000000800000000000000" "01000000");
    const FileDescriptor kick(::eventfd(0, EFD_CLOEXEC)), call(::eventfd(0, EFD_CLOEXEC));
    f.start_vring(VringSetup{0, 128, 0, 0x1000, 0x2000, 0x3000, kick.get(), call.get()});
    for (int i = 0; i < 6; i++) b.next();  // NUM, BASE, ADDR, KICK, CALL, ERR
    CHECK(b.nothing_more());  // no SET_VRING_ENABLE: the ring runs from its kick
}

TEST_CASE("vhost-user start: features, memory table with the memfds, rings with kick and call", "[vhost_user]") {
    ScriptedBackend b;
    Frontend f = connected(b);
    for (int i = 0; i < 5; i++) b.next();

    b.queue_reply(ack_for(Request::SetFeatures, 0));
    f.set_features(0x100000246);  // VERSION_1 | BLK_SIZE | SEG_MAX | SIZE_MAX | FLUSH
    // The backend sees VHOST_USER_F_PROTOCOL_FEATURES as well, and a reply is asked for.
    CHECK(b.next_hex() == "02000000090000000800000046020040" "01000000");

    GuestMemory mem({{GuestAddress(0), 0x100000}, {GuestAddress(0x200000), 0x100000}},
                    embervm::memory::MemoryBacking::SharedMemfd);
    b.queue_reply(ack_for(Request::SetMemTable, 0));
    f.set_mem_table(mem.shared_regions());
    auto table = b.next();
    REQUIRE(table.fds.size() == 2);
    CHECK(same_file(table.fds[0].get(), mem.regions()[0].fd()));
    CHECK(same_file(table.fds[1].get(), mem.regions()[1].fd()));
    REQUIRE(table.bytes.size() == kHeaderSize + 8 + 2 * 32);
    uint64_t uaddr1;
    std::memcpy(&uaddr1, table.bytes.data() + kHeaderSize + 8 + 32 + 16, 8);
    CHECK(uaddr1 == reinterpret_cast<uint64_t>(mem.regions()[1].host_base()));

    const FileDescriptor kick(::eventfd(0, EFD_CLOEXEC)), call(::eventfd(0, EFD_CLOEXEC));
    for (auto r : {Request::SetVringNum, Request::SetVringBase, Request::SetVringAddr, Request::SetVringKick,
                   Request::SetVringCall, Request::SetVringErr, Request::SetVringEnable}) {
        b.queue_reply(ack_for(r, 0));
    }
    f.start_vring(VringSetup{0, 256, 7, 0x7f0000000000, 0x7f0000001000, 0x7f0000002000, kick.get(), call.get()});
    CHECK(b.next_hex() == "08000000090000000800000000000000" "00010000");
    CHECK(b.next_hex() == "0a000000090000000800000000000000" "07000000");
    CHECK(b.next().bytes.size() == kHeaderSize + 40);
    auto k = b.next();
    REQUIRE(k.fds.size() == 1);
    CHECK(same_file(k.fds[0].get(), kick.get()));
    auto c = b.next();
    REQUIRE(c.fds.size() == 1);
    CHECK(same_file(c.fds[0].get(), call.get()));
    CHECK(b.next_hex() == "0e000000090000000800000000010000" "00000000");  // ERR: no descriptor
    CHECK(b.next_hex() == "12000000090000000800000000000000" "01000000");  // ENABLE 1
    CHECK(b.nothing_more());

    b.queue_reply("0b00000005000000080000000000000042000000");
    CHECK(f.stop_vring(0) == 0x42);
    CHECK(b.next_hex() == "0b000000010000000800000000000000" "00000000");
}

TEST_CASE("vhost-user: a backend that misbehaves fails the request, never the process", "[vhost_user]") {
    ScriptedBackend b;

    SECTION("it refuses a request (non-zero ack)") {
        Frontend f = connected(b);
        b.queue_reply(ack_for(Request::SetFeatures, 1));
        CHECK_THROWS_AS(f.set_features(uint64_t{1} << 32), ProtocolError);
    }
    SECTION("it answers with descriptors attached") {
        const FileDescriptor stray(::eventfd(0, EFD_CLOEXEC));
        b.queue_reply_with_fd(rec::kFeaturesReply, stray.get());
        Frontend f(b.channel());
        CHECK_THROWS_AS(f.connect(kAllProtocol), ProtocolError);
    }
    SECTION("it claims an impossible number of queues") {
        b.queue_reply(rec::kFeaturesReply);
        b.queue_reply(rec::kProtocolFeaturesReply);
        b.queue_reply(rec::kSetOwnerAck);
        b.queue_reply("1100000005000000080000000000000000000000");
        Frontend f(b.channel());
        CHECK_THROWS_AS(f.connect(kAllProtocol), ProtocolError);
    }
    SECTION("it announces a huge payload") {
        b.queue_reply("0100000005000000ffffff7f");
        Frontend f(b.channel());
        CHECK_THROWS_AS(f.connect(kAllProtocol), ProtocolError);
    }
    SECTION("it hangs up mid-reply") {
        b.queue_reply("01000000050000000800000046");
        b.stop_sending();
        Frontend f(b.channel());
        CHECK_THROWS_WITH(f.connect(kAllProtocol), Catch::Contains("closed the connection"));
    }
    SECTION("it is gone before the request is sent (EPIPE, no SIGPIPE)") {
        b.hang_up();
        Frontend f(b.channel());
        CHECK_THROWS_AS(f.connect(kAllProtocol), ProtocolError);
    }
    SECTION("it never answers") {
        Frontend f(b.channel(std::chrono::milliseconds(50)));
        CHECK_THROWS_WITH(f.connect(kAllProtocol), Catch::Contains("no reply to GET_FEATURES within 50 ms"));
    }
}

}  // namespace unit_frontend_test
