// A tiny VM for the [kvm] tests: 32 KiB of RAM in slot 0 and one vCPU in real mode (CS, DS,
// ES and SS all based at 0) that starts at kCodeAddr with the code the test gives it.
// Everything from kRamSize up is not RAM: accesses there are MMIO.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <catch2/catch.hpp>

#include "memory/guest_memory.h"
#include "vmm/kvm/kvm.h"

namespace embervm::test {

class RealModeVm {
public:
    static constexpr uint64_t kRamSize = 0x8000;
    static constexpr uint64_t kCodeAddr = 0x1000;

    // `irqchip`: creates the in-kernel PIC/IOAPIC/LAPIC first (needed by irqfds and the LAPIC
    // ioctls). Without it, hlt leaves KVM_RUN with KVM_EXIT_HLT.
    explicit RealModeVm(bool irqchip = false)
        : vm(kvm), ram({{memory::GuestAddress(0), kRamSize}}) {
        vm.set_tss_addr(0xfffbd000);
        if (irqchip) {
            vm.create_irqchip();
        }
        vm.set_user_memory_region(0, 0, kRamSize, ram.regions().front().host_base());
    }

    // A vCPU with id `id` about to run `code` (copied to kCodeAddr).
    std::unique_ptr<vmm::KvmVcpu> make_vcpu(const std::vector<uint8_t>& code, uint32_t id = 0) {
        ram.write(memory::GuestAddress(kCodeAddr), code);
        auto vcpu = std::make_unique<vmm::KvmVcpu>(kvm, vm, id);
        kvm_sregs s = vcpu->get_sregs();
        for (kvm_segment* seg : {&s.cs, &s.ds, &s.es, &s.ss}) {
            seg->base = 0;
            seg->selector = 0;
        }
        vcpu->set_sregs(s);
        kvm_regs r{};
        r.rip = kCodeAddr;
        r.rflags = 0x2;
        vcpu->set_regs(r);
        return vcpu;
    }

    vmm::KvmSystem kvm;  // throws (fails the test loudly) without a usable /dev/kvm
    vmm::KvmVm vm;
    memory::GuestMemory ram;
};

}  // namespace embervm::test
