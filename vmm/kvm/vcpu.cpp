// A vCPU thread: runs KVM_RUN in a loop and dispatches exits to the port-I/O and MMIO buses.
#include "vmm/kvm/vcpu.h"

#include <pthread.h>
#include <signal.h>

#include <cstring>

#include <fmt/format.h>

#include "vmm/kvm/cpu_setup.h"
#include "vmm/sys/error.h"
#include "vmm/kvm/insn_emulator.h"
#include "vmm/sys/log.h"
#include "vmm/sys/seccomp.h"
#include "vmm/sys/startup_probe.h"

namespace embervm::vmm {

namespace {
int kick_signal() { return SIGRTMIN; }
void kick_handler(int) {}
}  // namespace

const char* to_string(VmExit::Reason reason) {
    switch (reason) {
        case VmExit::Reason::GuestReset: return "guest reset";
        case VmExit::Reason::GuestShutdown: return "guest shutdown";
        case VmExit::Reason::TripleFault: return "guest triple fault";
        case VmExit::Reason::DebugExit: return "guest debug exit";
        case VmExit::Reason::VmmError: return "VMM error";
        case VmExit::Reason::Signal: return "signal";
        case VmExit::Reason::UserQuit: return "console quit";
        case VmExit::Reason::Requested: return "shutdown requested";
    }
    return "?";
}

void Vcpu::install_kick_handler() {
    struct sigaction sa{};
    sa.sa_handler = kick_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    if (sigaction(kick_signal(), &sa, nullptr) < 0) {
        throw sys_error("sigaction for the vCPU kick signal");
    }
}

Vcpu::Vcpu(std::unique_ptr<KvmVcpu> vcpu, const Bus& pio, const Bus& mmio, const memory::GuestMemory& mem,
           ExitCallback on_exit)
    : vcpu_(std::move(vcpu)), pio_(pio), mmio_(mmio), mem_(mem), on_exit_(std::move(on_exit)) {}

Vcpu::~Vcpu() {
    request_stop();
    join();
}

void Vcpu::start(bool seccomp) {
    seccomp_ = seccomp;
    running_ = true;
    thread_ = std::thread([this] { thread_main(); });
}

// Makes the thread leave KVM_RUN soon: immediate_exit covers a thread about to enter it, the
// signal one inside it.
void Vcpu::kick() {
    vcpu_->run_struct()->immediate_exit = 1;
    if (running_.load() && thread_.joinable()) {
        pthread_kill(thread_.native_handle(), kick_signal());
    }
}

void Vcpu::request_stop() {
    stop_.store(true);
    kick();
    std::lock_guard lock(pause_mutex_);
    pause_cv_.notify_all();
}

void Vcpu::pause() {
    pause_requested_.store(true);
    kick();
    std::unique_lock lock(pause_mutex_);
    // Bounded re-kicks: the signal may land just before the thread enters KVM_RUN (then
    // immediate_exit catches it) or be merged with another one.
    while (!paused_ && running_.load() && !pause_cv_.wait_for(lock, std::chrono::milliseconds(20), [&] {
        return paused_ || !running_.load();
    })) {
        if (thread_.joinable()) pthread_kill(thread_.native_handle(), kick_signal());
    }
}

void Vcpu::resume() {
    std::lock_guard lock(pause_mutex_);
    pause_requested_.store(false);
    pause_cv_.notify_all();
}

void Vcpu::join() {
    if (thread_.joinable()) {
        thread_.join();
    }
}

void Vcpu::fail(const std::string& detail) {
    log::error("{}", detail);
    on_exit_(VmExit{VmExit::Reason::VmmError, 1, detail});
}

void Vcpu::thread_main() {
    log::set_thread_name(fmt::format("vcpu{}", vcpu_->id()));
    // Terminal signals go to the event loop thread, never to a vCPU.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    bool first = true;
    // The last KVM_RUN ended in an exit this thread handled: the exit's instruction completes
    // (an OUT's RIP moves on, an IN's data lands in RAX) only on the next KVM_RUN.
    bool exit_in_progress = false;
    try {
        // Before any guest code runs on this thread. The guest cannot have run yet if this throws.
        if (seccomp_) seccomp::install_on_this_thread(seccomp::ThreadKind::Vcpu);
        seccomp::forbidden_call_for_test(seccomp::ThreadKind::Vcpu);
        while (!stop_.load(std::memory_order_relaxed)) {
            if (pause_requested_.load() && exit_in_progress) {
                // Complete it before parking, so a paused vCPU's state (what a snapshot saves)
                // is between two instructions: enter once with immediate_exit, which finishes the
                // pending I/O and returns at once.
                vcpu_->run_struct()->immediate_exit = 1;
                exit_in_progress = false;
                if (vcpu_->run()) {
                    if (!handle_exit()) break;
                    exit_in_progress = true;
                }
                continue;
            }
            if (pause_requested_.load()) {
                std::unique_lock lock(pause_mutex_);
                paused_ = true;
                pause_cv_.notify_all();
                pause_cv_.wait(lock, [&] { return !pause_requested_.load() || stop_.load(); });
                paused_ = false;
                vcpu_->run_struct()->immediate_exit = stop_.load() ? 1 : 0;
                continue;
            }
            if (first) {
                log::mark_first_kvm_run();
                first = false;
            }
            if (!vcpu_->run()) {
                // Kicked (EINTR) or immediate_exit: loop re-checks stop_.
                exit_in_progress = false;
                stats_.interrupted.fetch_add(1, std::memory_order_relaxed);
                vcpu_->run_struct()->immediate_exit = (stop_.load() || pause_requested_.load()) ? 1 : 0;
                continue;
            }
            if (!handle_exit()) {
                break;
            }
            exit_in_progress = true;
        }
    } catch (const std::exception& e) {
        fail(fmt::format("vcpu{}: {}", vcpu_->id(), e.what()));
    }
    {
        std::lock_guard lock(pause_mutex_);
        running_ = false;
        pause_cv_.notify_all();
    }
}

bool Vcpu::handle_exit() {
    kvm_run* run = vcpu_->run_struct();
    switch (run->exit_reason) {
        case KVM_EXIT_IO:
            handle_io();
            return true;
        case KVM_EXIT_MMIO:
            handle_mmio();
            return true;
        case KVM_EXIT_HLT:
            stats_.hlt_exits.fetch_add(1, std::memory_order_relaxed);
            // Only without an in-kernel irqchip; treat a halted CPU with nothing to wake it as power-off.
            on_exit_(VmExit{VmExit::Reason::GuestShutdown, 0, fmt::format("vcpu{} halted", vcpu_->id())});
            return false;
        case KVM_EXIT_SHUTDOWN:
            stats_.shutdown_exits.fetch_add(1, std::memory_order_relaxed);
            // The log line's thread name already says which vCPU.
            log::error("guest triple fault (shutdown exit); ending the VM with status {}; {}", kTripleFaultStatus,
                       describe_shutdown_state());
            on_exit_(VmExit{VmExit::Reason::TripleFault, kTripleFaultStatus, "triple fault"});
            return false;
        case KVM_EXIT_SYSTEM_EVENT:
            stats_.system_event_exits.fetch_add(1, std::memory_order_relaxed);
            if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN) {
                on_exit_(VmExit{VmExit::Reason::GuestShutdown, 0, "system event: shutdown"});
            } else {
                on_exit_(VmExit{VmExit::Reason::GuestReset, 0, fmt::format("system event {}", run->system_event.type)});
            }
            return false;
        case KVM_EXIT_INTERNAL_ERROR:
            stats_.internal_error_exits.fetch_add(1, std::memory_order_relaxed);
            return handle_internal_error();
        case KVM_EXIT_FAIL_ENTRY:
            stats_.fail_entry_exits.fetch_add(1, std::memory_order_relaxed);
            fail(fmt::format("vcpu{}: KVM_EXIT_FAIL_ENTRY, hardware entry failure reason {:#x}", vcpu_->id(),
                             static_cast<uint64_t>(run->fail_entry.hardware_entry_failure_reason)));
            return false;
        case KVM_EXIT_INTR:
            stats_.intr_exits.fetch_add(1, std::memory_order_relaxed);
            return true;
        default:
            stats_.other_exits.fetch_add(1, std::memory_order_relaxed);
            fail(fmt::format("vcpu{}: unexpected KVM exit reason {}", vcpu_->id(), run->exit_reason));
            return false;
    }
}

