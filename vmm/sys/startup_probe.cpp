// The start-up cost probe at the first KVM_RUN.
#include "vmm/sys/startup_probe.h"

#include <sys/resource.h>

#include <atomic>

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define EMBERVM_HAVE_CALLGRIND 1
#endif

#include "vmm/sys/log.h"

namespace embervm::log {

namespace {
int64_t micros(const timeval& tv) { return int64_t{tv.tv_sec} * 1000000 + tv.tv_usec; }
}  // namespace

StartupCost startup_cost_now() {
    rusage ru{};
    StartupCost c;
    if (::getrusage(RUSAGE_SELF, &ru) == 0) {
        c.user_us = micros(ru.ru_utime);
        c.sys_us = micros(ru.ru_stime);
        c.minor_faults = ru.ru_minflt;
        c.major_faults = ru.ru_majflt;
    }
    return c;
}

void mark_first_kvm_run() {
    const int64_t wall = micros_since_start();
    const StartupCost c = startup_cost_now();
#ifdef EMBERVM_HAVE_CALLGRIND
    // Once per process (every vCPU thread calls this before its own first KVM_RUN). Outside
    // valgrind these are a few no-op instructions.
    static std::atomic<bool> dumped{false};
    if (!dumped.exchange(true)) {
        CALLGRIND_DUMP_STATS_AT("first KVM_RUN");
        CALLGRIND_STOP_INSTRUMENTATION;
    }
#endif
    info("first KVM_RUN at {} us since VMM start, process CPU user {} us sys {} us, page faults minor {} major {}",
         wall, c.user_us, c.sys_us, c.minor_faults, c.major_faults);
}

}  // namespace embervm::log
