// Per-vCPU architectural set-up: CPUID, MSRs, FPU and local APIC LINT pins.
#include "vmm/kvm/cpu_setup.h"

#include <cstring>

#include "vmm/kvm/cpuid.h"
#include "vmm/kvm/kvm.h"

namespace embervm::vmm {

namespace {
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

void configure_vcpu(KvmVcpu& vcpu, const std::vector<kvm_cpuid_entry2>& supported, uint32_t count,
                    bool tsc_deadline) {
    vcpu.set_cpuid(normalize_vcpu_cpuid(supported, {.index = vcpu.id(), .count = count, .tsc_deadline = tsc_deadline}));
    vcpu.set_msrs(boot_msrs());
    vcpu.set_fpu(boot_fpu());
    auto lapic = vcpu.get_lapic();
    set_lapic_lints(lapic);
    vcpu.set_lapic(lapic);
}

}  // namespace embervm::vmm