void Vcpu::handle_io() {
    kvm_run* run = vcpu_->run_struct();
    stats_.io_exits.fetch_add(1, std::memory_order_relaxed);
    auto* base = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
    const size_t size = run->io.size;
    for (uint32_t i = 0; i < run->io.count; i++) {
        std::span<uint8_t> data(base + i * size, size);
        if (run->io.direction == KVM_EXIT_IO_OUT) {
            if (!pio_.write(run->io.port, data)) {
                stats_.unclaimed_accesses.fetch_add(1, std::memory_order_relaxed);
            }
        } else if (!pio_.read(run->io.port, data)) {
            std::memset(data.data(), 0xff, size);
            stats_.unclaimed_accesses.fetch_add(1, std::memory_order_relaxed);
        }
    }
}

void Vcpu::handle_mmio() {
    kvm_run* run = vcpu_->run_struct();
    stats_.mmio_exits.fetch_add(1, std::memory_order_relaxed);
    const size_t len = std::min<size_t>(run->mmio.len, sizeof(run->mmio.data));
    std::span<uint8_t> data(run->mmio.data, len);
    if (run->mmio.is_write) {
        if (!mmio_.write(run->mmio.phys_addr, data)) {
            stats_.unclaimed_accesses.fetch_add(1, std::memory_order_relaxed);
            log::debug("unclaimed MMIO write at {:#x}", static_cast<uint64_t>(run->mmio.phys_addr));
        }
    } else if (!mmio_.read(run->mmio.phys_addr, data)) {
        std::memset(data.data(), 0xff, len);
        stats_.unclaimed_accesses.fetch_add(1, std::memory_order_relaxed);
        log::debug("unclaimed MMIO read at {:#x}", static_cast<uint64_t>(run->mmio.phys_addr));
    }
}

