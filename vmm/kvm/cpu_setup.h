// Per-vCPU architectural set-up: CPUID, MSRs, FPU and local APIC LINT pins.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace embervm::vmm {

class KvmVcpu;

// IA32_KERNEL_GS_BASE (set at boot, saved and restored with a vCPU's state).
inline constexpr uint32_t kMsrKernelGsBase = 0xc0000102;

// MSR values every vCPU starts with (SYSENTER/SYSCALL MSRs zeroed, TSC 0, fast strings on,
// MTRRs default write-back).
std::vector<std::pair<uint32_t, uint64_t>> boot_msrs();

// FPU state after reset (FCW 0x37f, MXCSR 0x1f80).
kvm_fpu boot_fpu();

// Programs LINT0 as ExtINT and LINT1 as NMI in a local APIC register image.
void set_lapic_lints(kvm_lapic_state& lapic);

// Applies all of the above to a vCPU, with the CPUID table normalize_vcpu_cpuid (vmm/kvm/cpuid.h)
// makes from `supported` for this vCPU of `count`; `tsc_deadline`: KVM_CAP_TSC_DEADLINE_TIMER.
void configure_vcpu(KvmVcpu& vcpu, const std::vector<kvm_cpuid_entry2>& supported, uint32_t count,
                    bool tsc_deadline);

}  // namespace embervm::vmm
