// Tests for virtio/net/tap: error messages for unusable TAP devices, and frames in both
// directions through a real TAP device, created in a private network namespace of a forked
// child (needs root / CAP_NET_ADMIN; without it the test fails, it does not skip).
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "virtio/net/net_device.h"
#include "virtio/net/tap.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_tap_test {

using embervm::virtio::net::kNetHdrSize;
using embervm::virtio::net::Tap;
namespace net_feature = embervm::virtio::net::net_feature;

namespace {

// Runs `body` in a forked child inside a new network namespace; returns its exit status
// (0: passed; otherwise the child printed why to stderr).
template <typename Fn>
int in_netns_child(Fn body) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (::unshare(CLONE_NEWNET) != 0) {
            std::fprintf(stderr, "tap_test: unshare(CLONE_NEWNET): %s (needs root)\n", std::strerror(errno));
            ::_exit(90);
        }
        int rc = 0;
        try {
            rc = body();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "tap_test: exception: %s\n", e.what());
            rc = 91;
        }
        ::_exit(rc);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#define CHILD_CHECK(cond, code)                                                   \
    do {                                                                          \
        if (!(cond)) {                                                            \
            std::fprintf(stderr, "tap_test: %s failed (%s)\n", #cond, std::strerror(errno)); \
            return code;                                                          \
        }                                                                         \
    } while (0)

constexpr uint8_t kGuestMac[6] = {0x06, 0, 0, 0, 0, 0x42};
constexpr uint8_t kHostIp[4] = {10, 11, 12, 1};  // the TAP's address on the host side
constexpr uint8_t kGuestIp[4] = {10, 11, 12, 2};

// Turns IPv6 off for the interfaces created from now on in this network namespace: a fresh
// interface would otherwise send DAD, MLD and router solicitations at moments of its own, which
// a test reading its TAP would have to tell apart from its frames. No IPv6 at all is fine too.
void quiet_ipv6() {
    const int fd = ::open("/proc/sys/net/ipv6/conf/default/disable_ipv6", O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    [[maybe_unused]] const ssize_t n = ::write(fd, "1", 1);
    ::close(fd);
}

// A persistent TAP device `name`, up, with address 10.11.12.1/24.
int make_tap(const char* name) {
    quiet_ipv6();
    const int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    CHILD_CHECK(fd >= 0, 10);
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    CHILD_CHECK(::ioctl(fd, TUNSETIFF, &ifr) == 0, 11);
    CHILD_CHECK(::ioctl(fd, TUNSETPERSIST, 1) == 0, 12);
    ::close(fd);
    const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHILD_CHECK(s >= 0, 13);
    ifreq up{};
    std::strncpy(up.ifr_name, name, IFNAMSIZ - 1);
    CHILD_CHECK(::ioctl(s, SIOCGIFFLAGS, &up) == 0, 14);
    up.ifr_flags |= IFF_UP;
    CHILD_CHECK(::ioctl(s, SIOCSIFFLAGS, &up) == 0, 15);
    ifreq addr{};
    std::strncpy(addr.ifr_name, name, IFNAMSIZ - 1);
    auto* sin = reinterpret_cast<sockaddr_in*>(&addr.ifr_addr);
    sin->sin_family = AF_INET;
    std::memcpy(&sin->sin_addr, kHostIp, 4);
    CHILD_CHECK(::ioctl(s, SIOCSIFADDR, &addr) == 0, 16);
    const uint8_t mask[4] = {255, 255, 255, 0};
    std::memcpy(&sin->sin_addr, mask, 4);
    CHILD_CHECK(::ioctl(s, SIOCSIFNETMASK, &addr) == 0, 17);
    ::close(s);
    return 0;
}

// A netlink socket that hears of link changes (RTM_NEWLINK), or -1.
int link_events() {
    const int nl = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (nl < 0) return -1;
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    sa.nl_groups = RTMGRP_LINK;
    if (::bind(nl, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
        ::close(nl);
        return -1;
    }
    return nl;
}

// Waits (ten seconds at most) for the link change that reports `ifindex` running. Opening the
// TAP turns its carrier on, but the kernel activates the interface's transmit queue a moment
// later (linkwatch), and announces it then: a frame the host sends before is dropped silently.
bool wait_running(int nl, int ifindex) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::vector<char> buf(16384);
    while (std::chrono::steady_clock::now() < deadline) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd p{nl, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0))) != 1) continue;
        ssize_t n = ::recv(nl, buf.data(), buf.size(), 0);
        if (n < 0) return false;
        for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, static_cast<size_t>(n));
             h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type != RTM_NEWLINK) continue;
            const auto* ifi = static_cast<const ifinfomsg*>(NLMSG_DATA(h));
            if (ifi->ifi_index == ifindex && (ifi->ifi_flags & IFF_RUNNING) != 0) return true;
        }
    }
    return false;
}

