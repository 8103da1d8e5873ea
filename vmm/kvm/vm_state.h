// The VM-wide state KVM holds for snapshots: the in-kernel irqchip (PIC master and slave, IOAPIC),
// the PIT and kvmclock, and the dirty-page log of a memory slot.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>

#include "vmm/sys/state_stream.h"

namespace embervm::vmm {

class KvmVm;

struct KvmVmState {
    kvm_irqchip pic_master{};
    kvm_irqchip pic_slave{};
    kvm_irqchip ioapic{};
    kvm_pit_state2 pit{};
    kvm_clock_data clock{};
};

// KVM_GET_IRQCHIP of one chip (KVM_IRQCHIP_PIC_MASTER, _PIC_SLAVE, _IOAPIC). Throws Error.
kvm_irqchip get_irqchip(const KvmVm& vm, uint32_t chip_id);

// With every vCPU paused.
KvmVmState save_vm_state(const KvmVm& vm);
// Before any vCPU runs. The clock is set to the saved value, so the guest's kvmclock goes on from
// where it was paused (no jump by the time the snapshot sat on disk).
void restore_vm_state(const KvmVm& vm, const KvmVmState& state);

void encode_vm_state(StateWriter& w, const KvmVmState& state);
KvmVmState decode_vm_state(StateReader& r);

// KVM_GET_DIRTY_LOG of memory slot `slot` into `bitmap` (one bit per 4 KiB page, 64-bit words,
// at least the slot's pages): the pages written since the previous call, which clears the log.
void get_dirty_log(const KvmVm& vm, uint32_t slot, std::span<uint64_t> bitmap);

}  // namespace embervm::vmm
