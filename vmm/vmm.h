// The virtual machine monitor: builds a VM from a VmConfig, boots it and serves it from one
// Boost.Asio event loop (epoll) on the calling thread, with one thread per vCPU.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "vmm/config.h"
#include "vmm/vm_exit.h"

namespace embervm::memory {
class GuestMemory;
}
namespace embervm::devices {
class Serial;
class BootTimer;
}
namespace embervm::virtio::balloon {
class BalloonDevice;
struct BalloonStats;
}

namespace embervm::vmm {

class KvmSystem;
class KvmVm;
class Vcpu;
class Bus;
class EventFdIrq;
class VirtioMmioDevices;

struct RunOptions {
    std::optional<std::string> serial_out;  // guest console to this file instead of stdout
    bool prefer_pvh = true;                 // ELF kernels with a PVH note: use the PVH entry
    bool attach_stdin = true;               // host stdin feeds the guest's serial port
    bool handle_signals = true;             // SIGINT/SIGTERM/SIGHUP end the VM (the embedding
                                            // program may want them for itself)
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

private:
    void build();
    void create_memory();
    void create_devices();
    void load_guest();
    void create_vcpus();
    void start_stdin();
    void read_stdin();
    void handle_console_input(const uint8_t* data, size_t len);
    void shutdown_vcpus();
    void poll_balloon_stats();

    VmConfig config_;
    RunOptions options_;
    std::string cmdline_;

    boost::asio::io_context io_;
    std::unique_ptr<KvmSystem> kvm_;
    std::unique_ptr<KvmVm> vm_;
    std::unique_ptr<memory::GuestMemory> memory_;
    std::unique_ptr<Bus> pio_bus_;
    std::unique_ptr<Bus> mmio_bus_;
    std::shared_ptr<devices::Serial> serial_;
    std::shared_ptr<devices::BootTimer> boot_timer_;
    std::vector<std::shared_ptr<EventFdIrq>> irqs_;
    std::unique_ptr<VirtioMmioDevices> virtio_;  // before vcpus_: destroyed after them
    std::shared_ptr<virtio::balloon::BalloonDevice> balloon_;
    std::unique_ptr<boost::asio::steady_timer> balloon_stats_timer_;
    bool balloon_stats_logged_ = false;
    std::atomic<bool> started_{false};
    std::atomic<bool> ended_{false};
    std::atomic<bool> paused_{false};
    std::mutex pause_mutex_;
    std::vector<std::unique_ptr<Vcpu>> vcpus_;

    struct StdinState;
    std::unique_ptr<StdinState> stdin_;
    int serial_out_fd_ = -1;
    bool escape_pending_ = false;

    std::mutex exit_mutex_;
    std::optional<VmExit> exit_;
};

}  // namespace embervm::vmm
