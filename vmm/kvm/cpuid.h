// CPUID normalisation for one vCPU: from KVM_GET_SUPPORTED_CPUID to the table the vCPU gets (pure, no ioctl).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

namespace embervm::vmm {

// What the normalisation needs besides the supported table.
struct VcpuCpuidParams {
    uint32_t index = 0;         // this vCPU (its APIC ID)
    uint32_t count = 1;         // vCPUs in the VM: one package of `count` cores, one thread each
    bool tsc_deadline = false;  // KVM_CAP_TSC_DEADLINE_TIMER: the in-kernel LAPIC has the TSC-deadline mode
};

// The CPUID table for one vCPU, derived from KVM_GET_SUPPORTED_CPUID (`supported`):
//  - topology: leaf 1 EBX (initial APIC ID; logical processor count: `count` on AMD, rounded up
//    to a power of two on Intel, whose field counts addressable IDs) and EDX HTT, AMD's
//    0x80000001 ECX CmpLegacy (set when `count` > 1), leaves 0xB and
//    0x1F (SMT level of one thread, core level of `count` cores, x2APIC ID), leaf 4 and AMD's
//    0x8000001D cache sharing (L1/L2 per core, L3 and beyond shared by all), AMD's 0x80000008 ECX
//    (cores - 1, APIC ID core bits) and 0x8000001E (extended APIC ID, core ID, one node);
//  - leaf 1 ECX: the hypervisor bit, and TSC-deadline when `tsc_deadline`;
//  - leaf 0xD: sizes that follow the offered features (sub-leaf 0 ECX: all of them; sub-leaf 0
//    and 1 EBX: the reset state, XCR0 = x87, which KVM keeps current as the guest changes XCR0);
//  - leaf 7 EDX[29] (IA32_ARCH_CAPABILITIES) hidden: the VMM does not provide that MSR;
//  - KVM's signature leaf 0x40000000 ("KVMKVMKVM"), added when missing.
// Apart from the hypervisor, HTT, CmpLegacy and TSC-deadline bits no feature bit is set that
// `supported` does not have; leaves the topology needs but `supported` lacks (e.g. 0x8000001E
// without TOPOEXT) are not invented, except the sub-leaves 0-2 of 0xB/0x1F when that leaf is there.
std::vector<kvm_cpuid_entry2> normalize_vcpu_cpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                                   const VcpuCpuidParams& params);

}  // namespace embervm::vmm
