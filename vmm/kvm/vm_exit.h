// Why a VM stopped, and the process exit status that reports it.
#pragma once

#include <string>

namespace embervm::vmm {

// The exit status of a guest that triple-faulted: a crashed guest, which an orchestrator must be
// able to tell from a clean reboot or power-off (0) and from a VMM error (1) or bad
// configuration (2). The test guests' debug-exit statuses stay clear of it (tests/guests/lib/guest.h).
inline constexpr int kTripleFaultStatus = 3;

struct VmExit {
    enum class Reason {
        GuestReset,     // guest reboot (i8042 or ACPI reset, KVM system event): status 0
        GuestShutdown,  // guest power-off: status 0
        TripleFault,    // the guest crashed: a triple fault (KVM's shutdown exit): kTripleFaultStatus
        DebugExit,      // a test guest wrote its status to the debug-exit port
        VmmError,       // the VMM could not go on (KVM error, unemulatable instruction): status 1
        Signal,         // SIGINT/SIGTERM/SIGHUP: status 128 + signal
        UserQuit,       // console escape (Ctrl-A x): status 0
        Requested,      // the embedding program (library API) ended the VM: status 0
    };
    Reason reason = Reason::GuestReset;
    int status = 0;
    std::string detail;
};

const char* to_string(VmExit::Reason reason);

}  // namespace embervm::vmm
