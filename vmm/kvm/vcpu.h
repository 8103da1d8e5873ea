// A vCPU thread: runs KVM_RUN in a loop and dispatches exits to the port-I/O and MMIO buses.
#pragma once

#include <atomic>
#include <string>
#include <condition_variable>
#include <mutex>
#include <functional>
#include <memory>
#include <thread>

#include "memory/guest_memory.h"
#include "devices/bus.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/vm_exit.h"

namespace embervm::vmm {

// Counters a vCPU keeps about its exits, by KVM exit reason, cumulative since the vCPU was
// created. Written by the vCPU thread, read by any thread (relaxed atomics: each value is
// exact, a set of them read together is not one instant).
struct VcpuStats {
    std::atomic<uint64_t> io_exits{0};              // KVM_EXIT_IO
    std::atomic<uint64_t> mmio_exits{0};            // KVM_EXIT_MMIO
    std::atomic<uint64_t> hlt_exits{0};             // KVM_EXIT_HLT
    std::atomic<uint64_t> shutdown_exits{0};        // KVM_EXIT_SHUTDOWN (triple fault)
    std::atomic<uint64_t> system_event_exits{0};    // KVM_EXIT_SYSTEM_EVENT
    std::atomic<uint64_t> internal_error_exits{0};  // KVM_EXIT_INTERNAL_ERROR (emulation failures)
    std::atomic<uint64_t> fail_entry_exits{0};      // KVM_EXIT_FAIL_ENTRY
    std::atomic<uint64_t> intr_exits{0};            // KVM_EXIT_INTR
    std::atomic<uint64_t> other_exits{0};           // any other exit reason (ends the VM)
    std::atomic<uint64_t> interrupted{0};           // KVM_RUN left by a kick (EINTR, immediate_exit)
    std::atomic<uint64_t> emulated_instructions{0};  // emulation failures the VMM emulated
    std::atomic<uint64_t> unclaimed_accesses{0};    // I/O or MMIO no device claimed
};

// One line with the registers that matter when a guest dies (for error messages).
std::string format_vcpu_state(const kvm_regs& regs, const kvm_sregs& sregs);

// The log's account of a shutdown exit (a guest triple fault), from the registers KVM reports
// after it. KVM on AMD (SVM) puts the vCPU through INIT before it returns that exit (the VMCB is
// undefined after a shutdown), so there the registers are the reset state (CS f000, RIP fff0),
// not the fault's: the text says so, and where the fault's RIP can still be had (the host
// kernel's kvm:kvm_exit trace event), instead of passing the reset state off as the fault's.
// With the state kept (Intel VMX) it is format_vcpu_state's line.
std::string describe_shutdown(const kvm_regs& regs, const kvm_sregs& sregs);

class Vcpu {
public:
    using ExitCallback = std::function<void(VmExit)>;

    Vcpu(std::unique_ptr<KvmVcpu> vcpu, const Bus& pio, const Bus& mmio, const memory::GuestMemory& mem,
         ExitCallback on_exit);
    Vcpu(const Vcpu&) = delete;
    Vcpu& operator=(const Vcpu&) = delete;
    ~Vcpu();

    KvmVcpu& kvm() { return *vcpu_; }
    const VcpuStats& stats() const { return stats_; }

    // Starts the thread; with `seccomp` it loads the vCPU allowlist (vmm/sys/seccomp.h) before
    // its first KVM_RUN.
    void start(bool seccomp = false);
    // Makes the thread leave KVM_RUN and its loop; safe from any thread, idempotent.
    void request_stop();
    void join();
    // Pause: the thread leaves KVM_RUN and waits (using no CPU) until resume() or
    // request_stop(). pause() returns once the vCPU is out of KVM_RUN (or has ended). Any
    // thread; idempotent.
    void pause();
    void resume();

    // Installs the (empty) handler of the signal used to kick vCPUs out of KVM_RUN.
    static void install_kick_handler();

private:
    void kick();
    void thread_main();
    // Handles one exit; returns false when the vCPU must stop.
    bool handle_exit();
    void handle_io();
    void handle_mmio();
    bool handle_internal_error();
    // One line with the registers that matter when a guest dies (for error messages).
    std::string describe_state() const;
    // describe_shutdown() of this vCPU's registers (at a shutdown exit).
    std::string describe_shutdown_state() const;
    void fail(const std::string& detail);

    std::unique_ptr<KvmVcpu> vcpu_;
    const Bus& pio_;
    const Bus& mmio_;
    const memory::GuestMemory& mem_;
    ExitCallback on_exit_;
    VcpuStats stats_;
    bool seccomp_ = false;
    std::atomic<bool> stop_{false};
    std::atomic<bool> running_{false};
    std::atomic<bool> pause_requested_{false};
    std::mutex pause_mutex_;
    std::condition_variable pause_cv_;
    bool paused_ = false;  // the thread waits in the pause loop (pause_mutex_)
    std::thread thread_;
};

}  // namespace embervm::vmm
