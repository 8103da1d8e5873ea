// What the VMM's start-up cost, measured at the moment the first vCPU enters the guest: the
// process's CPU time and page faults so far (getrusage, all threads), figures that count work
// rather than wall time and so hold on a busy or emulated host. Under callgrind the same moment
// ends the start-up profile (scripts/bench-boot --startup reads it).
#pragma once

#include <cstdint>
#include <string>

namespace embervm::log {

struct StartupCost {
    int64_t user_us = 0;
    int64_t sys_us = 0;
    int64_t minor_faults = 0;
    int64_t major_faults = 0;
};

// The process's resource use so far.
StartupCost startup_cost_now();

// Logs "first KVM_RUN at N us since VMM start, process CPU user U us sys S us, page faults
// minor M major J" (info) and, when running under callgrind, dumps the profile so far as the
// part named "first KVM_RUN" and stops instrumenting (the rest of the run is not counted).
// Each vCPU thread calls it before its own first KVM_RUN; the profile is dumped at the first call.
void mark_first_kvm_run();

}  // namespace embervm::log
