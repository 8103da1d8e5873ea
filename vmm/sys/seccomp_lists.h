// The seccomp allowlists as data (vmm/sys/seccomp_filters.cpp) and their compilation with
// libseccomp. Used at build time by gen_seccomp_programs (which writes the programs embervm
// installs, vmm/sys/seccomp.h) and by the tests; not part of the embervm library, which does not
// link libseccomp.
#pragma once

#include <linux/filter.h>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "vmm/sys/seccomp.h"

namespace embervm::seccomp {

// One entry of an allowlist: the call is allowed when argument `arg` is one of `values`
// (compared as 64-bit values), or always when `values` is empty.
struct AllowedCall {
    std::string_view name;  // as libseccomp names it ("ioctl", "epoll_wait", ...)
    std::string_view reason;
    unsigned arg = 0;
    std::vector<uint64_t> values;
};

// The allowlist of a thread kind (vmm/sys/seccomp_filters.cpp): the calls every embervm thread
// makes (memory, locks, time, logging, thread exit) and the kind's own.
std::vector<AllowedCall> allowlist(ThreadKind kind);

// In a sanitizer build (-Db_sanitize=address or undefined; scripts/test runs one) every filter
// also allows what the sanitizer runtime does from any thread: LeakSanitizer's check at exit
// stops the threads with a ptrace'ing clone, and an error report reads /proc/self/maps. Empty in
// a normal build: the lists above are the whole of what embervm's threads may do.
std::vector<AllowedCall> sanitizer_runtime_calls();

// A compiled filter of one kind (libseccomp context). Throws embervm::Error naming the call if
// a name is unknown or a rule is refused.
class Filter {
public:
    explicit Filter(ThreadKind kind);
    ~Filter();
    Filter(const Filter&) = delete;
    Filter& operator=(const Filter&) = delete;

    ThreadKind kind() const { return kind_; }
    // System calls on the list (different names) and rules (one per allowed argument value).
    size_t calls() const { return calls_; }
    size_t rules() const { return rules_; }
    // The BPF program (what seccomp_export_bpf writes). Throws embervm::Error.
    std::vector<sock_filter> program() const;

private:
    ThreadKind kind_;
    void* ctx_ = nullptr;  // scmp_filter_ctx
    size_t calls_ = 0;
    size_t rules_ = 0;
};

}  // namespace embervm::seccomp
