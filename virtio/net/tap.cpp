// The TAP backend of virtio-net: opening the device, frames in and out with a vnet header.
#include "virtio/net/tap.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "virtio/net/net_device.h"
#include "vmm/sys/error.h"

namespace embervm::virtio::net {

namespace {

// TUNSETOFFLOAD flags for the receive offloads the driver accepted.
unsigned tun_offloads(uint64_t acked, bool ufo) {
    unsigned f = 0;
    if ((acked & net_feature::kGuestCsum) == 0) return 0;  // every offload needs partial checksums
    f |= TUN_F_CSUM;
    if (acked & net_feature::kGuestTso4) f |= TUN_F_TSO4;
    if (acked & net_feature::kGuestTso6) f |= TUN_F_TSO6;
    if ((acked & net_feature::kGuestEcn) && (f & (TUN_F_TSO4 | TUN_F_TSO6))) f |= TUN_F_TSO_ECN;
    if (ufo && (acked & net_feature::kGuestUfo)) f |= TUN_F_UFO;
    return f;
}

}  // namespace

Tap::Tap(const std::string& name) : name_(name) {
    const auto fail = [&](std::string_view what, int err) {
        return Error(fmt::format("TAP device '{}': {}: {}", name_, what, std::strerror(err)));
    };
    if (name.empty() || name.size() >= IFNAMSIZ) {
        throw Error(fmt::format("TAP device '{}': not a valid interface name", name));
    }
    if (::if_nametoindex(name.c_str()) == 0) {
        throw Error(fmt::format("TAP device '{}' does not exist (create it with: ip tuntap add {} mode tap)", name,
                                name));
    }
    fd_ = FileDescriptor(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (!fd_) {
        throw fail("cannot open /dev/net/tun", errno);
    }
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, name.c_str(), name.size());
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (::ioctl(fd_.get(), TUNSETIFF, &ifr) != 0) {
        const int err = errno;
        if (err == EPERM) throw fail("TUNSETIFF refused (no permission: needs CAP_NET_ADMIN or the TAP's owner)", err);
        if (err == EBUSY) throw fail("TUNSETIFF refused (in use by another process)", err);
        if (err == EINVAL) throw fail("TUNSETIFF refused (not a TAP device, or its flags differ)", err);
        throw fail("TUNSETIFF", err);
    }
    int hdr = static_cast<int>(kNetHdrSize);
    if (::ioctl(fd_.get(), TUNSETVNETHDRSZ, &hdr) != 0) {
        throw fail("TUNSETVNETHDRSZ", errno);
    }
    // What the kernel can hand us: probe with UFO, then without (newer kernels refuse TUN_F_UFO).
    unsigned all = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    ufo_ = ::ioctl(fd_.get(), TUNSETOFFLOAD, all | TUN_F_UFO) == 0;
    const bool offloads = ufo_ || ::ioctl(fd_.get(), TUNSETOFFLOAD, all) == 0;
    ::ioctl(fd_.get(), TUNSETOFFLOAD, 0U);  // nothing until the driver accepts features
    // Host side (guest TX): the TAP takes partial checksums and GSO frames with any vnet header.
    offloads_ = net_feature::kCsum | net_feature::kHostTso4 | net_feature::kHostTso6 | net_feature::kHostEcn |
                net_feature::kHostUfo;
    if (offloads) {
        offloads_ |= net_feature::kGuestCsum | net_feature::kGuestTso4 | net_feature::kGuestTso6 |
                     net_feature::kGuestEcn;
        if (ufo_) offloads_ |= net_feature::kGuestUfo;
    }
}

ssize_t Tap::read_frame(std::span<const iovec> iov) {
    for (;;) {
        const ssize_t n = ::readv(fd_.get(), iov.data(), static_cast<int>(iov.size()));
        if (n >= 0) return n;
        if (errno != EINTR) return -errno;
    }
}

ssize_t Tap::write_frame(std::span<const iovec> iov) {
    for (;;) {
        const ssize_t n = ::writev(fd_.get(), iov.data(), static_cast<int>(iov.size()));
        if (n >= 0) return n;
        if (errno != EINTR) return -errno;
    }
}

void Tap::set_offloads(uint64_t acked) {
    if (::ioctl(fd_.get(), TUNSETOFFLOAD, tun_offloads(acked, ufo_)) != 0) {
        throw sys_error(fmt::format("TAP device '{}': TUNSETOFFLOAD", name_));
    }
}

}  // namespace embervm::virtio::net
