// seccomp filters: installing the programs built from the allowlists per thread, and the SIGSYS
// reporter (vmm/sys/seccomp.h).
#include "vmm/sys/seccomp.h"

#include <linux/audit.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <mutex>
#include <string>

#include <fmt/format.h>

#include "vmm/sys/error.h"
#include "vmm/sys/log.h"
#include "vmm/sys/seccomp_programs.h"
#include "vmm/sys/syscall_names.h"

namespace embervm::seccomp {

namespace {

// The SIGSYS handler names a call from generated::kSyscallNames (vmm/sys/gen_syscall_names.py,
// at build time): resolving names with libseccomp at run time allocates, so the handler cannot
// do it, and filling a table at start-up cost about 1 M instructions.
constexpr uint32_t kNativeArch = AUDIT_ARCH_X86_64;  // si_arch of a native call
// si_code of a SIGSYS raised by SECCOMP_RET_TRAP (the kernel's SYS_SECCOMP).
constexpr int kSysSeccomp = 1;


// What the handler says about the thread (set when its filter is loaded).
thread_local const char* t_kind = nullptr;
thread_local std::array<char, 16> t_thread_name{};

std::once_flag g_reporter_once;
std::once_flag g_hook_once;
std::optional<ThreadKind> g_hook_kind;

// Async-signal-safe text building: a fixed buffer, no allocation.
struct LineBuffer {
    char data[320];
    size_t len = 0;
    void add(const char* s) {
        while (s != nullptr && *s != '\0' && len < sizeof data - 1) data[len++] = *s++;
    }
    void add_number(uint64_t v, int min_digits = 1) {
        char digits[24];
        int n = 0;
        do {
            digits[n++] = static_cast<char>('0' + v % 10);
            v /= 10;
        } while (v != 0 && n < 24);
        while (n < min_digits && n < 24) digits[n++] = '0';
        while (n > 0 && len < sizeof data - 1) data[len++] = digits[--n];
    }
};

void write_fully(int fd, const char* data, size_t len) {
    while (len > 0) {
        const ssize_t n = ::write(fd, data, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        data += n;
        len -= static_cast<size_t>(n);
    }
}

// SA_RESETHAND | SA_NODEFER: the action is the default again when this runs, so the final
// raise ends the process with SIGSYS at once.
void on_sigsys(int, siginfo_t* info, void*) {
    const int saved_errno = errno;
    LineBuffer line;
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    const auto start = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           log::process_start().time_since_epoch())
                           .count();
    const int64_t since = static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec - start;
    const uint64_t us = since > 0 ? static_cast<uint64_t>(since) / 1000 : 0;
    line.add("[");  // as log lines: "[%10.6f]"
    for (uint64_t wide = 100; wide > 1 && us / 1'000'000 < wide; wide /= 10) line.add(" ");
    line.add_number(us / 1'000'000);
    line.add(".");
    line.add_number(us % 1'000'000, 6);
    line.add("] ERROR ");
    line.add(t_thread_name[0] != '\0' ? t_thread_name.data() : "?");
    if (info->si_code == kSysSeccomp) {
        const int nr = info->si_syscall;
        line.add(": seccomp: the ");
        line.add(t_kind != nullptr ? t_kind : "?");
        line.add(" thread made system call ");
        const int named = static_cast<int>(std::size(generated::kSyscallNames));
        if (static_cast<uint32_t>(info->si_arch) == kNativeArch && nr >= 0 && nr < named &&
            generated::kSyscallNames[nr] != nullptr) {
            line.add(generated::kSyscallNames[nr]);
            line.add(" (");
            line.add_number(static_cast<uint64_t>(nr));
            line.add(")");
        } else {
            line.add_number(static_cast<uint64_t>(nr < 0 ? -nr : nr));
            line.add(" of architecture ");
            line.add_number(static_cast<uint32_t>(info->si_arch));
        }
        line.add(", which its allowlist (vmm/sys/seccomp_filters.cpp) does not allow; ending with SIGSYS "
                 "(--no-seccomp turns the filters off)\n");
    } else {
        line.add(": SIGSYS (not from seccomp); ending\n");
    }
    const int log_fd = log::output_fd();
    write_fully(log_fd, line.data, line.len);
    if (log_fd != STDERR_FILENO) write_fully(STDERR_FILENO, line.data, line.len);
    ::syscall(SYS_tgkill, ::getpid(), ::gettid(), SIGSYS);
    errno = saved_errno;
    ::syscall(SYS_exit_group, 128 + SIGSYS);  // not reached: SIGSYS's default action ends the process
}

const char* hook_variable() { return "EMBERVM_TEST_SECCOMP_VIOLATION"; }

}  // namespace

std::optional<ThreadKind> parse_thread_kind(std::string_view text) {
    for (const ThreadKind k : kThreadKinds) {
        if (text == to_string(k)) return k;
    }
    return std::nullopt;
}

void install_sigsys_reporter() {
    std::call_once(g_reporter_once, [] {
        struct sigaction sa{};
        sa.sa_sigaction = on_sigsys;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
        if (::sigaction(SIGSYS, &sa, nullptr) != 0) throw sys_error("seccomp: sigaction(SIGSYS)");
    });
}

BuiltProgram built_program(ThreadKind kind) {
    const generated::Program& p = generated::kPrograms[static_cast<size_t>(kind)];
    return {std::span<const sock_filter>(p.code, p.length), p.calls, p.rules};
}

void install_on_this_thread(ThreadKind kind) {
    const auto start = std::chrono::steady_clock::now();
    install_sigsys_reporter();
    const BuiltProgram program = built_program(kind);
    t_kind = to_string(kind);
    if (::pthread_getname_np(::pthread_self(), t_thread_name.data(), t_thread_name.size()) != 0) {
        t_thread_name[0] = '\0';
    }
    // What libseccomp's seccomp_load does with its default attributes: no new privileges (so an
    // unprivileged process may filter itself), then the filter on this thread alone. prctl
    // rather than seccomp(2), which takes the same program without flags: valgrind knows no
    // seccomp(2).
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        throw sys_error(fmt::format("seccomp: {} filter: prctl(PR_SET_NO_NEW_PRIVS)", to_string(kind)));
    }
    sock_fprog prog{};
    prog.len = static_cast<unsigned short>(program.code.size());
    prog.filter = const_cast<sock_filter*>(program.code.data());  // the kernel copies it
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
        throw sys_error(fmt::format("seccomp: loading the {} filter", to_string(kind)));
    }
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
    log::debug("seccomp: {} filter loaded ({} calls, {} rules, {} BPF instructions) in {} us", to_string(kind),
               program.calls, program.rules, program.code.size(), us.count());
}

void forbidden_call_for_test(ThreadKind kind) {
    std::call_once(g_hook_once, [] {
        if (const char* v = std::getenv(hook_variable()); v != nullptr) g_hook_kind = parse_thread_kind(v);
    });
    if (g_hook_kind != kind) return;
    log::warn("seccomp test hook ({}={}): making a forbidden call, socket(AF_INET)", hook_variable(), to_string(kind));
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    log::error("seccomp test hook: socket(AF_INET) on the {} thread was allowed (fd {}): no filter is loaded",
               to_string(kind), fd);
    if (fd >= 0) ::close(fd);
}

}  // namespace embervm::seccomp
