// The virtual machine monitor: builds a VM from a VmConfig, boots it and serves it from one
// Boost.Asio event loop (epoll) on the calling thread, with one thread per vCPU; the owner of
// the VM's run-time configuration (RuntimeConfig) and of the requests that change it.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "vmm/config/config.h"
#include "vmm/snapshot/memory_file.h"
#include "vmm/snapshot/snapshot_file.h"
#include "vmm/kvm/vm_exit.h"
#include "vmm/runtime_config.h"
#include "vmm/sys/loop_call.h"

namespace embervm::memory {
class GuestMemory;
}
namespace embervm::snapshot {
class UffdBackend;
}
namespace embervm::virtio::balloon {
class BalloonDevice;
struct BalloonStats;
}
namespace embervm::virtio::vsock {
class VsockDevice;
}
namespace embervm::virtio::console {
class ConsoleDevice;
}

namespace embervm::vmm {

class KvmSystem;
class KvmVm;
class Vcpu;
class Bus;
class ConsoleOutput;
class LegacyDevices;
class StdinConsole;
class DeviceManager;
class EventLoopProbe;
class MetricsWriter;

// The balloon's size: the target the VMM set and what the driver reports it holds.
struct BalloonSize {
    uint64_t target_mib = 0;
    uint32_t actual_pages = 0;  // 4 KiB pages
};

struct RestoreSource;  // below: a snapshot to restore

struct RunOptions {
    std::optional<std::string> serial_out;  // guest console to this file instead of stdout
    bool prefer_pvh = true;                 // ELF kernels with a PVH note: use the PVH entry
    bool attach_stdin = true;               // host stdin feeds the guest's console device
                                            // (the UART, or virtio-console: config.console)
    bool handle_signals = true;             // SIGINT/SIGTERM/SIGHUP end the VM (the embedding
                                            // program may want them for itself)
    bool seccomp = true;                    // the vCPU and event-loop threads run under their
                                            // seccomp allowlists (vmm/sys/seccomp.h)
    // Restore this snapshot instead of loading a kernel (its config must be the Vmm's config).
    std::shared_ptr<const RestoreSource> restore;
};

// Where a restored VM's memory comes from (the API's mem_backend.backend_type): File maps the
// memory file MAP_PRIVATE (vmm/snapshot/memory_file.h); Uffd leaves guest memory empty and hands
// its page faults to a handler process listening on a Unix socket (vmm/snapshot/uffd_backend.h).
enum class MemBackendType { File, Uffd };

// A snapshot to restore instead of booting (RunOptions::restore): the decoded snapshot file and
// its memory backend (vmm/vmm_snapshot.cpp). read_restore_source() makes one.
struct RestoreSource {
    std::string snapshot_path;
    snapshot::SnapshotContents contents;
    VmConfig config;  // the snapshot's
    MemBackendType mem_backend = MemBackendType::File;
    std::string mem_file_path;  // File: the memory file; Uffd: the page-fault handler's socket
    bool resume_vm = false;  // run at once; else the VM starts paused (resume() lets it run)
};
// Reads and checks the snapshot file and its configuration, and that the memory file is there
// with the snapshot's memory size (Uffd: that the handler's socket is there): everything that can
// be checked before KVM is touched. Throws snapshot::SnapshotError / Error / ConfigError with one
// line naming the file or field.
RestoreSource read_restore_source(const std::string& snapshot_path, const std::string& mem_file_path, bool resume_vm,
                                  MemBackendType mem_backend = MemBackendType::File);

struct SnapshotRequest {
    snapshot::SnapshotType type = snapshot::SnapshotType::Full;
    std::string snapshot_path;
    std::string mem_file_path;
};
struct SnapshotSummary {
    uint64_t state_bytes = 0;  // the snapshot file
    snapshot::MemoryFileStats memory;
    std::chrono::microseconds duration{0};
};

class Vmm {
public:
    Vmm(VmConfig config, RunOptions options);
    Vmm(const Vmm&) = delete;
    Vmm& operator=(const Vmm&) = delete;
    ~Vmm();

    // Builds and boots the VM, then serves the event loop until the VM ends.
    VmExit run();
    // Ends the VM (first request wins). Safe from any thread.
    void request_exit(VmExit exit);
    // The kernel command line the guest was given (after build).
    const std::string& kernel_cmdline() const { return cmdline_; }
    // The configuration as it stands now, with the run-time changes (drive images, balloon
    // target and statistics interval). Any thread.
    VmConfig config() const { return config_.snapshot(); }

    // Stops every vCPU (out of KVM_RUN, waiting without using CPU) / lets them run again.
    // Device state is untouched. false if the VM is not running (not started yet or ended).
    // Any thread.
    bool pause();
    bool resume();
    bool paused() const { return paused_.load(); }
    // True once the vCPUs were started (run() is serving the VM).
    bool started() const { return started_.load(); }

    // Balloon (run time; any thread). false / nullopt when the VM has no balloon device.
    bool set_balloon_target_mib(uint64_t mib);
    std::optional<virtio::balloon::BalloonStats> balloon_stats() const;

    // Presses Ctrl+Alt+Del on the guest's i8042 keyboard (any thread): a Linux guest with the
    // i8042 and atkbd drivers reboots. false if the VM is not running. A keyboard the guest
    // told to stop scanning (or one still holding earlier unread key strokes) drops the keys:
    // that is logged, and still true (the request reached the VM).
    bool send_ctrl_alt_del();
    std::optional<BalloonSize> balloon_size() const;
    // A new statistics polling interval; false without statistics (interval 0 at boot), for 0,
    // or when the VM is not running.
    bool set_balloon_stats_interval(uint32_t seconds);

