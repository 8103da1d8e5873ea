// seccomp: each of embervm's threads runs under an allowlist of system calls for its kind (the
// lists are data, in vmm/sys/seccomp_filters.cpp). A call outside the list ends the process with
// SIGSYS after one log line naming the thread, its kind and the call.
//
// Which thread installs what, and when (each thread loads its own filter with seccomp_load, no
// TSYNC: the kinds differ, and a filter is inherited by the threads a thread creates later):
//   - vCPU threads: their first act (Vcpu::thread_main), before the first KVM_RUN;
//   - the event loop (the VM's thread, Vmm::run): once the vCPU threads exist (it creates them,
//     so it must not pass its list on), before it runs its first handler;
//   - the API thread (ApiServer): before it accepts the first connection;
//   - the embervm program's main thread: once the VM has started (main.cpp).
// No filtered thread creates a thread. InstanceStart (which creates the VM's threads) therefore
// runs on the embervm program's main thread, not on the API thread.
//
// The action is SECCOMP_RET_TRAP rather than KILL_PROCESS: the SIGSYS handler writes the reason
// to the log output with write(2) (async-signal-safe: call names from a table generated at build
// time, no allocation) and then re-raises SIGSYS with the default action, so the exit status
// still shows SIGSYS (and a core dump where enabled). KILL_PROCESS would log nothing of its own
// (only the kernel's audit record, which a user often cannot read). A thread that installs its
// own SIGSYS handler does not escape: a trapped call is never executed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace embervm::seccomp {

enum class ThreadKind { Vcpu, EventLoop, Api, Main };
inline constexpr ThreadKind kThreadKinds[] = {ThreadKind::Vcpu, ThreadKind::EventLoop, ThreadKind::Api,
                                              ThreadKind::Main};
// "vcpu", "event-loop", "api", "main".
const char* to_string(ThreadKind kind);
std::optional<ThreadKind> parse_thread_kind(std::string_view text);

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
    // Length of the BPF program the kernel runs on every system call of the thread.
    size_t bpf_instructions() const;
    // Loads it on the calling thread (irreversible). Throws embervm::Error.
    void load() const;

private:
    ThreadKind kind_;
    void* ctx_ = nullptr;  // scmp_filter_ctx
    size_t calls_ = 0;
    size_t rules_ = 0;
};

// Installs the filter of `kind` on the calling thread: the process's SIGSYS reporter first (once
// per process), then the filter. Throws embervm::Error if the filter cannot be built or loaded.
void install_on_this_thread(ThreadKind kind);

// The test hook, called where each kind's filter is (or, with seccomp off, would be) loaded:
// socket(AF_INET, SOCK_STREAM) (on no list) when the environment variable
// EMBERVM_TEST_SECCOMP_VIOLATION, read at the first call, equals to_string(kind). Under the
// filter this ends the process with SIGSYS; without it the call succeeds, is logged as an error
// and the socket closed. A guest cannot reach it: only the environment embervm starts with can.
void forbidden_call_for_test(ThreadKind kind);

// The SIGSYS reporter alone (install_on_this_thread calls it). Process-wide; replaces any
// SIGSYS handler. SIGSYS not caused by seccomp also ends the process with SIGSYS.
void install_sigsys_reporter();

}  // namespace embervm::seccomp
