// eventfd(2) wrapper, and an IrqLine that raises a GSI through an eventfd bound with KVM_IRQFD.
#pragma once

#include <sys/eventfd.h>

#include <cstdint>

#include "devices/irq.h"
#include "vmm/sys/error.h"
#include "vmm/sys/fd.h"

namespace embervm::vmm {

class EventFd {
public:
    explicit EventFd(int flags = EFD_CLOEXEC | EFD_NONBLOCK) : fd_(::eventfd(0, flags)) {
        if (!fd_) {
            throw sys_error("eventfd");
        }
    }
    int fd() const { return fd_.get(); }
    void signal(uint64_t value = 1) const {
        // A full counter (EAGAIN) still means "signalled"; nothing else can fail here.
        [[maybe_unused]] ssize_t n = ::write(fd_.get(), &value, sizeof(value));
    }
    // Returns the accumulated count and resets it (0 if nothing was signalled).
    uint64_t consume() const {
        uint64_t value = 0;
        if (::read(fd_.get(), &value, sizeof(value)) != sizeof(value)) {
            return 0;
        }
        return value;
    }

private:
    FileDescriptor fd_;
};

class EventFdIrq : public devices::IrqLine {
public:
    EventFdIrq() = default;
    int fd() const { return event_.fd(); }
    void trigger() override { event_.signal(); }

private:
    EventFd event_;
};

}  // namespace embervm::vmm