// Reads frames from `tap` (vnet header stripped into `frame`) until `match` accepts one or
// ten seconds pass; other traffic of the interface is skipped.
template <typename Match>
bool read_matching(Tap& tap, std::vector<uint8_t>& frame, Match match) {
    std::vector<uint8_t> buf(kNetHdrSize + 65550);
    const iovec iov{buf.data(), buf.size()};
    // A deadline, not a number of tries: frames the test does not want (IPv6 on a fresh
    // interface) and a loaded host (the nested-KVM VM of scripts/with-kvm next to the unit
    // tests) must not use the wait up.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        const ssize_t r = tap.read_frame(std::span<const iovec>(&iov, 1));
        if (r == -EAGAIN) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            pollfd p{tap.fd(), POLLIN, 0};
            ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
            continue;
        }
        if (r < static_cast<ssize_t>(kNetHdrSize)) return false;
        frame.assign(buf.begin() + kNetHdrSize, buf.begin() + r);
        if (match(frame)) return true;
    }
    return false;
}

std::vector<uint8_t> test_frame(uint16_t ethertype, size_t payload, uint8_t seed) {
    std::vector<uint8_t> f(14 + payload);
    std::memset(f.data(), 0xff, 6);                                  // broadcast
    std::memcpy(f.data() + 6, kGuestMac, 6);
    f[12] = static_cast<uint8_t>(ethertype >> 8);
    f[13] = static_cast<uint8_t>(ethertype);
    for (size_t i = 0; i < payload; i++) f[14 + i] = static_cast<uint8_t>(seed + i);
    return f;
}

}  // namespace

TEST_CASE("tap: a missing device is named in the error", "[virtio][net][tap]") {
    try {
        Tap tap("embervm-nope0");
        FAIL("opened a TAP device that does not exist");
    } catch (const std::exception& e) {
        const std::string msg = e.what();
        CHECK(msg.find("'embervm-nope0' does not exist") != std::string::npos);
        CHECK(msg.find("ip tuntap add") != std::string::npos);
    }
    CHECK_THROWS(Tap(""));
    CHECK_THROWS(Tap("a-name-that-is-far-too-long-for-linux"));
}

