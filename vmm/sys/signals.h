// The signals that end the VMM (SIGINT, SIGTERM, SIGHUP with status 128+N), as one set.
#pragma once

#include <signal.h>

namespace embervm::vmm {

inline sigset_t termination_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    return set;
}

}  // namespace embervm::vmm
