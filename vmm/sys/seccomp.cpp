// seccomp filters: compiling the allowlists with libseccomp, loading them per thread, and the
// SIGSYS reporter (vmm/sys/seccomp.h).
#include "vmm/sys/seccomp.h"

#include <fcntl.h>
#include <seccomp.h>
#include <signal.h>
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
#include <set>
#include <string>

#include <fmt/format.h>

#include "vmm/sys/error.h"
#include "vmm/sys/log.h"
#include "vmm/sys/syscall_names.h"

namespace embervm::seccomp {

namespace {

// The SIGSYS handler names a call from generated::kSyscallNames (vmm/sys/gen_syscall_names.py,
// at build time): resolving names with libseccomp at run time allocates, so the handler cannot
// do it, and filling a table at start-up cost about 1 M instructions.
uint32_t g_native_arch = 0;  // AUDIT_ARCH_* of the native calls (si_arch of a native call)
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
        if (static_cast<uint32_t>(info->si_arch) == g_native_arch && nr >= 0 && nr < named &&
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

const char* to_string(ThreadKind kind) {
    switch (kind) {
        case ThreadKind::Vcpu: return "vcpu";
        case ThreadKind::EventLoop: return "event-loop";
        case ThreadKind::Api: return "api";
        case ThreadKind::Main: return "main";
    }
    return "?";
}

std::optional<ThreadKind> parse_thread_kind(std::string_view text) {
    for (const ThreadKind k : kThreadKinds) {
        if (text == to_string(k)) return k;
    }
    return std::nullopt;
}

Filter::Filter(ThreadKind kind) : kind_(kind) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
    if (ctx == nullptr) throw Error(fmt::format("seccomp: cannot create the {} filter", to_string(kind)));
    ctx_ = ctx;
    // A call through another ABI (int 0x80, x32) is trapped and reported too, not just killed.
    if (const int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_TRAP); rc < 0) {
        seccomp_release(ctx);
        throw Error(fmt::format("seccomp: {} filter: bad-architecture action: {}", to_string(kind), std::strerror(-rc)));
    }
    std::set<std::string_view> names;
    try {
        std::vector<AllowedCall> calls = allowlist(kind);
        for (const AllowedCall& call : sanitizer_runtime_calls()) calls.push_back(call);
        for (const AllowedCall& call : calls) {
            const std::string name(call.name);
            const int nr = seccomp_syscall_resolve_name(name.c_str());
            if (nr == __NR_SCMP_ERROR) {
                throw Error(fmt::format("seccomp: {} filter: unknown system call '{}'", to_string(kind), name));
            }
            const auto add = [&](unsigned count, const scmp_arg_cmp* cmp) {
                const int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, count, cmp);
                if (rc < 0 && rc != -EEXIST) {
                    throw Error(fmt::format("seccomp: {} filter: rule for {}: {}", to_string(kind), name,
                                            std::strerror(-rc)));
                }
                rules_++;
            };
            if (call.values.empty()) {
                add(0, nullptr);
            } else {
                for (const uint64_t v : call.values) {
                    const scmp_arg_cmp cmp = SCMP_CMP(call.arg, SCMP_CMP_EQ, v);
                    add(1, &cmp);
                }
            }
            names.insert(call.name);
        }
    } catch (...) {
        seccomp_release(ctx);
        throw;
    }
    calls_ = names.size();
}

Filter::~Filter() { seccomp_release(static_cast<scmp_filter_ctx>(ctx_)); }

size_t Filter::bpf_instructions() const {
    // seccomp_export_bpf writes the program to an fd; a pipe holds it (a few KiB).
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw sys_error("seccomp: pipe");
    const int rc = seccomp_export_bpf(static_cast<scmp_filter_ctx>(ctx_), fds[1]);
    ::close(fds[1]);
    size_t bytes = 0;
    char buf[4096];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) bytes += static_cast<size_t>(n);
    ::close(fds[0]);
    if (rc < 0) throw Error(fmt::format("seccomp: exporting the {} filter: {}", to_string(kind_), std::strerror(-rc)));
    return bytes / 8;  // struct sock_filter is 8 bytes
}

void Filter::load() const {
    if (const int rc = seccomp_load(static_cast<scmp_filter_ctx>(ctx_)); rc < 0) {
        throw Error(fmt::format("seccomp: loading the {} filter: {}", to_string(kind_), std::strerror(-rc)));
    }
}

void install_sigsys_reporter() {
    std::call_once(g_reporter_once, [] {
        g_native_arch = seccomp_arch_native();
        struct sigaction sa{};
        sa.sa_sigaction = on_sigsys;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
        if (::sigaction(SIGSYS, &sa, nullptr) != 0) throw sys_error("seccomp: sigaction(SIGSYS)");
    });
}

void install_on_this_thread(ThreadKind kind) {
    const auto start = std::chrono::steady_clock::now();
    install_sigsys_reporter();
    const Filter filter(kind);
    t_kind = to_string(kind);
    if (::pthread_getname_np(::pthread_self(), t_thread_name.data(), t_thread_name.size()) != 0) {
        t_thread_name[0] = '\0';
    }
    filter.load();
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
    log::debug("seccomp: {} filter loaded ({} calls, {} rules) in {} us", to_string(kind), filter.calls(),
               filter.rules(), us.count());
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
