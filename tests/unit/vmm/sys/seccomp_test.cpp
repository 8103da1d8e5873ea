// The seccomp allowlists (vmm/sys/seccomp_filters.cpp) and their enforcement: every list
// compiles; a child process under a filter lives through allowed calls and dies with SIGSYS,
// after the report line, on a forbidden one.
#include "vmm/sys/seccomp.h"
#include "vmm/sys/seccomp_lists.h"

#include <seccomp.h>

#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmm/sys/syscall_names.h"

#include <catch2/catch.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <set>
#include <string>
#include <utility>

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_seccomp_test {

namespace seccomp = embervm::seccomp;

namespace {

struct ChildResult {
    int wait_status = 0;
    std::string output;  // what the child wrote to stderr
};

// Runs `body` in a forked child with stderr on a pipe, under the filter of `kind`; the child
// exits with 0 if body returns. `hook`: the child's EMBERVM_TEST_SECCOMP_VIOLATION.
ChildResult run_filtered(seccomp::ThreadKind kind, const std::function<void()>& body, const char* hook = nullptr) {
    int out[2];
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(out[1], STDERR_FILENO);
        if (hook != nullptr) ::setenv("EMBERVM_TEST_SECCOMP_VIOLATION", hook, 1);
        try {
            seccomp::install_on_this_thread(kind);
        } catch (...) {
            ::_exit(90);
        }
        body();
        ::_exit(0);
    }
    ::close(out[1]);
    ChildResult r;
    char buf[512];
    for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) r.output.append(buf, static_cast<size_t>(n));
    ::close(out[0]);
    REQUIRE(::waitpid(pid, &r.wait_status, 0) == pid);
    return r;
}

bool died_of_sigsys(const ChildResult& r) {
    UNSCOPED_INFO("child output: " << r.output);
    return WIFSIGNALED(r.wait_status) && WTERMSIG(r.wait_status) == SIGSYS;
}
bool exited_0(const ChildResult& r) { return WIFEXITED(r.wait_status) && WEXITSTATUS(r.wait_status) == 0; }

}  // namespace

TEST_CASE("seccomp: every thread kind's allowlist compiles, each entry with a reason") {
    for (const seccomp::ThreadKind kind : seccomp::kThreadKinds) {
        INFO(seccomp::to_string(kind));
        for (const auto& call : seccomp::allowlist(kind)) {
            INFO(std::string(call.name));
            CHECK(!call.reason.empty());
            CHECK(call.arg < 6);
        }
        const seccomp::Filter filter(kind);
        CHECK(filter.calls() > 10);
        CHECK(filter.rules() >= filter.calls());
        const size_t instructions = filter.program().size();
        CHECK(instructions > filter.calls());
        CHECK(instructions < 4096);  // BPF_MAXINSNS
        WARN(seccomp::to_string(kind) << ": " << filter.calls() << " calls, " << filter.rules() << " rules, "
                                      << instructions << " BPF instructions");
    }
}

TEST_CASE("seccomp: the programs built at build time are what libseccomp compiles from the lists now") {
    for (const seccomp::ThreadKind kind : seccomp::kThreadKinds) {
        INFO(seccomp::to_string(kind));
        const seccomp::Filter filter(kind);
        const std::vector<sock_filter> now = filter.program();
        const seccomp::BuiltProgram built = seccomp::built_program(kind);
        CHECK(built.calls == filter.calls());
        CHECK(built.rules == filter.rules());
        REQUIRE(built.code.size() == now.size());
        for (size_t i = 0; i < now.size(); i++) {
            INFO("instruction " << i);
            CHECK(built.code[i].code == now[i].code);
            CHECK(built.code[i].jt == now[i].jt);
            CHECK(built.code[i].jf == now[i].jf);
            CHECK(built.code[i].k == now[i].k);
        }
    }
}

TEST_CASE("seccomp: the generated system call names are libseccomp's") {
    namespace generated = embervm::seccomp::generated;
    size_t named = 0;
    for (size_t nr = 0; nr < std::size(generated::kSyscallNames); nr++) {
        char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, static_cast<int>(nr));
        INFO("system call " << nr);
        if (generated::kSyscallNames[nr] != nullptr) {
            REQUIRE(name != nullptr);
            CHECK(std::string(name) == generated::kSyscallNames[nr]);
            named++;
        }
        std::free(name);
    }
    CHECK(named > 300);
}

TEST_CASE("seccomp: thread kinds round-trip through their names") {
    for (const seccomp::ThreadKind kind : seccomp::kThreadKinds) {
        CHECK(seccomp::parse_thread_kind(seccomp::to_string(kind)) == kind);
    }
    CHECK(!seccomp::parse_thread_kind("vcpu0"));
}

TEST_CASE("seccomp: no thread may create a VM, a vCPU or a process, or open a socket to the network") {
    for (const seccomp::ThreadKind kind : seccomp::kThreadKinds) {
        std::set<std::string_view> names;
        for (const auto& call : seccomp::allowlist(kind)) names.insert(call.name);
        INFO(seccomp::to_string(kind));
        for (const char* forbidden : {"execve", "execveat", "fork", "vfork", "clone", "clone3", "ptrace", "mount",
                                      "setuid", "init_module", "bpf", "seccomp"}) {
            CHECK(names.count(forbidden) == 0);
        }
        // Only the event loop makes sockets (virtio-vsock's host side), and only Unix ones.
        for (const auto& call : seccomp::allowlist(kind)) {
            if (call.name == "socket") {
                CHECK(kind == seccomp::ThreadKind::EventLoop);
                CHECK(call.arg == 0);
                CHECK(call.values == std::vector<uint64_t>{AF_UNIX});
            }
            if (call.name == "connect") CHECK(kind == seccomp::ThreadKind::EventLoop);
        }
    }
}

