// RAII wrappers for the KVM system, VM and vCPU file descriptors.
//
// Each wrapper owns its fd (and the vCPU its kvm_run mapping) and turns ioctl failures into
// embervm::Error naming the ioctl and the object.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "vmm/kvm/event_routing.h"
#include "vmm/sys/fd.h"

namespace embervm::vmm {

class KvmSystem {
public:
    // Opens /dev/kvm (path overridable for tests) and checks the API version.
    explicit KvmSystem(const std::string& path = "/dev/kvm");
    int fd() const { return fd_.get(); }
    int check_extension(long cap) const;
    size_t vcpu_mmap_size() const;
    std::vector<kvm_cpuid_entry2> supported_cpuid() const;

private:
    FileDescriptor fd_;
};

class KvmVm : public VmEventRouting {
public:
    explicit KvmVm(const KvmSystem& kvm);
    int fd() const { return fd_.get(); }
    int check_extension(long cap) const;
    void set_user_memory_region(uint32_t slot, uint64_t guest_phys, uint64_t size, void* host, uint32_t flags = 0);
    void set_tss_addr(uint64_t addr);
    void set_identity_map_addr(uint64_t addr);
    void create_irqchip();
    void create_pit2();
    void enable_cap(uint32_t cap, uint64_t arg0 = 0);
    // VmEventRouting (vmm/kvm/event_routing.h): KVM_IRQFD, KVM_IOEVENTFD, KVM_SET_GSI_ROUTING.
    void register_irqfd(int eventfd, uint32_t gsi) override;
    void register_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                            std::optional<uint64_t> datamatch) override;
    void unregister_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                              std::optional<uint64_t> datamatch) override;
    // KVM_SET_GSI_ROUTING replaces the whole table: it is rebuilt from KVM's default routes for
    // the in-kernel PIC and IOAPIC (GSIs 0-23) plus every MSI route set so far.
    void set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) override;
    // KVM_GET_IRQCHIP (IOAPIC) for pins 0-23; never throws (a diagnostic).
    std::string describe_gsi(uint32_t gsi) const override;
    bool gsi_masked(uint32_t gsi) const override;

private:
    void ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio, std::optional<uint64_t> datamatch,
                   bool deassign);

    FileDescriptor fd_;
    std::mutex routes_mutex_;
    std::map<uint32_t, std::pair<uint64_t, uint32_t>> msi_routes_;  // gsi -> address, data
};

class KvmVcpu {
public:
    KvmVcpu(const KvmSystem& kvm, const KvmVm& vm, uint32_t id);
    KvmVcpu(const KvmVcpu&) = delete;
    KvmVcpu& operator=(const KvmVcpu&) = delete;
    ~KvmVcpu();

    uint32_t id() const { return id_; }
    int fd() const { return fd_.get(); }
    kvm_run* run_struct() const { return run_; }

    // Runs the vCPU until the next exit. Returns false when KVM_RUN was interrupted (EINTR,
    // EAGAIN: a kick or immediate_exit); throws on other errors.
    bool run();

    kvm_regs get_regs() const;
    void set_regs(const kvm_regs& regs);
    kvm_sregs get_sregs() const;
    void set_sregs(const kvm_sregs& sregs);
    // KVM_GET_FPU / KVM_SET_FPU: x87 and XMM registers; KVM_GET_FPU does not report MXCSR.
    kvm_fpu get_fpu() const;
    void set_fpu(const kvm_fpu& fpu);
    std::vector<kvm_cpuid_entry2> get_cpuid() const;
    void set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);
    uint64_t get_msr(uint32_t index) const;
    void set_msrs(const std::vector<std::pair<uint32_t, uint64_t>>& msrs);
    kvm_lapic_state get_lapic() const;
    void set_lapic(const kvm_lapic_state& lapic);
    kvm_vcpu_events get_vcpu_events() const;
    void set_vcpu_events(const kvm_vcpu_events& events);
    kvm_mp_state get_mp_state() const;
    // KVM_TRANSLATE: the guest-physical address `linear` maps to in the vCPU's current paging
    // mode, or nullopt if its page is not mapped. Throws when the ioctl itself fails.
    std::optional<uint64_t> translate(uint64_t linear) const;

private:
    uint32_t id_;
    FileDescriptor fd_;
    kvm_run* run_ = nullptr;
    size_t run_size_ = 0;
};

}  // namespace embervm::vmm
