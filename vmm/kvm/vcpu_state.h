// A vCPU's complete architectural state for snapshots: read from KVM with every ioctl that
// holds part of it, written back in the order KVM needs, and encoded with vmm/sys/state_stream.h.
//
// Restore order (what each step depends on):
//   MP state first (it depends on the BSP flag, which the CPUID set at creation decides);
//   regs before vcpu events (KVM_SET_REGS clears a pending exception, the events bring it back);
//   sregs before the LAPIC (sregs restore the APIC base MSR);
//   the LAPIC before the MSRs (IA32_TSC_DEADLINE only takes a value in TSC-deadline mode);
//   within the MSRs, IA32_TSC first and IA32_TSC_DEADLINE last (the deadline is relative to it);
//   the TSC frequency before everything (the TSC is scaled by it).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "vmm/sys/state_stream.h"

namespace embervm::vmm {

class KvmSystem;
class KvmVm;
class KvmVcpu;

struct VcpuState {
    kvm_mp_state mp_state{};
    kvm_regs regs{};
    kvm_sregs sregs{};
    std::vector<uint8_t> xsave;  // KVM_GET_XSAVE2's size (KVM_CAP_XSAVE2), else 4096
    kvm_xcrs xcrs{};
    kvm_debugregs debugregs{};
    kvm_lapic_state lapic{};
    std::vector<std::pair<uint32_t, uint64_t>> msrs;  // in restore order
    kvm_vcpu_events events{};
    uint32_t tsc_khz = 0;
};

// The MSRs worth saving: KVM_GET_MSR_INDEX_LIST (the architectural and KVM's paravirtual ones:
// kvmclock, async PF, steal time, TSC deadline...) less those this vCPU cannot read, ordered
// for restore (IA32_TSC first, IA32_TSC_DEADLINE last).
std::vector<uint32_t> saved_msr_indices(const KvmSystem& kvm, KvmVcpu& vcpu);

// Reads the state of a vCPU that is not running (paused or never started).
VcpuState save_vcpu_state(const KvmVm& vm, KvmVcpu& vcpu, std::span<const uint32_t> msr_indices);
// Writes `state` into a vCPU created with the same CPUID and not running. Throws Error naming the
// ioctl (and the MSR) that KVM refused; refuses a TSC frequency the host cannot set.
void restore_vcpu_state(const KvmVm& vm, KvmVcpu& vcpu, const VcpuState& state);

void encode_vcpu_state(StateWriter& w, const VcpuState& state);
// StateError naming the field when the bytes are not a vCPU state of this build's layout.
VcpuState decode_vcpu_state(StateReader& r);

}  // namespace embervm::vmm