TEST_CASE("seccomp: the event loop may make Unix sockets, not network ones") {
    const auto unix_ok = run_filtered(seccomp::ThreadKind::EventLoop, [] {
        if (::socket(AF_UNIX, SOCK_STREAM, 0) < 0) ::_exit(94);
    });
    CHECK(exited_0(unix_ok));
    const auto inet = run_filtered(seccomp::ThreadKind::EventLoop, [] { ::socket(AF_INET, SOCK_STREAM, 0); });
    CHECK_THAT(inet.output, Catch::Contains("made system call socket (41)"));
}

TEST_CASE("seccomp: a vCPU-filtered process lives through allowed calls") {
    const auto r = run_filtered(seccomp::ThreadKind::Vcpu, [] {
        const char msg[] = "still alive\n";
        if (::write(STDERR_FILENO, msg, sizeof msg - 1) < 0) ::_exit(91);
        if (::getpid() <= 0) ::_exit(92);
        // KVM_RUN is allowed (on a non-KVM fd it just fails): the argument check lets it through.
        if (::ioctl(STDERR_FILENO, KVM_RUN, 0) != -1) ::_exit(93);
    });
    CHECK(exited_0(r));
    CHECK_THAT(r.output, Catch::Contains("still alive"));
}

TEST_CASE("seccomp: argument rules: epoll_ctl's operation") {
    // Every list allows EPOLL_CTL_MOD (posting to a loop); the event loop's allows every
    // operation (an unconditional entry next to the conditional one). On fd -1 the calls fail
    // with EBADF when allowed.
    const auto add = [] {
        epoll_event ev{};
        ::epoll_ctl(-1, EPOLL_CTL_ADD, STDERR_FILENO, &ev);
    };
    const auto mod = [] {
        epoll_event ev{};
        ::epoll_ctl(-1, EPOLL_CTL_MOD, STDERR_FILENO, &ev);
    };
    CHECK(exited_0(run_filtered(seccomp::ThreadKind::EventLoop, add)));
    CHECK(exited_0(run_filtered(seccomp::ThreadKind::Vcpu, mod)));
    const auto r = run_filtered(seccomp::ThreadKind::Vcpu, add);
    CHECK(died_of_sigsys(r));
    CHECK_THAT(r.output, Catch::Contains("the vcpu thread made system call epoll_ctl (233)"));
}

TEST_CASE("seccomp: a forbidden call ends the process with SIGSYS and names the thread kind and the call") {
    SECTION("socket on a vCPU thread") {
        const auto r = run_filtered(seccomp::ThreadKind::Vcpu, [] { ::socket(AF_INET, SOCK_STREAM, 0); });
        CHECK(died_of_sigsys(r));
        CHECK_THAT(r.output, Catch::Contains("seccomp: the vcpu thread made system call socket (41)"));
        CHECK_THAT(r.output, Catch::Contains("--no-seccomp"));
    }
    SECTION("an ioctl request outside the vCPU list (KVM_CREATE_VM)") {
        const auto r = run_filtered(seccomp::ThreadKind::Vcpu, [] { ::ioctl(STDERR_FILENO, KVM_CREATE_VM, 0); });
        CHECK(died_of_sigsys(r));
        CHECK_THAT(r.output, Catch::Contains("made system call ioctl (16)"));
    }
    SECTION("openat on the vCPU thread (allowed only in a sanitizer build, whose runtime opens /proc files)") {
        const auto extra = seccomp::sanitizer_runtime_calls();
        const bool sanitizer_allows =
            std::any_of(extra.begin(), extra.end(), [](const auto& c) { return std::string_view(c.name) == "openat"; });
        const auto r = run_filtered(seccomp::ThreadKind::Vcpu, [] { ::open("/dev/null", O_RDONLY); });
        if (sanitizer_allows) {
            CHECK(exited_0(r));
        } else {
            CHECK(died_of_sigsys(r));
            CHECK_THAT(r.output, Catch::Contains("made system call openat"));
        }
    }
    SECTION("tgkill with a signal other than the kick's") {
        const auto r = run_filtered(seccomp::ThreadKind::EventLoop, [] { ::kill(::getpid(), SIGUSR1); });
        CHECK(died_of_sigsys(r));
        CHECK_THAT(r.output, Catch::Contains("the event-loop thread made system call kill (62)"));
    }
    SECTION("the test hook: EMBERVM_TEST_SECCOMP_VIOLATION naming the kind") {
        const auto r = run_filtered(seccomp::ThreadKind::Api, [] { seccomp::forbidden_call_for_test(seccomp::ThreadKind::Api); }, "api");
        CHECK(died_of_sigsys(r));
        CHECK_THAT(r.output, Catch::Contains("the api thread made system call socket (41)"));
    }
    SECTION("the test hook naming another kind does nothing") {
        const auto r = run_filtered(seccomp::ThreadKind::Api, [] { seccomp::forbidden_call_for_test(seccomp::ThreadKind::Api); }, "vcpu");
        CHECK(exited_0(r));
    }
}

}  // namespace unit_seccomp_test
