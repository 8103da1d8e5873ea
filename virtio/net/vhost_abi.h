// The vhost ioctls and structures as the kernel defines them (linux/vhost.h, vhost_types.h),
// spelled out here because linux/vhost.h includes linux/virtio_ring.h, whose inline C does not
// compile as C++. Header only: the seccomp lists use the request numbers too.
#pragma once

#include <linux/ioctl.h>

#include <cstdint>

namespace embervm::virtio::net::vhost_abi {

struct VringState {  // struct vhost_vring_state
    uint32_t index;
    uint32_t num;
};
struct VringFile {  // struct vhost_vring_file
    uint32_t index;
    int32_t fd;  // -1: none (NET_SET_BACKEND: detach)
};
struct VringAddr {  // struct vhost_vring_addr
    uint32_t index;
    uint32_t flags;
    uint64_t desc_user_addr;
    uint64_t used_user_addr;
    uint64_t avail_user_addr;
    uint64_t log_guest_addr;
};
struct MemoryRegion {  // struct vhost_memory_region
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t flags_padding;
};
struct Memory {  // struct vhost_memory, followed by nregions MemoryRegion
    uint32_t nregions;
    uint32_t padding;
};
static_assert(sizeof(VringState) == 8 && sizeof(VringFile) == 8 && sizeof(VringAddr) == 40);
static_assert(sizeof(MemoryRegion) == 32 && sizeof(Memory) == 8);

inline constexpr unsigned kVirtio = 0xaf;  // VHOST_VIRTIO
inline constexpr unsigned long kGetFeatures = _IOR(kVirtio, 0x00, uint64_t);
inline constexpr unsigned long kSetFeatures = _IOW(kVirtio, 0x00, uint64_t);
inline constexpr unsigned long kSetOwner = _IO(kVirtio, 0x01);
inline constexpr unsigned long kSetMemTable = _IOW(kVirtio, 0x03, Memory);
inline constexpr unsigned long kSetVringNum = _IOW(kVirtio, 0x10, VringState);
inline constexpr unsigned long kSetVringAddr = _IOW(kVirtio, 0x11, VringAddr);
inline constexpr unsigned long kSetVringBase = _IOW(kVirtio, 0x12, VringState);
inline constexpr unsigned long kGetVringBase = _IOWR(kVirtio, 0x12, VringState);
inline constexpr unsigned long kSetVringKick = _IOW(kVirtio, 0x20, VringFile);
inline constexpr unsigned long kSetVringCall = _IOW(kVirtio, 0x21, VringFile);
inline constexpr unsigned long kSetVringErr = _IOW(kVirtio, 0x22, VringFile);
inline constexpr unsigned long kNetSetBackend = _IOW(kVirtio, 0x30, VringFile);

}  // namespace embervm::virtio::net::vhost_abi
