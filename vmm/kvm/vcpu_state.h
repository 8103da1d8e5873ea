// A vCPU's complete architectural state for snapshots: read from KVM with every ioctl that
// holds part of it, written back in the order KVM needs, and encoded with vmm/sys/state_stream.h.
//
// Restore order (what each step depends on):
//   MP state first (it depends on the BSP flag, which the CPUID set at creation decides);
//   regs before vcpu events (KVM_SET_REGS clears a pending exception, the events bring it back);
//   sregs before the LAPIC (sregs restore the APIC base MSR);
//   the LAPIC before the MSRs (IA32_TSC_DEADLINE only takes a value in TSC-deadline mode);
//   within the MSRs, IA32_TSC first and IA32_TSC_DEADLINE last (the deadline is relative to it);
//   the TSC frequency before everything (the TSC is scaled by it);
//   the TSC offset last, after KVM_SET_CLOCK and every vCPU (restore_tsc_offsets).
//
// The TSC and kvmclock: a guest checks one against the other (Linux's clocksource watchdog
// marks the TSC unstable at a skew of ~0.1 ms). Saved as IA32_TSC alone, the TSC is read some
// ioctls after KVM_GET_CLOCK and written some after KVM_SET_CLOCK, and under nested KVM those
// ioctls take milliseconds: the restored guest saw its TSC jump against kvmclock. So each
// vCPU's TSC offset (KVM_VCPU_TSC_OFFSET, Linux 5.16) is saved too, and on restore set so that
// the guest TSC and kvmclock keep the relation they had at the source's KVM_GET_CLOCK (the
// algorithm of the kernel's Documentation/virt/kvm/devices/vcpu.rst, without advancing the
// clock by the time the VM was stopped). Only for an unscaled TSC (guest TSC = host TSC +
// offset, checked against IA32_TSC); otherwise, or on an older KVM, IA32_TSC alone as before.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <optional>
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
    // KVM_VCPU_TSC_OFFSET when KVM has it and the TSC runs unscaled (version 2 of the state).
    std::optional<uint64_t> tsc_offset;
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
// After KVM_SET_CLOCK with `saved_clock` and restore_vcpu_state of every vCPU: sets each vCPU's
// TSC offset so that its TSC stands to kvmclock as it did when `saved_clock` was read (see
// above). Returns false, changing nothing, where that cannot be done (no saved offsets, no host
// TSC in either clock reading, a scaled TSC); the TSCs then stay as IA32_TSC set them.
bool restore_tsc_offsets(const KvmVm& vm, std::span<KvmVcpu* const> vcpus, std::span<const VcpuState> states,
                         const kvm_clock_data& saved_clock);

void encode_vcpu_state(StateWriter& w, const VcpuState& state);
// StateError naming the field when the bytes are not a vCPU state of this build's layout.
VcpuState decode_vcpu_state(StateReader& r);

}  // namespace embervm::vmm
