// The virtio device manager: attaches virtio devices to the VM over virtio-mmio (the default)
// or virtio-pci (enable_pci()). Over MMIO it gives each a 4 KiB MMIO window and a GSI, binds
// one KVM_IOEVENTFD per queue (QueueNotify with datamatch = queue index; the eventfds go to the
// transport, which hands them to the device at activation) and one KVM_IRQFD per device, and
// produces the `virtio_mmio.device=4K@0xADDR:GSI` kernel command line entries. Over PCI each
// device is a function on the PCI root bus (devices/pci/pci_bus.h) with one MSI-X vector per
// queue plus config, each an irqfd on its own GSI whose MSI route follows the driver's MSI-X
// table, and one ioeventfd per queue at its notify address, moved when the driver moves the BAR. It knows devices only through virtio::VirtioDevice: each device
// subscribes its own events on the event loop (virtio/device_base.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "vmm/config/config.h"
#include "vmm/sys/event_loop.h"
#include "vmm/sys/periodic_timer.h"

namespace embervm::memory {
class GuestMemory;
}
namespace embervm::devices::pci {
class PciRoot;
}
namespace embervm::virtio {
class TransportCore;
class VirtioDevice;
namespace balloon {
class BalloonDevice;
}
namespace console {
class ConsoleDevice;
class ConsoleSink;
}
namespace net {
class Tap;
struct NetDeviceOptions;
}
namespace vsock {
class VsockDevice;
}
}

namespace embervm::vmm {

class Bus;
class VmEventRouting;

// One virtio device's saved state (transport and device, virtio/saved_state.h) in a snapshot.
struct DeviceState {
    std::string id;  // the device's name: "virtio-blk rootfs", "virtio-net eth0", "virtio-balloon"
    std::vector<uint8_t> bytes;
};

inline constexpr uint32_t kFirstVirtioGsi = 5;
inline constexpr uint32_t kLastVirtioGsi = 23;  // IOAPIC pins 5..23

class DeviceManager {
public:
    // `vm` binds the irqfds and ioeventfds (KvmVm in the VMM, a recorder in tests).
    DeviceManager(VmEventRouting& vm, Bus& mmio_bus, boost::asio::io_context& io, const memory::GuestMemory& mem);
    ~DeviceManager();

    // Every later attach() puts the device on a PCI root bus (created here: configuration ports
    // 0xCF8-0xCFF on `pio_bus`, the BAR window boot::layout::kPciMmioStart and the ECAM window
    // boot::layout::kPciEcamStart on the MMIO bus)
    // instead of virtio-mmio. Before the first attach().
    void enable_pci(Bus& pio_bus);
    bool pci_enabled() const { return pci_ != nullptr; }
    // Attaches `device`; returns the transport. Throws Error when windows, slots or GSIs run out.
    virtio::TransportCore& attach(std::shared_ptr<virtio::VirtioDevice> device);
    // A virtio-blk device per drive (the root device first, so it is /dev/vda), and the
    // root= argument for the command line if one is the root device.
    void attach_drives(const std::vector<DriveConfig>& drives);
    // The device side of the drive swap (Vmm::update_drive, vmm/vmm.h), on the event-loop
    // thread: puts the virtio-blk device of `drive` (as it is configured now) on the image at
    // `path_on_host` and the device watches the new backend's completions. Throws ConfigError naming
    // "drives.<id>.path_on_host"; the drive keeps its old image then.
    void update_drive(const DriveConfig& drive, const std::string& path_on_host);
    // Run-time rate-limiter updates of a drive's or an interface's device (nullopt: that
    // direction unchanged). Event-loop thread (the limiters' timers are armed there).
    void update_drive_rate_limiter(const std::string& drive_id, const RateLimiterConfig& limiter);
    void update_network_rate_limiters(const std::string& iface_id, const std::optional<RateLimiterConfig>& rx,
                                      const std::optional<RateLimiterConfig>& tx);

    // A virtio-net device per interface, on its (existing) TAP device; with "vhost" its queues
    // are served by /dev/vhost-net. Throws ConfigError naming the interface if the TAP (or
    // /dev/vhost-net) cannot be used.
    void attach_network_interfaces(const std::vector<NetworkInterfaceConfig>& ifaces);
    // The virtio-balloon device; the caller keeps it for the run-time API (target, stats).
    std::shared_ptr<virtio::balloon::BalloonDevice> attach_balloon(const BalloonConfig& config);
    // The virtio-console device (hvc0), its output to `sink`; the caller connects the host's
    // input to it (devices::ConsoleInput).
    std::shared_ptr<virtio::console::ConsoleDevice> attach_console(std::unique_ptr<virtio::console::ConsoleSink> sink);
    // The virtio-vsock device, listening on config.uds_path from now on. Throws ConfigError
    // naming vsock.uds_path if the socket cannot be made there.
    std::shared_ptr<virtio::vsock::VsockDevice> attach_vsock(const VsockConfig& config);
    // The virtio-fs devices, each connected to its vhost-user backend (virtiofsd) now: a
    // ConfigError naming fs[i].socket when it cannot be reached or answers badly. Metrics
    // section "fs_<tag>".
    void attach_fs(const std::vector<FsConfig>& fs);

