// embervm's C++ library API: build a microVM from a configuration, run it on threads of its
// own, pause, resume, change the balloon target and end it, from the embedding program. Several
// VMs may run in one process. The `embervm` command-line program is a thin client of the same
// VMM.
//
//   auto vm = embervm::Vm::from_json(R"({"boot-source": {"kernel_image_path": "vmlinux"}})");
//   vm->start();              // returns once the vCPUs run; throws if the VM cannot be built
//   vm->pause(); vm->resume();
//   vm->request_shutdown();   // or wait for the guest to power off / reboot
//   embervm::vmm::VmExit exit = vm->wait();
//
// Errors: a bad configuration throws embervm::vmm::ConfigError (one line naming the field);
// other failures to build the VM throw embervm::Error.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "vmm/config/config.h"
#include "vmm/kvm/vm_exit.h"

namespace embervm {

struct VmOptions {
    // The guest console goes to this file (created or truncated); by default it is discarded.
    std::optional<std::string> serial_out;
    // ELF kernels with a PVH note boot through it (else the 64-bit Linux boot protocol).
    bool prefer_pvh = true;
    // The process's console is the guest's: the guest console goes to stdout (unless
    // serial_out names a file) and stdin feeds the guest's console device: the serial port, or
    // the virtio-console device with the configuration's "console": {"type": "virtio"} (the
    // embervm program).
    bool console = false;
    // SIGINT / SIGTERM / SIGHUP end the VM (exit reason Signal). Off by default: the embedding
    // program owns its signals.
    bool handle_signals = false;
    // seccomp (vmm/sys/seccomp.h): the VM's own threads (its vCPUs and its event loop) run under
    // embervm's allowlists; the embedding program's threads, including the ones that call
    // this API, are never filtered. A call outside a list ends the whole process with SIGSYS
    // after a log line, and the first VM started with this on installs a process-wide SIGSYS
    // handler. Turn it off to debug, or if the process needs SIGSYS for itself.
    bool seccomp = true;
};

enum class VmState { Created, Running, Paused, Ended };

// Snapshots (Vm::snapshot, Vm::restore): a snapshot file (the VM's configuration and the state of
// its vCPUs, irqchip, clocks and devices) and a memory file.
enum class SnapshotKind { Full, Diff };
struct SnapshotFiles {
    std::string snapshot_path;
    std::string mem_file_path;
};
// Where the restored guest's memory comes from. File: SnapshotFiles::mem_file_path is mapped
// MAP_PRIVATE. Uffd: SnapshotFiles::mem_file_path is the Unix socket of a page-fault handler
// process that serves the memory file over userfaultfd (the protocol: README, "Snapshots";
// examples/uffd_handler.cpp); if it goes away, the VM ends (VmmError, status 1).
enum class MemBackend { File, Uffd };
struct RestoreOptions {
    bool resume_vm = false;          // run at once; else Paused until resume()
    bool track_dirty_pages = false;  // the restored VM logs written pages (for Diff snapshots)
    MemBackend mem_backend = MemBackend::File;
};
const char* to_string(VmState state);

class Vm {
public:
    // Parses a Firecracker-style configuration document (the --config-file schema).
    static std::unique_ptr<Vm> from_json(std::string_view config_json, VmOptions options = {});
    explicit Vm(vmm::VmConfig config, VmOptions options = {});
    // A VM restored from a snapshot (not started: start() restores it and runs it, or with
    // without resume_vm leaves it Paused until resume()). The snapshot file, its configuration,
    // the drives' files and the memory file's size are checked here, before KVM is touched:
    // Error (or snapshot::SnapshotError, vmm::ConfigError) with one line naming the file or field.
    static std::unique_ptr<Vm> restore(const SnapshotFiles& files, RestoreOptions restore, VmOptions options = {});
    // Ends a VM that still runs (as request_shutdown()) and waits for it.
    ~Vm();
    Vm(const Vm&) = delete;
    Vm& operator=(const Vm&) = delete;

    // Builds the VM and starts it. Throws if it cannot be built (then state() is Ended).
    // Once only.
    void start();
    // false if the VM is not running (not started, already ended).
    bool pause();
    bool resume();
    // Writes a snapshot of the paused VM (Full: all memory; Diff: the pages written since the
    // last snapshot, with machine_config.track_dirty_pages). Returns when both files are
    // complete; the VM stays paused. Throws Error naming the state, the device or the file.
    void snapshot(SnapshotKind kind, const SnapshotFiles& files);
    // Ends the VM now (exit reason Requested, status 0). Returns at once; wait() for the end.
    void request_shutdown();
    // Ends the VM because the process got signal `signo` (exit reason Signal, status 128 +
    // signo): for a program that takes the signals itself and ends its VMs on them.
    void end_on_signal(int signo);
    // Blocks until the VM ended; its exit (also after it was returned once): reason and the
    // status the embervm program exits with (vmm/kvm/vm_exit.h), e.g. GuestShutdown/GuestReset
    // with 0, TripleFault (a crashed guest) with vmm::kTripleFaultStatus (3).
    vmm::VmExit wait();
    VmState state() const;

    // The balloon's target in MiB; false without a balloon device or above the guest's memory.
    bool set_balloon_target_mib(uint64_t mib);
    // Puts drive `drive_id` on another image while the guest runs, or on the same image after
    // it was resized (the drive swap, described at Vmm::update_drive in vmm/vmm.h). Any thread;
    // returns once done. Throws vmm::ConfigError naming "drives.<id>" or
    // "drives.<id>.path_on_host", Error if the VM is not running.
    void update_drive(const std::string& drive_id, const std::string& path_on_host);
    // New rate limiters for a drive or a network interface while the guest runs (nullopt:
    // that direction unchanged; semantics in virtio/rate_limiter.h). Any thread; returns once
    // applied. Throws vmm::ConfigError naming the field, Error if the VM is not running.
    void update_drive_rate_limiter(const std::string& drive_id, const vmm::RateLimiterConfig& limiter);
    void update_network_rate_limiters(const std::string& iface_id, const std::optional<vmm::RateLimiterConfig>& rx,
                                      const std::optional<vmm::RateLimiterConfig>& tx);
    // The guest's last balloon statistics as a JSON object (Firecracker's GET /balloon/statistics
    // field names, bytes), or nullopt without a balloon or statistics.
    std::optional<std::string> balloon_statistics_json() const;

    // Presses Ctrl+Alt+Del on the guest's i8042 keyboard (Firecracker's SendCtrlAltDel): a
    // Linux guest with the i8042 and atkbd drivers reboots, which ends the VM (GuestReset).
    // false if the VM is not running. Any thread.
    bool send_ctrl_alt_del();
    // A new statistics polling interval (seconds, not 0); false without balloon statistics.
    bool set_balloon_stats_interval(uint32_t seconds);

    // Metrics: the current document (one line of JSON: vCPU exits, event-loop latency, device
    // counters; before start() only the timestamp). Any thread.
    std::string metrics_json() const;
    // Appends one metrics line to the config's metrics.metrics_path now (FlushMetrics). false
    // without a metrics section, when the VM is not running, or when the output did not take
    // the line (a full pipe).
    bool flush_metrics();

    // The configuration as it stands now: the one given, with the run-time changes (a drive's
    // new image, the balloon's target and statistics interval). Any thread.
    vmm::VmConfig config() const;

private:
    struct Impl;
    struct RestoreTag {};
    Vm(RestoreTag, const SnapshotFiles& files, RestoreOptions restore, VmOptions options);
    std::unique_ptr<Impl> impl_;
};

}  // namespace embervm
