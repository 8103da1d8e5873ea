// The in-kernel vhost interface (/dev/vhost-net): the ioctls that hand a device's virtqueues to
// the host kernel, which then moves the buffers itself. VhostKernel is the interface the
// vhost-net device talks to, so unit tests can record the sequence with a fake; VhostNetFd is
// the real thing. Each call is one ioctl, with the kernel's structures spelled as plain values.
//
// Semantics (linux/vhost.h): SET_OWNER binds the device to this process (its memory is what the
// user addresses below point into); SET_MEM_TABLE maps guest physical ranges to those
// addresses; per ring, NUM (size), BASE (the next available index to take), ADDR (the rings'
// user addresses), KICK (an eventfd the guest's notifications arrive on), CALL (an eventfd the
// kernel writes when it wants the guest interrupted), ERR (an eventfd the kernel writes when the
// guest broke the ring); NET_SET_BACKEND attaches a TAP (or, with -1, detaches it, stopping the
// ring); GET_VRING_BASE then returns where the kernel stopped.
//
// Threading: not synchronised; the device calls it under its own lock.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace embervm::virtio::net {

// One guest memory region for SET_MEM_TABLE.
struct VhostMemoryRegion {
    uint64_t guest_phys_addr;
    uint64_t size;
    uint64_t userspace_addr;
    bool operator==(const VhostMemoryRegion&) const = default;
};

// A ring's addresses in this process (SET_VRING_ADDR).
struct VhostVringAddr {
    uint64_t desc;
    uint64_t avail;
    uint64_t used;
    bool operator==(const VhostVringAddr&) const = default;
};

class VhostKernel {
public:
    virtual ~VhostKernel() = default;

    // Each throws Error naming the ioctl (and the ring) with errno's text.
    virtual uint64_t get_features() = 0;
    virtual void set_features(uint64_t features) = 0;
    virtual void set_mem_table(std::span<const VhostMemoryRegion> regions) = 0;
    virtual void set_vring_num(uint32_t ring, uint32_t num) = 0;
    virtual void set_vring_base(uint32_t ring, uint32_t base) = 0;
    virtual void set_vring_addr(uint32_t ring, const VhostVringAddr& addr) = 0;
    virtual void set_vring_kick(uint32_t ring, int eventfd) = 0;
    virtual void set_vring_call(uint32_t ring, int eventfd) = 0;
    virtual void set_vring_err(uint32_t ring, int eventfd) = 0;
    // NET_SET_BACKEND: `fd` a TAP, or -1 to detach (the ring stops).
    virtual void set_backend(uint32_t ring, int fd) = 0;
    virtual uint32_t get_vring_base(uint32_t ring) = 0;
};

// /dev/vhost-net, opened and owned (SET_OWNER) by this process.
class VhostNetFd final : public VhostKernel {
public:
    // Throws Error: "/dev/vhost-net: cannot open (...): No such file or directory" and the like,
    // with a hint (load vhost_net, permissions).
    VhostNetFd();
    ~VhostNetFd() override;
    VhostNetFd(const VhostNetFd&) = delete;
    VhostNetFd& operator=(const VhostNetFd&) = delete;

    uint64_t get_features() override;
    void set_features(uint64_t features) override;
    void set_mem_table(std::span<const VhostMemoryRegion> regions) override;
    void set_vring_num(uint32_t ring, uint32_t num) override;
    void set_vring_base(uint32_t ring, uint32_t base) override;
    void set_vring_addr(uint32_t ring, const VhostVringAddr& addr) override;
    void set_vring_kick(uint32_t ring, int eventfd) override;
    void set_vring_call(uint32_t ring, int eventfd) override;
    void set_vring_err(uint32_t ring, int eventfd) override;
    void set_backend(uint32_t ring, int fd) override;
    uint32_t get_vring_base(uint32_t ring) override;

private:
    int fd_ = -1;
};

}  // namespace embervm::virtio::net
