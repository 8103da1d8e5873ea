// seccomp: each of embervm's threads runs under an allowlist of system calls for its kind (the
// lists are data, in vmm/sys/seccomp_filters.cpp). A call outside the list ends the process with
// SIGSYS after one log line naming the thread, its kind and the call.
//
// The lists are compiled to BPF at build time (vmm/sys/gen_seccomp_programs.cpp, with
// libseccomp: seccomp_lists.h), so a thread installs a ready program with prctl and embervm
// itself does not link libseccomp: compiling one list at start-up cost about 0.54 M
// instructions (half a CPU millisecond) per thread kind.
//
// Which thread installs what, and when (each thread loads its own filter with prctl, no
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

#include <linux/filter.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace embervm::seccomp {

enum class ThreadKind { Vcpu, EventLoop, Api, Main };
inline constexpr ThreadKind kThreadKinds[] = {ThreadKind::Vcpu, ThreadKind::EventLoop, ThreadKind::Api,
                                              ThreadKind::Main};
// "vcpu", "event-loop", "api", "main".
constexpr const char* to_string(ThreadKind kind) {
    switch (kind) {
        case ThreadKind::Vcpu: return "vcpu";
        case ThreadKind::EventLoop: return "event-loop";
        case ThreadKind::Api: return "api";
        case ThreadKind::Main: return "main";
    }
    return "?";
}
std::optional<ThreadKind> parse_thread_kind(std::string_view text);

// A thread kind's BPF program, compiled from its allowlist at build time
// (vmm/sys/gen_seccomp_programs.cpp, from the lists in seccomp_lists.h), with the counts the
// start-up log gives. `code` is static data.
struct BuiltProgram {
    std::span<const sock_filter> code;
    size_t calls = 0;  // system calls on the list (different names)
    size_t rules = 0;  // rules (one per allowed argument value)
};
BuiltProgram built_program(ThreadKind kind);

// Installs the filter of `kind` on the calling thread: the process's SIGSYS reporter first (once
// per process), then no-new-privileges and the built program. Throws embervm::Error if the
// kernel refuses it.
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