TEST_CASE("tap: frames both ways through a real TAP device", "[virtio][net][tap]") {
    const int rc = in_netns_child([]() -> int {
        if (const int r = make_tap("ut-tap0"); r != 0) return r;
        const int ifindex = static_cast<int>(::if_nametoindex("ut-tap0"));
        const int nl = link_events();
        CHILD_CHECK(nl >= 0, 18);
        Tap tap("ut-tap0");
        CHILD_CHECK(wait_running(nl, ifindex), 19);
        ::close(nl);
        CHILD_CHECK((tap.supported_offload_features() & net_feature::kCsum) != 0, 20);
        // A second opener is refused with a clear reason (the device is attached).
        try {
            Tap again("ut-tap0");
            std::fprintf(stderr, "tap_test: second open succeeded\n");
            return 21;
        } catch (const std::exception& e) {
            CHILD_CHECK(std::string(e.what()).find("ut-tap0") != std::string::npos, 22);
        }
        tap.set_offloads(net_feature::kGuestCsum | net_feature::kGuestTso4);
        tap.set_offloads(tap.supported_offload_features());  // everything it offers is accepted
        tap.set_offloads(0);

        const int ps = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(0x88b5));
        CHILD_CHECK(ps >= 0, 23);
        sockaddr_ll sll{};
        sll.sll_family = AF_PACKET;
        sll.sll_protocol = htons(0x88b5);
        sll.sll_ifindex = ifindex;
        CHILD_CHECK(::bind(ps, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) == 0, 24);

        // Guest -> host: vnet header (no offload) + frame, seen by a packet socket on the TAP.
        const auto out = test_frame(0x88b5, 200, 1);
        uint8_t hdr[kNetHdrSize] = {};
        iovec iov[2] = {{hdr, sizeof(hdr)}, {const_cast<uint8_t*>(out.data()), out.size()}};
        CHILD_CHECK(tap.write_frame(iov) == static_cast<ssize_t>(sizeof(hdr) + out.size()), 25);
        pollfd p{ps, POLLIN, 0};
        CHILD_CHECK(::poll(&p, 1, 2000) == 1, 26);
        std::vector<uint8_t> got(2048);
        const ssize_t n = ::recv(ps, got.data(), got.size(), 0);
        CHILD_CHECK(n == static_cast<ssize_t>(out.size()), 27);
        got.resize(static_cast<size_t>(n));
        CHILD_CHECK(got == out, 28);

        // Host -> guest: a frame sent on the TAP arrives with a vnet header in front.
        const auto in = test_frame(0x88b5, 300, 9);
        CHILD_CHECK(::sendto(ps, in.data(), in.size(), 0, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) ==
                        static_cast<ssize_t>(in.size()), 29);
        // Anything else the kernel sends on a fresh interface is skipped.
        std::vector<uint8_t> got_in;
        CHILD_CHECK(read_matching(tap, got_in, [&](const std::vector<uint8_t>& f) {
                        return f.size() == in.size() && f[12] == 0x88 && f[13] == 0xb5;
                    }),
                    30);
        CHILD_CHECK(got_in == in, 31);
        // Read once only, and non-blocking: the TAP is drained of the test's frames with -EAGAIN
        // (traffic of the interface's own, if any, is passed over).
        std::vector<uint8_t> buf(kNetHdrSize + 65550);
        iovec riov{buf.data(), buf.size()};
        for (;;) {
            const ssize_t r = tap.read_frame(std::span<const iovec>(&riov, 1));
            if (r == -EAGAIN) break;
            CHILD_CHECK(r >= static_cast<ssize_t>(kNetHdrSize + 14), 32);
            CHILD_CHECK(!(buf[kNetHdrSize + 12] == 0x88 && buf[kNetHdrSize + 13] == 0xb5), 32);
        }
        ::close(ps);

        // Through the host's IP stack: an ARP request for the TAP's address is answered.
        std::vector<uint8_t> arp = test_frame(0x0806, 28, 0);
        const uint8_t arp_hdr[8] = {0, 1, 8, 0, 6, 4, 0, 1};  // Ethernet, IPv4, request
        std::memcpy(arp.data() + 14, arp_hdr, 8);
        std::memcpy(arp.data() + 22, kGuestMac, 6);           // sender MAC
        std::memcpy(arp.data() + 28, kGuestIp, 4);            // sender IP
        std::memset(arp.data() + 32, 0, 6);                   // target MAC
        std::memcpy(arp.data() + 38, kHostIp, 4);             // target IP
        iovec arp_iov[2] = {{hdr, sizeof(hdr)}, {arp.data(), arp.size()}};
        CHILD_CHECK(tap.write_frame(arp_iov) == static_cast<ssize_t>(sizeof(hdr) + arp.size()), 33);
        std::vector<uint8_t> reply;
        const bool answered = read_matching(tap, reply, [](const std::vector<uint8_t>& f) {
            return f.size() >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[21] == 2 &&  // ARP reply
                   std::memcmp(f.data(), kGuestMac, 6) == 0 && std::memcmp(f.data() + 28, kHostIp, 4) == 0;
        });
        CHILD_CHECK(answered, 34);

        // A device that exists but is not a TAP device is refused, by name.
        try {
            Tap lo("lo");
            std::fprintf(stderr, "tap_test: opened lo as a TAP device\n");
            return 35;
        } catch (const std::exception& e) {
            const std::string msg = e.what();
            CHILD_CHECK(msg.find("'lo'") != std::string::npos && msg.find("not a TAP device") != std::string::npos, 36);
        }
        return 0;
    });
    INFO("child exit status " << rc << " (see stderr for the failed step)");
    CHECK(rc == 0);
}

}  // namespace unit_tap_test