std::string format_vcpu_state(const kvm_regs& r, const kvm_sregs& s) {
    return fmt::format("rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} "
                       "rdi={:#x} cs={:#x}(base {:#x}, l={} db={}) ss={:#x} cr0={:#x} cr2={:#x} cr3={:#x} "
                       "cr4={:#x} efer={:#x} gdt={:#x}/{:#x} idt={:#x}/{:#x}",
                       r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, s.cs.selector, s.cs.base,
                       s.cs.l, s.cs.db, s.ss.selector, s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.gdt.base, s.gdt.limit,
                       s.idt.base, s.idt.limit);
}

std::string describe_shutdown(const kvm_regs& r, const kvm_sregs& s) {
    // The architectural state after RESET/INIT: CS f000 based at ffff0000, RIP fff0, paging and
    // protection off. A guest does not get there through a triple fault by itself.
    const bool reset_state = r.rip == 0xfff0 && s.cs.selector == 0xf000 && s.cs.base == 0xffff0000 &&
                             (s.cr0 & 0x80000001) == 0;
    if (!reset_state) return format_vcpu_state(r, s);
    return "the registers are already the reset state (KVM on AMD re-initialises a vCPU on a shutdown "
           "exit), so the fault's address is lost here; the host's kvm:kvm_exit trace event (exit reason "
           "shutdown) has the guest RIP at the fault";
}

std::string Vcpu::describe_state() const {
    try {
        return format_vcpu_state(vcpu_->get_regs(), vcpu_->get_sregs());
    } catch (const std::exception& e) {
        return fmt::format("registers unavailable: {}", e.what());
    }
}

