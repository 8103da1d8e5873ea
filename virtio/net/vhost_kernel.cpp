// /dev/vhost-net: one ioctl per call (see vhost_kernel.h).
#include "virtio/net/vhost_kernel.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "virtio/net/vhost_abi.h"
#include "vmm/sys/error.h"

namespace embervm::virtio::net {

namespace {

namespace abi = vhost_abi;

constexpr const char* kPath = "/dev/vhost-net";

void check(int rc, std::string_view what) {
    if (rc < 0) throw sys_error(fmt::format("{}: {}", kPath, what));
}

void vring_file(int fd, unsigned long request, const char* name, uint32_t ring, int file) {
    abi::VringFile f{};
    f.index = ring;
    f.fd = file;
    check(::ioctl(fd, request, &f), fmt::format("{} (ring {})", name, ring));
}

void vring_state(int fd, unsigned long request, const char* name, uint32_t ring, uint32_t num) {
    abi::VringState s{};
    s.index = ring;
    s.num = num;
    check(::ioctl(fd, request, &s), fmt::format("{} (ring {}, {})", name, ring, num));
}

}  // namespace

VhostNetFd::VhostNetFd() {
    fd_ = ::open(kPath, O_RDWR | O_CLOEXEC);
    if (fd_ < 0) {
        const int err = errno;
        const char* hint = err == ENOENT   ? " (load the vhost_net module: modprobe vhost_net)"
                           : err == EACCES ? " (no permission: needs read/write access to it)"
                                           : "";
        throw Error(fmt::format("{}: cannot open: {}{}", kPath, std::strerror(err), hint));
    }
    if (::ioctl(fd_, abi::kSetOwner) < 0) {
        const int err = errno;
        ::close(fd_);
        fd_ = -1;
        throw Error(fmt::format("{}: VHOST_SET_OWNER: {}", kPath, std::strerror(err)));
    }
}

VhostNetFd::~VhostNetFd() {
    if (fd_ >= 0) ::close(fd_);
}

uint64_t VhostNetFd::get_features() {
    uint64_t f = 0;
    check(::ioctl(fd_, abi::kGetFeatures, &f), "VHOST_GET_FEATURES");
    return f;
}

void VhostNetFd::set_features(uint64_t features) {
    check(::ioctl(fd_, abi::kSetFeatures, &features), fmt::format("VHOST_SET_FEATURES {:#x}", features));
}

void VhostNetFd::set_mem_table(std::span<const VhostMemoryRegion> regions) {
    // vhost_memory ends in a flexible array: lay it out by hand.
    std::vector<uint8_t> buf(sizeof(abi::Memory) + regions.size() * sizeof(abi::MemoryRegion));
    abi::Memory head{};
    head.nregions = static_cast<uint32_t>(regions.size());
    std::memcpy(buf.data(), &head, sizeof(head));
    for (size_t i = 0; i < regions.size(); i++) {
        abi::MemoryRegion r{};
        r.guest_phys_addr = regions[i].guest_phys_addr;
        r.memory_size = regions[i].size;
        r.userspace_addr = regions[i].userspace_addr;
        std::memcpy(buf.data() + sizeof(abi::Memory) + i * sizeof(r), &r, sizeof(r));
    }
    check(::ioctl(fd_, abi::kSetMemTable, buf.data()),
          fmt::format("VHOST_SET_MEM_TABLE ({} regions)", regions.size()));
}

void VhostNetFd::set_vring_num(uint32_t ring, uint32_t num) {
    vring_state(fd_, abi::kSetVringNum, "VHOST_SET_VRING_NUM", ring, num);
}

void VhostNetFd::set_vring_base(uint32_t ring, uint32_t base) {
    vring_state(fd_, abi::kSetVringBase, "VHOST_SET_VRING_BASE", ring, base);
}

void VhostNetFd::set_vring_addr(uint32_t ring, const VhostVringAddr& addr) {
    abi::VringAddr a{};
    a.index = ring;
    a.desc_user_addr = addr.desc;
    a.avail_user_addr = addr.avail;
    a.used_user_addr = addr.used;
    check(::ioctl(fd_, abi::kSetVringAddr, &a), fmt::format("VHOST_SET_VRING_ADDR (ring {})", ring));
}

void VhostNetFd::set_vring_kick(uint32_t ring, int eventfd) {
    vring_file(fd_, abi::kSetVringKick, "VHOST_SET_VRING_KICK", ring, eventfd);
}

void VhostNetFd::set_vring_call(uint32_t ring, int eventfd) {
    vring_file(fd_, abi::kSetVringCall, "VHOST_SET_VRING_CALL", ring, eventfd);
}

void VhostNetFd::set_vring_err(uint32_t ring, int eventfd) {
    vring_file(fd_, abi::kSetVringErr, "VHOST_SET_VRING_ERR", ring, eventfd);
}

void VhostNetFd::set_backend(uint32_t ring, int fd) {
    vring_file(fd_, abi::kNetSetBackend, "VHOST_NET_SET_BACKEND", ring, fd);
}

uint32_t VhostNetFd::get_vring_base(uint32_t ring) {
    abi::VringState s{};
    s.index = ring;
    check(::ioctl(fd_, abi::kGetVringBase, &s), fmt::format("VHOST_GET_VRING_BASE (ring {})", ring));
    return s.num;
}

}  // namespace embervm::virtio::net
