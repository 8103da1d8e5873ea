// Compiling the seccomp allowlists with libseccomp (vmm/sys/seccomp_lists.h): at build time for
// gen_seccomp_programs, and in the tests.
#include "vmm/sys/seccomp_lists.h"

#include <fcntl.h>
#include <seccomp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <string>

#include <fmt/format.h>

#include "vmm/sys/error.h"

namespace embervm::seccomp {

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

std::vector<sock_filter> Filter::program() const {
    // seccomp_export_bpf writes the program to an fd; a pipe holds it (a few KiB, less than
    // the pipe's 64 KiB, so the write does not block before the read).
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw sys_error("seccomp: pipe");
    const int rc = seccomp_export_bpf(static_cast<scmp_filter_ctx>(ctx_), fds[1]);
    ::close(fds[1]);
    std::string bytes;
    char buf[4096];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) bytes.append(buf, static_cast<size_t>(n));
    ::close(fds[0]);
    if (rc < 0) throw Error(fmt::format("seccomp: exporting the {} filter: {}", to_string(kind_), std::strerror(-rc)));
    if (bytes.size() % sizeof(sock_filter) != 0) {
        throw Error(fmt::format("seccomp: the {} filter's program has {} bytes", to_string(kind_), bytes.size()));
    }
    std::vector<sock_filter> code(bytes.size() / sizeof(sock_filter));
    std::memcpy(code.data(), bytes.data(), bytes.size());
    return code;
}

}  // namespace embervm::seccomp