std::string Vcpu::describe_shutdown_state() const {
    try {
        return describe_shutdown(vcpu_->get_regs(), vcpu_->get_sregs());
    } catch (const std::exception& e) {
        return fmt::format("registers unavailable: {}", e.what());
    }
}

// KVM's instruction emulator gave up (KVM_CAP_EXIT_ON_EMULATION_FAILURE hands us the bytes):
// emulate the instruction here when its semantics are simple, else report it and stop.
bool Vcpu::handle_internal_error() {
    kvm_run* run = vcpu_->run_struct();
    const uint32_t suberror = run->internal.suberror;
    CpuState cpu{};
    cpu.regs = vcpu_->get_regs();
    cpu.sregs = vcpu_->get_sregs();
    const uint64_t rip = cpu.regs.rip;

    if (suberror != KVM_INTERNAL_ERROR_EMULATION) {
        std::string data;
        for (uint32_t i = 0; i < std::min<uint32_t>(run->internal.ndata, 16); i++) {
            data += fmt::format(" {:#x}", static_cast<uint64_t>(run->internal.data[i]));
        }
        fail(fmt::format("vcpu{}: KVM internal error, suberror {} at rip={:#x}, data:{}", vcpu_->id(), suberror, rip,
                         data));
        return false;
    }

    VcpuEmulatorMemory guest([this](uint64_t linear) { return vcpu_->translate(linear); }, mem_);
    std::vector<uint8_t> bytes;
    if ((run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0) {
        const size_t n = std::min<size_t>(run->emulation_failure.insn_size, sizeof(run->emulation_failure.insn_bytes));
        bytes.assign(run->emulation_failure.insn_bytes, run->emulation_failure.insn_bytes + n);
    } else {
        // Older kernels: fetch the bytes at CS:RIP ourselves (up to 15, stop at an unmapped page).
        const uint64_t linear = cpu.sregs.cs.base + rip;
        for (size_t i = 0; i < 15; i++) {
            uint8_t b;
            if (!guest.read(linear + i, std::span<uint8_t>(&b, 1))) break;
            bytes.push_back(b);
        }
    }

    cpu.kernel_gs_base = vcpu_->get_msr(kMsrKernelGsBase);
    const CpuState before = cpu;
    const EmulationResult result = emulate_instruction(bytes, cpu, guest);
    if (result.status != EmulationResult::Status::Emulated) {
        fail(fmt::format("vcpu{}: KVM emulation failure at rip={:#x} cs={:#x}: instruction {} is not emulated by the "
                         "VMM ({}{}{})",
                         vcpu_->id(), rip, cpu.sregs.cs.selector, format_instruction_bytes(bytes),
                         result.status == EmulationResult::Status::MemoryFault ? "memory fault" : "unsupported",
                         result.detail.empty() ? "" : ": ", result.detail));
        return false;
    }
    stats_.emulated_instructions.fetch_add(1, std::memory_order_relaxed);
    log::debug("emulated {} at rip={:#x}", result.mnemonic, rip);
    vcpu_->set_regs(cpu.regs);
    if (std::memcmp(&before.sregs, &cpu.sregs, sizeof(kvm_sregs)) != 0) {
        vcpu_->set_sregs(cpu.sregs);
    }
    if (before.kernel_gs_base != cpu.kernel_gs_base) {
        vcpu_->set_msrs({{kMsrKernelGsBase, cpu.kernel_gs_base}});
    }
    if (result.exception_vector) {
        kvm_vcpu_events events = vcpu_->get_vcpu_events();
        events.exception.injected = 1;
        events.exception.nr = *result.exception_vector;
        events.exception.has_error_code = result.exception_error_code.has_value() ? 1 : 0;
        events.exception.error_code = result.exception_error_code.value_or(0);
        events.flags = 0;
        vcpu_->set_vcpu_events(events);
    }
    return true;
}

}  // namespace embervm::vmm
