// An interrupt line a device can raise. In the VMM it is an eventfd bound to a GSI with
// KVM_IRQFD (an edge on the in-kernel IOAPIC); in unit tests it is a counter.
#pragma once

namespace embervm::devices {

class IrqLine {
public:
    virtual ~IrqLine() = default;
    virtual void trigger() = 0;
};

}  // namespace embervm::devices