    // The stall watchdog (virtio/watchdog.h): every `interval` on the event loop, each device's
    // progress is checked; slow backend requests and used-buffer interrupts the driver does not
    // acknowledge are logged and counted in the metrics, and such an interrupt is raised again. `guest_running` says whether the
    // vCPUs run (a paused guest cannot take completions). Loop thread, or before the loop runs.
    void start_watchdog(std::function<bool()> guest_running,
                        std::chrono::milliseconds interval = std::chrono::milliseconds(100));
    void stop_watchdog();
    // One watchdog pass now (loop thread; also what the timer runs).
    void check_progress();

    // Snapshots (virtio/saved_state.h).
    // With every vCPU paused: completes every request the virtio devices handed to backends
    // (onto the used rings), stops their event processing (no queue, TAP, socket or timer
    // handler runs until resume_devices()) and returns each device's state (transport +
    // device), in attach order. Throws Error naming a device that cannot be saved (vhost-net,
    // vhost-user); the devices go on then. Save the irqchip after this: a
    // completion here may raise an interrupt.
    std::vector<DeviceState> pause_and_save_devices();
    void resume_devices();
    // On restore: the devices were created from the snapshot's config (attach order and names
    // as when saved); before any vCPU runs. Every device must have exactly one state. Activated
    // devices are activated again (queues checked against guest memory, event subscriptions
    // made). With PCI, `pci_root` is the root's saved state (PciRoot::save_state, required
    // then and refused without PCI): it is checked before any device is restored, applied
    // after them, and then the functions' BARs are decoded where their restored registers say
    // (the notify ioeventfds follow). Throws StateError/Error with a one-line message naming
    // the device or the field.
    void restore_devices(std::span<const DeviceState> states,
                         std::optional<std::span<const uint8_t>> pci_root = std::nullopt);
    // The PCI root's own state for a snapshot (nullopt without PCI).
    std::optional<std::vector<uint8_t>> save_pci_root() const;

    // One info line per device with its counters (at the end of a run).
    void log_counters() const;
    // Adds one metrics section per device to `out`: "block_<drive_id>", "net_<iface_id>",
    // "balloon", "console" (vmm/metrics.h), each with the watchdog's "in_flight", "oldest_in_flight_ms"
    // (null: none), "slow_request_warnings", "interrupts_reraised", "interrupts_masked", "driver_stalls" and
    // "driver_stalled". Any thread
    // once the devices are attached.
    void add_metrics(nlohmann::json& out) const;

    // What to append to the kernel command line (entries, root=, ...), space separated.
    std::string kernel_cmdline_args() const;

    // Each virtio-mmio device's MMIO window and GSI, in attach order (for the ACPI DSDT).
    struct Window { uint64_t base; uint64_t size; uint32_t gsi; };
    std::vector<Window> windows() const;

private:
    // A drive with `socket`: a vhost-user-blk device on the backend there (ConfigError naming the
    // drive when it cannot be reached or answers badly).
    void attach_vhost_user_drive(const DriveConfig& d);
    // root=/dev/vda (or PARTUUID) and rw/ro on the kernel command line for the root drive.
    void add_root_args(const DriveConfig& d, bool read_only);
    struct Slot;
    virtio::TransportCore& attach_mmio(std::shared_ptr<virtio::VirtioDevice> device);
    virtio::TransportCore& attach_pci(std::shared_ptr<virtio::VirtioDevice> device);
    // The driver moved (or stopped decoding) a PCI device's BAR: its queue ioeventfds follow.
    void move_notify(Slot& slot, std::optional<uint64_t> notify_base);
    void attach_vhost_net(const NetworkInterfaceConfig& n, std::unique_ptr<virtio::net::Tap> tap,
                          const virtio::net::NetDeviceOptions& opts);
    VmEventRouting& vm_;
    Bus& mmio_bus_;
    EventLoop loop_;
    const memory::GuestMemory& mem_;
    std::vector<std::unique_ptr<Slot>> slots_;
    std::unique_ptr<devices::pci::PciRoot> pci_;
    uint32_t next_msi_gsi_;
    std::vector<std::string> extra_args_;
    PeriodicTimer watchdog_timer_;
    std::function<bool()> guest_running_;
    mutable std::mutex watchdog_mutex_;  // the slots' watchdogs (checked on the loop, read by metrics)
};

}  // namespace embervm::vmm
