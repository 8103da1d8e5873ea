// Per-vCPU architectural set-up: CPUID, MSRs, FPU and local APIC LINT pins.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace embervm::vmm {

class KvmVcpu;

// The CPUID table for vCPU `index` of `count`, derived from KVM_GET_SUPPORTED_CPUID:
// APIC ID in leaf 1 EBX[31:24] and leaves 0xB/0x1F EDX, logical-processor count, the
// hypervisor bit (leaf 1 ECX[31]) and KVM's hypervisor leaves; IA32_ARCH_CAPABILITIES
// (leaf 7 EDX[29]) is hidden because the VMM does not provide that MSR.
std::vector<kvm_cpuid_entry2> build_vcpu_cpuid(const std::vector<kvm_cpuid_entry2>& supported, uint32_t index,
                                              uint32_t count);

// MSR values every vCPU starts with (SYSENTER/SYSCALL MSRs zeroed, TSC 0, fast strings on,
// MTRRs default write-back).
std::vector<std::pair<uint32_t, uint64_t>> boot_msrs();

// FPU state after reset (FCW 0x37f, MXCSR 0x1f80).
kvm_fpu boot_fpu();

// Programs LINT0 as ExtINT and LINT1 as NMI in a local APIC register image.
void set_lapic_lints(kvm_lapic_state& lapic);

// Applies all of the above to a vCPU.
void configure_vcpu(KvmVcpu& vcpu, const std::vector<kvm_cpuid_entry2>& supported, uint32_t count);

}  // namespace embervm::vmm
