// VmEventRouting: what device code needs from the VM to move events in and out of it with eventfds
// (KVM_IRQFD, KVM_IOEVENTFD, MSI routes), without the rest of KvmVm; KvmVm implements it, tests record it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace embervm::vmm {

class VmEventRouting {
public:
    virtual ~VmEventRouting() = default;

    // Binds an eventfd to a GSI: each write to the eventfd raises an edge on the GSI.
    // Throws Error naming the GSI.
    virtual void register_irqfd(int eventfd, uint32_t gsi) = 0;
    // A guest write of `len` bytes to `addr` (MMIO, or port I/O when pio) signals the eventfd;
    // with a datamatch only writes of that value do. Throws Error naming the address.
    virtual void register_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                                    std::optional<uint64_t> datamatch) = 0;
    // Undoes register_ioeventfd with the same arguments (a PCI BAR moved). Throws Error.
    virtual void unregister_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                                      std::optional<uint64_t> datamatch) = 0;
    // From now on, an edge on `gsi` (an irqfd bound to it) is delivered as the MSI with
    // `address` and `data` (a PCI function's MSI-X vector). `gsi` must be above the IOAPIC's
    // pins, whose routes stay. Throws Error.
    virtual void set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) = 0;
    // One line on `gsi`'s state in the interrupt controller (an IOAPIC pin's redirection entry
    // and request bit), for the log when an interrupt looks lost; empty where unknown.
    virtual std::string describe_gsi(uint32_t /*gsi*/) const { return {}; }
    // Whether the guest has masked `gsi` (an IOAPIC pin's redirection entry); false where unknown.
    virtual bool gsi_masked(uint32_t /*gsi*/) const { return false; }

protected:
    VmEventRouting() = default;
    VmEventRouting(const VmEventRouting&) = default;
    VmEventRouting& operator=(const VmEventRouting&) = default;
};

}  // namespace embervm::vmm
