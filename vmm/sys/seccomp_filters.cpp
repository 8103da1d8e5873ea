// The seccomp allowlists of embervm's threads, one per thread kind (vmm/sys/seccomp.h): every
// system call a thread of that kind may make, with the reason. This file is the one to review;
// a call missing here shows up as a SIGSYS log line naming the thread kind and the call.
//
// Arguments are restricted where that is cheap and means something: ioctl requests (KVM_RUN and
// the few register ioctls on vCPU threads; no KVM_CREATE_* after start on any thread), fcntl
// commands, the signals tgkill may send and whose action may change.
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/if_tun.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <termios.h>

#include "virtio/net/vhost_abi.h"  // vhost ioctl numbers (header only)
#include "vmm/kvm/kvm_abi.h"  // KVM ioctl numbers as the kernel knows them (header only)
#include "vmm/sys/seccomp_lists.h"

namespace embervm::seccomp {

namespace {

using Calls = std::vector<AllowedCall>;

void append(Calls& to, const Calls& from) { to.insert(to.end(), from.begin(), from.end()); }

uint64_t sig(int signo) { return static_cast<uint64_t>(signo); }

// What every embervm thread does: allocate, lock, read the clock, log, take signals, end.
Calls common_calls() {
    return {
        {"futex", "mutexes, condition variables, thread joins"},
        {"mmap", "malloc (large blocks, thread arenas)"},
        {"munmap", "free of large blocks"},
        {"mremap", "realloc of large blocks"},
        {"mprotect", "malloc growing a thread arena"},
        {"madvise", "free returning memory; a thread's stack released at its exit; the balloon"},
        {"brk", "malloc on the main arena"},
        {"write", "log lines (stderr or the log file), eventfd signals (interrupts, loop wake-ups)"},
        {"clock_gettime", "clocks where the vDSO falls back to the kernel (log timestamps, timers)"},
        {"clock_nanosleep", "short sleeps (std::this_thread::sleep_for)"},
        {"nanosleep", "short sleeps"},
        {"sched_yield", "spinning waits in the libraries"},
        {"poll", "a full log pipe (write_all); a virtio-blk reset on a vCPU waits for its requests in flight"},
        {"ppoll", "as poll"},
        {"sched_getaffinity", "glibc's malloc sizing its arenas once more than 8 threads allocate"},
        {"getrusage", "CPU time and page faults for the log (first KVM_RUN, start-up probe)"},
        {"getpid", "raise() and the SIGSYS report"},
        {"gettid", "raise() and the SIGSYS report"},
        {"rt_sigprocmask", "raise() and abort() mask signals around tgkill"},
        {"rt_sigreturn", "return from the vCPU kick and asio's signal handlers"},
        {"restart_syscall", "a call interrupted by a signal and restarted"},
        {"tgkill", "kick a vCPU out of KVM_RUN (SIGRTMIN; pause, stop)", 2, {sig(SIGRTMIN)}},
        {"tgkill", "raise(SIGSYS) in the SIGSYS report, abort()", 2, {sig(SIGSYS), sig(SIGABRT)}},
        {"epoll_ctl", "posting work to an event loop (asio re-arms its wake-up eventfd: EPOLL_CTL_MOD)", 1,
         {EPOLL_CTL_MOD}},
        {"exit", "a thread ends"},
        {"exit_group", "the process ends"},
    };
}

// ioctls a vCPU thread makes on its own vCPU fd (run, and the registers read and written for a
// report or an instruction KVM left to the VMM: vmm/kvm/vcpu.cpp), and on the VM fd for
// virtio-pci (a driver's MSI-X table write routes a vector; a BAR move moves ioeventfds).
std::vector<uint64_t> vcpu_ioctls() {
    return {KVM_RUN,          KVM_GET_REGS,        KVM_SET_REGS,        KVM_GET_SREGS,
            KVM_SET_SREGS,    vmm::kvm_abi::kGetMsrs, vmm::kvm_abi::kSetMsrs, KVM_GET_VCPU_EVENTS,
            KVM_SET_VCPU_EVENTS, KVM_TRANSLATE,    TUNSETOFFLOAD,       vmm::kvm_abi::kSetGsiRouting,
            KVM_IOEVENTFD};
}

// vhost-net ioctls of a device's activation (the rings handed to the kernel) and reset (taken
// back): virtio/net/vhost_net_device.h. Opening /dev/vhost-net, SET_OWNER and GET_FEATURES
// happen before any filter is loaded.
std::vector<uint64_t> vhost_ioctls() {
    namespace abi = virtio::net::vhost_abi;
    return {abi::kSetFeatures,  abi::kSetMemTable,  abi::kSetVringNum,  abi::kSetVringAddr,
            abi::kSetVringBase, abi::kGetVringBase, abi::kSetVringKick, abi::kSetVringCall,
            abi::kSetVringErr,  abi::kNetSetBackend};
}

template <typename... Lists>
std::vector<uint64_t> joined(Lists&&... lists) {
    std::vector<uint64_t> out;
    (out.insert(out.end(), lists.begin(), lists.end()), ...);
    return out;
}

Calls vcpu_calls() {
    return {
        {"ioctl",
         "KVM_RUN and the vCPU's registers (exits, emulation, reports); TUNSETOFFLOAD when a virtio-net "
         "driver activates its device (device activation runs on the vCPU that writes the status); "
         "KVM_SET_GSI_ROUTING and KVM_IOEVENTFD when a virtio-pci driver programs MSI-X or moves a BAR; "
         "the vhost-net ioctls when a driver activates or resets a vhost interface",
         1, joined(vcpu_ioctls(), vhost_ioctls())},
        {"io_uring_enter", "a virtio-blk reset waits for its io_uring requests in flight"},
        {"read", "eventfds"},
        {"timerfd_settime",
         "a device's rate-limiter timer, armed or disarmed when its driver activates or resets it "
         "(virtio/rate_limiter.h)"},
        // A vhost-user device's driver activates or resets it: its requests to the backend (with
        // the memfds and eventfds attached) and their replies, on the Unix socket opened at start.
        {"sendmsg", "vhost-user requests when a driver activates or resets its device"},
        {"recvmsg", "vhost-user replies when a driver activates or resets its device"},
    };
}

// fcntl commands of the loop and the API threads: asio's and FdWatch's descriptor set-up.
std::vector<uint64_t> fcntl_commands() {
    return {F_GETFL, F_SETFL, F_GETFD, F_SETFD, F_DUPFD_CLOEXEC};
}

// Calls of a thread that runs a Boost.Asio loop (epoll, timerfd, eventfd) over sockets and fds.
Calls asio_loop_calls() {
    return {
        {"epoll_wait", "the event loop"},
        {"epoll_pwait", "the event loop"},
        {"epoll_ctl", "watching and unwatching fds"},
        {"timerfd_settime", "asio's timers"},
        {"read", "eventfds, timerfds, TAP frames, stdin"},
        {"readv", "asio reads into buffer sequences"},
        {"writev", "asio writes of buffer sequences, TAP frames"},
        {"close", "fds closed (watches, sockets, replaced images)"},
        {"fcntl", "fd flags and watch duplicates (asio, FdWatch)", 1, fcntl_commands()},
        {"ioctl", "FIONBIO: asio makes descriptors non-blocking", 1, {FIONBIO}},
    };
}

Calls event_loop_calls() {
    return {
        // virtio-blk on the loop (sync engine) and its io_uring engine.
        {"preadv", "virtio-blk reads (sync engine)"},
        {"pwritev", "virtio-blk writes (sync engine)"},
        {"pread64", "virtio-blk reads"},
        {"pwrite64", "virtio-blk WRITE_ZEROES fallback (image_file.cpp)"},
        {"fdatasync", "virtio-blk FLUSH with cache=writeback"},
        {"fsync", "virtio-blk FLUSH"},
        {"fallocate", "virtio-blk DISCARD (punch hole) and WRITE_ZEROES (zero range)"},
        {"io_uring_enter", "the io_uring engine submits and reaps"},
        {"io_uring_setup", "a drive swap to an io_uring drive creates its ring"},
        {"io_uring_register", "a drive swap registers the new ring's completion eventfd"},
        // The drive swap (Vmm::update_drive) opens, checks and locks the new image here.
        {"openat", "a drive swap opens the new image"},
        {"fstat", "a drive swap checks the new image"},
        {"newfstatat", "a drive swap checks the new image"},
        {"statx", "a drive swap checks the new image"},
        {"lseek", "image sizes"},
        {"flock", "a drive swap locks the new image and unlocks the old one"},
        {"ioctl",
         "BLKGETSIZE64 (a drive swap to a block device); TCSETS* (the console's terminal restored at "
         "the end); TUNSETOFFLOAD (virtio-net features); the vhost-net ioctls (a vhost interface's rings "
         "taken back when the VM ends); KVM_GET_IRQCHIP (the device watchdog logs an IOAPIC pin's state when "
         "it raises an interrupt again)",
         1, joined(std::vector<uint64_t>{BLKGETSIZE64, TCSETS, TCSETSW, TCSETSF, TCGETS, TUNSETOFFLOAD,
                                         KVM_GET_IRQCHIP}, vhost_ioctls())},
        {"eventfd2", "a drive swap creates the new backend's completion eventfd"},
        // virtio-vsock's host side (virtio/vsock/vsock_device.h): Unix sockets only.
        {"socket", "virtio-vsock connects a guest connection to <uds_path>_<port>", 0, {AF_UNIX}},
        {"connect", "virtio-vsock: the Unix socket it just made (no other socket can be made here)"},
        {"accept4", "virtio-vsock: host processes connecting to uds_path"},
        {"recvfrom", "virtio-vsock: the CONNECT line (MSG_PEEK); vhost-user: a peek at a backend's socket that became readable (the backend hung up)"},
        {"sendto", "virtio-vsock: OK lines and guest data to the host sockets"},
        {"sendmsg", "virtio-vsock: guest data to the host sockets"},
        {"shutdown", "virtio-vsock: the guest's SHUTDOWN(SEND) passed on"},
        {"rt_sigaction", "asio's signal_set restores the termination signals' default action when the VM ends",
         0, {sig(SIGINT), sig(SIGTERM), sig(SIGHUP)}},
    };
}

// What PUT /snapshot/create asks KVM on the API thread (the VM paused).
std::vector<uint64_t> snapshot_ioctls() {
    return {BLKGETSIZE64,         KVM_CHECK_EXTENSION,     vmm::kvm_abi::kGetMsrIndexList, vmm::kvm_abi::kGetCpuid2,
            vmm::kvm_abi::kGetMsrs, KVM_GET_MP_STATE,      KVM_GET_REGS,                   KVM_GET_SREGS,
            vmm::kvm_abi::kGetXsave, vmm::kvm_abi::kGetXsave2, KVM_GET_XCRS,              KVM_GET_DEBUGREGS,
            KVM_GET_LAPIC,        KVM_GET_VCPU_EVENTS,     KVM_GET_TSC_KHZ,                KVM_GET_IRQCHIP,
            KVM_GET_PIT2,         KVM_GET_CLOCK,           KVM_GET_DIRTY_LOG,              KVM_HAS_DEVICE_ATTR,
            KVM_GET_DEVICE_ATTR};
}

Calls api_calls() {
    return {
        {"accept4", "new API connections"},
        {"accept", "new API connections"},
        {"recvmsg", "asio socket reads; vhost-user replies when PUT /snapshot/create stops and restarts a backend's rings"},
        {"recvfrom", "asio socket reads"},
        {"sendmsg", "asio socket writes; vhost-user requests when PUT /snapshot/create stops and restarts a backend's rings"},
        {"sendto", "asio socket writes"},
        {"shutdown", "closing a connection"},
        {"getsockopt", "asio's socket error checks"},
        // Pre-boot requests check the files they name (validate_files); a drive PATCH checks the
        // new image; PUT /logger and /metrics open their outputs.
        {"openat", "files named by requests (kernel, initrd, drive images, log and metrics outputs)"},
        {"fstat", "files named by requests"},
        {"newfstatat", "files named by requests"},
        {"statx", "files named by requests"},
        {"lseek", "image sizes"},
        {"flock", "a drive's image lock checked"},
        {"access", "files named by requests"},
        {"faccessat", "files named by requests"},
        {"faccessat2", "files named by requests"},
        {"ioctl",
         "BLKGETSIZE64: a block device named as a drive; PUT /snapshot/create reads the paused VM's "
         "state (vmm/vmm_snapshot.cpp: the KVM_GET_* of the vCPUs, irqchip, PIT, clock, dirty log) and "
         "stops and restarts a vhost interface's rings (the vhost-net ioctls)",
         1, joined(snapshot_ioctls(), vhost_ioctls())},
        {"tgkill", "wakes the main thread for InstanceStart (SIGRTMIN + 1)", 2, {sig(SIGRTMIN + 1)}},
        // PUT /snapshot/create writes its two files through temporary files renamed when complete.
        {"ftruncate", "PUT /snapshot/create sizes the memory file"},
        {"pwrite64", "PUT /snapshot/create writes the memory file"},
        {"fsync", "PUT /snapshot/create makes both files durable"},
        {"rename", "PUT /snapshot/create renames the complete files into place"},
        {"renameat", "PUT /snapshot/create renames the complete files into place"},
        {"renameat2", "PUT /snapshot/create renames the complete files into place"},
        {"unlink", "PUT /snapshot/create removes a temporary file it could not complete"},
    };
}

Calls main_calls() {
    return {
        {"rt_sigtimedwait", "the API loop waits for the termination signals (and InstanceStart)"},
        {"close", "the VM's fds closed when it is destroyed"},
        {"io_uring_enter", "an io_uring engine waits for its requests when it is destroyed"},
        {"flock", "image locks released"},
        {"unlink", "the API socket and virtio-vsock's uds_path removed"},
        {"ioctl",
         "TCSETS*: the console's terminal restored; the vhost-net ioctls (a vhost interface's rings taken "
         "back when the VM is destroyed with the device still activated)",
         1, joined(std::vector<uint64_t>{TCSETS, TCSETSW, TCSETSF, TCGETS}, vhost_ioctls())},
        {"read", "eventfds drained when the VM is destroyed"},
        {"epoll_ctl", "fds unwatched when the VM is destroyed", 1, {EPOLL_CTL_DEL}},
        // A vhost-user device still activated when the VM ends (a guest that exits without
        // resetting its driver) is reset on destruction: GET_VRING_BASE stops the backend's rings.
        {"sendmsg", "vhost-user requests when the VM is destroyed with the device still activated"},
        {"recvmsg", "vhost-user replies when the VM is destroyed with the device still activated"},
        {"rt_sigaction", "asio's signal_set restores the termination signals' default action", 0,
         {sig(SIGINT), sig(SIGTERM), sig(SIGHUP)}},
    };
}

}  // namespace

std::vector<AllowedCall> allowlist(ThreadKind kind) {
    Calls calls = common_calls();
    switch (kind) {
        case ThreadKind::Vcpu: append(calls, vcpu_calls()); break;
        case ThreadKind::EventLoop:
            append(calls, asio_loop_calls());
            append(calls, event_loop_calls());
            break;
        case ThreadKind::Api:
            append(calls, asio_loop_calls());
            append(calls, api_calls());
            break;
        case ThreadKind::Main: append(calls, main_calls()); break;
    }
    return calls;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
#define EMBERVM_SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define EMBERVM_SANITIZER_BUILD 1
#endif
#endif

std::vector<AllowedCall> sanitizer_runtime_calls() {
#ifdef EMBERVM_SANITIZER_BUILD
    return {
        {"clone", "LeakSanitizer: the tracer thread that stops the others at exit"},
        {"ptrace", "LeakSanitizer: the tracer attaches to every thread to read its registers"},
        {"wait4", "LeakSanitizer: waits for the stopped threads and for the tracer"},
        {"prctl", "LeakSanitizer: PR_SET_PTRACER, PR_SET_PDEATHSIG in the tracer"},
        {"sched_yield", "LeakSanitizer: spins while the tracer works"},
        {"getpid", "sanitizer runtimes: their own pid in reports and the tracer"},
        {"getppid", "LeakSanitizer: the tracer checks its parent"},
        {"gettid", "sanitizer runtimes: thread ids"},
        {"openat", "sanitizer runtimes: /proc/self/maps, /proc/self/task for reports and the leak check"},
        {"getdents64", "LeakSanitizer: lists /proc/self/task"},
        {"read", "sanitizer runtimes: /proc files"},
        {"close", "sanitizer runtimes: /proc files"},
        {"newfstatat", "sanitizer runtimes: /proc files"},
        {"lseek", "sanitizer runtimes: /proc files"},
        {"readlink", "sanitizer runtimes: /proc/self/exe for the symbolizer"},
        {"sigaltstack", "sanitizer runtimes: the tracer's signal stack"},
        {"rt_sigaction", "sanitizer runtimes: the tracer's signal handlers"},
        {"rt_sigprocmask", "sanitizer runtimes: signals blocked around the leak check"},
        {"pipe2", "UndefinedBehaviorSanitizer: its vptr check tests whether a vtable is readable by writing it into a "
                  "new pipe (IsAccessibleMemoryRange), on any thread"},
        {"write", "UndefinedBehaviorSanitizer: the vptr check's pipe; sanitizer runtimes: reports"},
        {"exit", "LeakSanitizer: the tracer thread ends"},
        {"exit_group", "sanitizer runtimes: the process ends with the report's status"},
    };
#else
    return {};
#endif
}

}  // namespace embervm::seccomp
