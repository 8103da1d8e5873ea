// Saving and restoring the VM-wide KVM state: irqchip, PIT, kvmclock; the dirty-page log.
#include "vmm/kvm/vm_state.h"

#include <sys/ioctl.h>

#include <cerrno>

#include <fmt/format.h>

#include "vmm/kvm/kvm.h"
#include "vmm/sys/error.h"

namespace embervm::vmm {

namespace {

constexpr uint32_t kVmStateVersion = 1;

void vm_ioctl(const KvmVm& vm, unsigned long request, void* arg, const char* what) {
    int r;
    do {
        r = ::ioctl(vm.fd(), request, arg);
    } while (r < 0 && errno == EINTR);
    if (r < 0) throw sys_error(what);
}


// The chip a saved irqchip claims to be must be the one it is restored as.
void check_chip(StateReader& r, const kvm_irqchip& chip, uint32_t id, const char* field) {
    if (chip.chip_id != id) r.fail(field, fmt::format("chip id {} where {} was expected", chip.chip_id, id));
}

}  // namespace

kvm_irqchip get_irqchip(const KvmVm& vm, uint32_t chip_id) {
    kvm_irqchip chip{};
    chip.chip_id = chip_id;
    vm_ioctl(vm, KVM_GET_IRQCHIP, &chip, "KVM_GET_IRQCHIP");
    return chip;
}

KvmVmState save_vm_state(const KvmVm& vm) {
    KvmVmState s;
    s.pic_master = get_irqchip(vm, KVM_IRQCHIP_PIC_MASTER);
    s.pic_slave = get_irqchip(vm, KVM_IRQCHIP_PIC_SLAVE);
    s.ioapic = get_irqchip(vm, KVM_IRQCHIP_IOAPIC);
    vm_ioctl(vm, KVM_GET_PIT2, &s.pit, "KVM_GET_PIT2");
    vm_ioctl(vm, KVM_GET_CLOCK, &s.clock, "KVM_GET_CLOCK");
    return s;
}

void restore_vm_state(const KvmVm& vm, const KvmVmState& state) {
    KvmVmState s = state;
    vm_ioctl(vm, KVM_SET_IRQCHIP, &s.pic_master, "KVM_SET_IRQCHIP (PIC master)");
    vm_ioctl(vm, KVM_SET_IRQCHIP, &s.pic_slave, "KVM_SET_IRQCHIP (PIC slave)");
    vm_ioctl(vm, KVM_SET_IRQCHIP, &s.ioapic, "KVM_SET_IRQCHIP (IOAPIC)");
    vm_ioctl(vm, KVM_SET_PIT2, &s.pit, "KVM_SET_PIT2");
    // Only the clock value: KVM refuses flags it does not take on SET (realtime, host TSC).
    kvm_clock_data clock{};
    clock.clock = s.clock.clock;
    vm_ioctl(vm, KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK");
}

void encode_vm_state(StateWriter& w, const KvmVmState& s) {
    w.put<uint32_t>(kVmStateVersion);
    w.put_struct(s.pic_master);
    w.put_struct(s.pic_slave);
    w.put_struct(s.ioapic);
    w.put_struct(s.pit);
    w.put_struct(s.clock);
}

KvmVmState decode_vm_state(StateReader& r) {
    r.get_version(kVmStateVersion);
    KvmVmState s;
    s.pic_master = r.get_struct<kvm_irqchip>("pic_master");
    check_chip(r, s.pic_master, KVM_IRQCHIP_PIC_MASTER, "pic_master");
    s.pic_slave = r.get_struct<kvm_irqchip>("pic_slave");
    check_chip(r, s.pic_slave, KVM_IRQCHIP_PIC_SLAVE, "pic_slave");
    s.ioapic = r.get_struct<kvm_irqchip>("ioapic");
    check_chip(r, s.ioapic, KVM_IRQCHIP_IOAPIC, "ioapic");
    s.pit = r.get_struct<kvm_pit_state2>("pit");
    s.clock = r.get_struct<kvm_clock_data>("clock");
    return s;
}

void get_dirty_log(const KvmVm& vm, uint32_t slot, std::span<uint64_t> bitmap) {
    kvm_dirty_log log{};
    log.slot = slot;
    log.dirty_bitmap = bitmap.data();
    vm_ioctl(vm, KVM_GET_DIRTY_LOG, &log, "KVM_GET_DIRTY_LOG");
}

}  // namespace embervm::vmm
