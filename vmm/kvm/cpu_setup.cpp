// Per-vCPU architectural set-up: CPUID, MSRs, FPU and local APIC LINT pins.
#include "vmm/kvm/cpu_setup.h"

#include <cstring>

#include "vmm/kvm/kvm.h"

namespace embervm::vmm {

namespace {
constexpr uint32_t kLeafFeatures = 0x1;
constexpr uint32_t kLeafCacheParams = 0x4;
constexpr uint32_t kLeafExtFeatures = 0x7;
constexpr uint32_t kLeafTopology = 0xb;
constexpr uint32_t kLeafTopologyV2 = 0x1f;
constexpr uint32_t kLeafKvmSignature = 0x40000000;
constexpr uint32_t kEcxHypervisor = 1u << 31;
constexpr uint32_t kEdxArchCapabilities = 1u << 29;

constexpr uint32_t kMsrIa32Tsc = 0x10;
constexpr uint32_t kMsrIa32SysenterCs = 0x174;
constexpr uint32_t kMsrIa32SysenterEsp = 0x175;
constexpr uint32_t kMsrIa32SysenterEip = 0x176;
constexpr uint32_t kMsrIa32MiscEnable = 0x1a0;
constexpr uint32_t kMsrMtrrDefType = 0x2ff;
constexpr uint32_t kMsrStar = 0xc0000081;
constexpr uint32_t kMsrLstar = 0xc0000082;
constexpr uint32_t kMsrCstar = 0xc0000083;
constexpr uint32_t kMsrSyscallMask = 0xc0000084;
constexpr uint32_t kMsrKernelGsBase = 0xc0000102;

constexpr uint64_t kMiscEnableFastStrings = 1;
constexpr uint64_t kMtrrEnable = 1u << 11;
constexpr uint64_t kMtrrTypeWriteBack = 6;

constexpr size_t kApicLvt0 = 0x350;
constexpr size_t kApicLvt1 = 0x360;
constexpr uint32_t kApicModeNmi = 0x4;
constexpr uint32_t kApicModeExtInt = 0x7;

uint32_t read_reg(const kvm_lapic_state& s, size_t off) {
    uint32_t v;
    std::memcpy(&v, s.regs + off, sizeof(v));
    return v;
}
void write_reg(kvm_lapic_state& s, size_t off, uint32_t v) { std::memcpy(s.regs + off, &v, sizeof(v)); }
uint32_t with_delivery_mode(uint32_t lvt, uint32_t mode) { return (lvt & ~0x700u) | (mode << 8); }
}  // namespace

std::vector<kvm_cpuid_entry2> build_vcpu_cpuid(const std::vector<kvm_cpuid_entry2>& supported, uint32_t index,
                                              uint32_t count) {
    std::vector<kvm_cpuid_entry2> out = supported;
    for (auto& e : out) {
        switch (e.function) {
            case kLeafFeatures:
                // EBX: [31:24] initial APIC ID, [23:16] logical processors per package, CLFLUSH size.
                e.ebx = (index << 24) | (count << 16) | (e.ebx & 0xffff);
                e.ecx |= kEcxHypervisor;
                if (count > 1) {
                    e.edx |= 1u << 28;  // HTT: the count field above is valid
                }
                break;
            case kLeafCacheParams:
                // EAX[31:26]: cores per package - 1; report one core per vCPU, no sharing.
                e.eax = (e.eax & 0x3ffffff) | ((count - 1) << 26);
                e.eax &= ~(0xfffu << 14);
                break;
            case kLeafExtFeatures:
                if (e.index == 0) {
                    e.edx &= ~kEdxArchCapabilities;
                }
                break;
            case kLeafTopology:
            case kLeafTopologyV2:
                // Level 0: SMT (one thread per core); level 1: core level holding all vCPUs.
                e.edx = index;
                if (e.index == 0) {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = (1u << 8) | 0;
                } else if (e.index == 1) {
                    uint32_t shift = 0;
                    while ((1u << shift) < count) shift++;
                    e.eax = shift;
                    e.ebx = count;
                    e.ecx = (2u << 8) | 1;
                } else {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = e.index;
                }
                break;
            default:
                break;
        }
    }
    bool has_kvm_leaf = false;
    for (auto& e : out) {
        if (e.function == kLeafKvmSignature) {
            has_kvm_leaf = true;
            // "KVMKVMKVM\0\0\0": lets the guest find its paravirtual features.
            e.ebx = 0x4b4d564b;
            e.ecx = 0x564b4d56;
            e.edx = 0x4d;
        }
    }
    if (!has_kvm_leaf) {
        kvm_cpuid_entry2 sig{};
        sig.function = kLeafKvmSignature;
        sig.eax = kLeafKvmSignature;
        sig.ebx = 0x4b4d564b;
        sig.ecx = 0x564b4d56;
        sig.edx = 0x4d;
        out.push_back(sig);
    }
    return out;
}

std::vector<std::pair<uint32_t, uint64_t>> boot_msrs() {
    return {
        {kMsrIa32SysenterCs, 0},  {kMsrIa32SysenterEsp, 0},
        {kMsrIa32SysenterEip, 0}, {kMsrStar, 0},
        {kMsrCstar, 0},           {kMsrKernelGsBase, 0},
        {kMsrSyscallMask, 0},     {kMsrLstar, 0},
        {kMsrIa32Tsc, 0},         {kMsrIa32MiscEnable, kMiscEnableFastStrings},
        {kMsrMtrrDefType, kMtrrEnable | kMtrrTypeWriteBack},
    };
}

kvm_fpu boot_fpu() {
    kvm_fpu fpu{};
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    return fpu;
}

void set_lapic_lints(kvm_lapic_state& lapic) {
    write_reg(lapic, kApicLvt0, with_delivery_mode(read_reg(lapic, kApicLvt0), kApicModeExtInt));
    write_reg(lapic, kApicLvt1, with_delivery_mode(read_reg(lapic, kApicLvt1), kApicModeNmi));
}

void configure_vcpu(KvmVcpu& vcpu, const std::vector<kvm_cpuid_entry2>& supported, uint32_t count) {
    vcpu.set_cpuid(build_vcpu_cpuid(supported, vcpu.id(), count));
    vcpu.set_msrs(boot_msrs());
    vcpu.set_fpu(boot_fpu());
    auto lapic = vcpu.get_lapic();
    set_lapic_lints(lapic);
    vcpu.set_lapic(lapic);
}

}  // namespace embervm::vmm
