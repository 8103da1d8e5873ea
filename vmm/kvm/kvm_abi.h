// KVM ioctls whose UAPI structs end in a flexible array member.
//
// The Linux 6.1 UAPI headers declare those arrays with __DECLARE_FLEX_ARRAY, which in C++
// wraps the array in a struct next to an *empty struct* - and an empty struct has size 1 in
// C++. So in C++ sizeof(kvm_cpuid2) is 12 (kernel: 8), offsetof(kvm_msrs, entries) is 16
// (kernel: 8), and the ioctl numbers derived from those sizes are ones the kernel does not
// know (KVM_GET_SUPPORTED_CPUID fails with EINVAL). This header gives the kernel's layout:
// a fixed header followed directly by the entries, and ioctl numbers computed from it.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>

namespace embervm::vmm::kvm_abi {

// struct kvm_cpuid2 / kvm_msrs / kvm_msr_list without their trailing array.
struct Cpuid2Header {
    uint32_t nent;
    uint32_t padding;
};
struct MsrsHeader {
    uint32_t nmsrs;
    uint32_t pad;
};
struct MsrListHeader {
    uint32_t nmsrs;
};
struct IrqRoutingHeader {  // struct kvm_irq_routing
    uint32_t nr;
    uint32_t flags;
};
static_assert(sizeof(Cpuid2Header) == 8 && sizeof(MsrsHeader) == 8 && sizeof(MsrListHeader) == 4 &&
              sizeof(IrqRoutingHeader) == 8);
static_assert(sizeof(kvm_cpuid_entry2) == 40 && sizeof(kvm_msr_entry) == 16 && sizeof(kvm_irq_routing_entry) == 48);

inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, Cpuid2Header);
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, Cpuid2Header);
inline constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, Cpuid2Header);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
inline constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, IrqRoutingHeader);

// struct kvm_xsave as the kernel sizes it (4096 bytes; its C++ view adds the flexible array's
// empty struct). KVM_GET_XSAVE2 fills as many bytes as KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) says.
struct XsaveRegion {
    uint32_t region[1024];
};
static_assert(sizeof(XsaveRegion) == 4096);
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, XsaveRegion);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, XsaveRegion);
inline constexpr unsigned long kGetXsave2 = _IOR(KVMIO, 0xcf, XsaveRegion);

// A header followed by `count` entries, laid out as the kernel expects, zero-initialised.
template <typename Header, typename Entry>
class FlexBuffer {
public:
    explicit FlexBuffer(size_t count)
        : count_(count), bytes_(sizeof(Header) + count * sizeof(Entry)), buf_(new uint64_t[(bytes_ + 7) / 8]()) {}
    Header* header() { return reinterpret_cast<Header*>(buf_.get()); }
    std::span<Entry> entries() {
        return {reinterpret_cast<Entry*>(reinterpret_cast<uint8_t*>(buf_.get()) + sizeof(Header)), count_};
    }
    void* data() { return buf_.get(); }

private:
    size_t count_;
    size_t bytes_;
    std::unique_ptr<uint64_t[]> buf_;  // 8-byte aligned, as the entries need
};

}  // namespace embervm::vmm::kvm_abi