    // Run-time drive update, the drive swap (Firecracker's PATCH /drives/{id} with path_on_host;
    // Vm::update_drive in the library). This is where the swap is described; the API, the
    // library, the device manager and the README refer here.
    // - The drive's virtio-blk device continues on the image at `path_on_host`: requests in
    //   flight finish on the old image, queued ones go to the new one (BlockDevice::
    //   replace_backend). The same image again works too (a file that was resized).
    // - The new image is locked like at boot (flock: exclusive for a writable drive, shared for
    //   a read-only one) and opened as the drive is; the old one is closed and unlocked.
    // - The guest is told the new capacity with a configuration-change interrupt (Linux logs
    //   "[vda] new size: ..."); a driver that is not there yet reads it when it comes.
    // - The new path is recorded in the run-time configuration (config()), which the library's
    //   Vm::config() and the API's GET /vm/config show.
    // The swap runs on the event-loop thread (the one serving the device's completions); the
    // caller waits for it there (any thread; from a loop handler it runs at once).
    // Throws ConfigError naming "drives.<id>" (no such drive) or "drives.<id>.path_on_host"
    // (missing, unreadable, read-only for a writable drive, locked, ...), Error when the VM is
    // not running or ends before the swap ran; the drive keeps its old image then.
    void update_drive(const std::string& drive_id, const std::string& path_on_host);
    // Run-time rate limiters (Firecracker's PATCH /drives/{id} and /network-interfaces/{id}
    // with rate_limiter / rx_rate_limiter / tx_rate_limiter): the limiter is replaced on the
    // event loop and applies at once (virtio/rate_limiter.h: tokens kept, a held-back queue
    // tried again); nullopt leaves a direction as it is. Throws ConfigError naming the field
    // (bad bucket, no such drive or interface), Error when the VM is not running.
    void update_drive_rate_limiter(const std::string& drive_id, const RateLimiterConfig& limiter);
    void update_network_rate_limiters(const std::string& iface_id, const std::optional<RateLimiterConfig>& rx,
                                      const std::optional<RateLimiterConfig>& tx);

    // Snapshots (vmm/vmm_snapshot.cpp). Writes the VM's state to request.snapshot_path and its
    // memory to request.mem_file_path (Full: every non-zero page; Diff: the pages written since
    // the previous snapshot, which needs machine_config.track_dirty_pages), each through a
    // temporary file renamed when complete. The VM must be paused and stays paused. Throws Error
    // naming the state ("the VM is running: pause it first"), the device or the file. Any thread.
    SnapshotSummary create_snapshot(const SnapshotRequest& request);

    // Metrics (vmm/metrics.h): the current metrics document as one line of JSON. Any thread;
    // before the VM runs it holds only the timestamp. Does not start a new event-loop window.
    std::string metrics_json();
    // Appends one metrics line to the metrics output now (any thread). false if no metrics
    // output is configured, the VM is not running, or the output did not take the line.
    bool flush_metrics();

private:
    // Building the VM (vmm/vm_build.cpp), from the configuration at the start.
    void build();
    void create_memory(const VmConfig& config);
    void create_devices(const VmConfig& config);
    void create_vcpus(const VmConfig& config);
    void load_guest(const VmConfig& config);
    // Restoring (vmm/vmm_snapshot.cpp): the CPU identity, the KVM VM and vCPU state and the
    // devices' state from options_.restore, after the VM was built from its config.
    void restore_state(const RestoreSource& source);

    void shutdown_vcpus();
    // The metrics document; `new_window` starts a new event-loop latency window (a line
    // written to the metrics output).
    std::string metrics_document(bool new_window);

    RuntimeConfig config_;
    RunOptions options_;
    std::string cmdline_;

    boost::asio::io_context io_;
    LoopCaller loop_calls_;  // other threads' requests that run on the loop (the drive swap)
    std::unique_ptr<KvmSystem> kvm_;
    std::unique_ptr<KvmVm> vm_;
    std::unique_ptr<memory::GuestMemory> memory_;
    // A restore with mem_backend Uffd: the page-fault handler's connection (after memory_: it
    // goes first, the vCPUs are joined before either).
    std::unique_ptr<snapshot::UffdBackend> uffd_;
    std::unique_ptr<ConsoleOutput> console_out_;
    std::unique_ptr<Bus> pio_bus_;
    std::unique_ptr<Bus> mmio_bus_;
    std::unique_ptr<LegacyDevices> legacy_;
    std::unique_ptr<DeviceManager> virtio_;  // before vcpus_: destroyed after them
    std::shared_ptr<virtio::balloon::BalloonDevice> balloon_;
    std::shared_ptr<virtio::vsock::VsockDevice> vsock_;
    // The virtio-console device (console.type virtio): the console's input goes there.
    std::shared_ptr<virtio::console::ConsoleDevice> console_;
    // Metrics: both set before started_ and kept until the Vmm goes (they hold timers on io_).
    std::unique_ptr<EventLoopProbe> loop_probe_;
    std::unique_ptr<MetricsWriter> metrics_;
    std::atomic<uint64_t> loop_handlers_{0};  // handlers the event loop ran
    std::atomic<bool> started_{false};
    std::atomic<bool> ended_{false};
    std::atomic<bool> paused_{false};
    std::mutex pause_mutex_;
    std::vector<std::unique_ptr<Vcpu>> vcpus_;

    std::unique_ptr<StdinConsole> stdin_;

    std::mutex exit_mutex_;
    std::optional<VmExit> exit_;
};

}  // namespace embervm::vmm
