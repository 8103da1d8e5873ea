// The VM configuration model: plain structs filled in by the JSON config file, the command
// line and the HTTP API. Beside it: validate.h (the checks every front door shares),
// from_json.h / to_json.h (the JSON schema both ways), json_reader.h (the strict JSON reader),
// apply_logger.h (the logger section applied to the process logger).
//
// Field names and section keys follow Firecracker ("boot-source", "machine-config", ...), so a
// Firecracker --config-file works unchanged for the sections embervm implements. Errors are
// one line, name the field by a JSON-pointer-ish path ("machine-config.vcpu_count") and say
// what was expected.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// Not used by the model: kept for the files that still get nlohmann::json through this header
// (vmm/device_manager.h, vmm/metrics.cpp, vmm/vmm.cpp, vmm/api/api.h).
#include <nlohmann/json.hpp>

#include "virtio/block/io_engine.h"
#include "virtio/rate_limiter.h"
#include "vmm/sys/error.h"

namespace embervm::vmm {

// A bad configuration (from a file, the command line or an API request).
class ConfigError : public Error {
public:
    using Error::Error;
};

inline constexpr uint32_t kMinVcpus = 1;
inline constexpr uint32_t kMaxVcpus = 32;
inline constexpr uint64_t kMinMemSizeMib = 16;
inline constexpr uint64_t kMaxMemSizeMib = uint64_t{1} << 20;  // 1 TiB
inline constexpr size_t kMaxBootArgsBytes = 4096;

// "boot-source": the guest kernel and what it boots with.
struct BootSourceConfig {
    std::string kernel_image_path;
    std::optional<std::string> initrd_path;
    std::optional<std::string> boot_args;

    bool operator==(const BootSourceConfig&) const = default;
};

// "machine-config": vCPUs, memory and the firmware tables.
struct MachineConfig {
    uint32_t vcpu_count = 1;
    uint64_t mem_size_mib = 128;
    bool smt = false;                // refused: embervm does not emulate SMT topology
    bool track_dirty_pages = false;  // accepted and stored
    // An embervm extension: ACPI tables (RSDP, FADT, MADT, DSDT with the virtio-mmio devices)
    // and the ACPI sleep/reset ports. Off: only the MP table; the guest is told no RSDP.
    bool acpi = true;

    bool operator==(const MachineConfig&) const = default;
};

// "drives": virtio-blk devices backed by raw image files (Firecracker's schema).
enum class CacheType { Unsafe, Writeback };  // Writeback: FLUSH is offered and made durable
using virtio::block::IoEngine;               // Sync or Async (io_uring); names in io_engine.h

// Firecracker's "rate_limiter" objects: {"bandwidth": TokenBucket, "ops": TokenBucket}, each
// bucket {"size", "one_time_burst", "refill_time" (ms)}; semantics in virtio/rate_limiter.h.
using virtio::RateLimiterConfig;
using virtio::TokenBucketConfig;

inline constexpr size_t kMaxDrives = 16;
inline constexpr size_t kMaxDriveIdBytes = 64;

// A Unix socket path (sun_path without its NUL).
inline constexpr size_t kMaxSocketPathBytes = 107;

struct DriveConfig {
    std::string drive_id;
    std::string path_on_host;
    bool is_root_device = false;
    bool is_read_only = false;
    std::optional<std::string> partuuid;  // root device: root=PARTUUID=... instead of /dev/vda
    CacheType cache_type = CacheType::Unsafe;
    IoEngine io_engine = IoEngine::Sync;
    std::optional<RateLimiterConfig> rate_limiter;
    // vhost-user-blk (Firecracker's key): the Unix socket of a backend that serves the drive
    // (qemu-storage-daemon, ...). Then path_on_host stays empty, is_read_only comes from the
    // backend (VIRTIO_BLK_F_RO) and io_engine and rate_limiter do not apply.
    std::optional<std::string> socket;

    bool operator==(const DriveConfig&) const = default;
};

const char* to_string(CacheType type);

// "network-interfaces": virtio-net devices backed by existing host TAP devices (Firecracker's
// schema; `mtu` is an embervm extension: offered to the guest as VIRTIO_NET_F_MTU).
inline constexpr size_t kMaxNetworkInterfaces = 8;
inline constexpr size_t kMaxHostDevNameBytes = 15;  // IFNAMSIZ - 1
inline constexpr uint32_t kMinMtu = 68;
inline constexpr uint32_t kMaxMtu = 65535;

using MacAddress = std::array<uint8_t, 6>;

struct NetworkInterfaceConfig {
    std::string iface_id;
    std::string host_dev_name;
    std::optional<MacAddress> guest_mac;  // generated (locally administered) when absent
    std::optional<uint32_t> mtu;
    std::optional<RateLimiterConfig> rx_rate_limiter;  // frames from the TAP to the guest
    std::optional<RateLimiterConfig> tx_rate_limiter;  // frames from the guest to the TAP
    // An embervm extension: the queues are served by the host kernel's /dev/vhost-net
    // (virtio/net/vhost_net_device.h); no rate limiters then (frames never pass the VMM).
    bool vhost = false;

    bool operator==(const NetworkInterfaceConfig&) const = default;
};

// "aa:bb:cc:dd:ee:ff" (hex digits in either case). Throws ConfigError naming `field`.
MacAddress parse_mac(std::string_view field, std::string_view text);
std::string format_mac(const MacAddress& mac);

// "balloon": a virtio-balloon device (Firecracker's schema).
inline constexpr uint32_t kMaxStatsPollingIntervalS = 3600;

struct BalloonConfig {
    uint64_t amount_mib = 0;           // target size of the balloon
    bool deflate_on_oom = false;       // VIRTIO_BALLOON_F_DEFLATE_ON_OOM
    uint32_t stats_polling_interval_s = 0;  // 0: no statistics queue
    bool free_page_reporting = false;  // VIRTIO_BALLOON_F_PAGE_REPORTING

    bool operator==(const BalloonConfig&) const = default;
};

// "vsock": a virtio-vsock device whose host side is Unix sockets (Firecracker's schema): guest
// connections to port P reach "<uds_path>_P", host processes connect to uds_path and send
// "CONNECT P\n" (virtio/vsock/vsock_device.h). Firecracker's deprecated "vsock_id" is accepted
// and ignored.
inline constexpr uint64_t kMinVsockGuestCid = 3;        // 0-2 are reserved (hypervisor, local, host)
inline constexpr uint64_t kMaxVsockGuestCid = 0xffffffff;  // Linux's CIDs are 32-bit
inline constexpr size_t kMaxVsockUdsPathLength = 96;     // "<uds_path>_4294967295" fits sun_path

struct VsockConfig {
    uint64_t guest_cid = 0;
    std::string uds_path;

    bool operator==(const VsockConfig&) const = default;
};

// "fs" (an embervm extension; Cloud Hypervisor's --fs tag=,socket= is the model): virtio-fs
// devices served by a vhost-user backend (virtiofsd) listening at `socket`; the guest mounts
// one with `mount -t virtiofs TAG DIR`. num_request_queues request queues besides the
// high-priority queue, each of queue_size entries.
inline constexpr size_t kMaxFsTagBytes = 36;            // virtio_fs_config.tag
inline constexpr uint32_t kMaxFsRequestQueues = 16;
inline constexpr uint32_t kDefaultFsQueueSize = 1024;
inline constexpr uint32_t kMaxFsQueueSize = 32768;      // virtio's largest split queue
inline constexpr size_t kMaxFsDevices = 8;

struct FsConfig {
    std::string tag;
    std::string socket;
    uint32_t num_request_queues = 1;
    uint32_t queue_size = kDefaultFsQueueSize;

    bool operator==(const FsConfig&) const = default;
};

// "logger": where the VMM's log lines go and what they show (Firecracker's schema). The logger
// is process-wide: applying a LoggerConfig (apply_logger_config) changes it for every VM in the
// process. Absent fields leave the logger as it is (embervm's defaults: stderr, Info, the
// level shown, the origin not). Firecracker's `module` filter is refused by name: embervm's
// log lines carry no module to filter on.
enum class LogLevel { Off, Error, Warning, Info, Debug, Trace };
const char* to_string(LogLevel level);  // "Off", "Error", "Warning", ...

struct LoggerConfig {
    std::optional<std::string> log_path;  // a file (appended to, created 0600) or a named pipe
    std::optional<LogLevel> level;
    std::optional<bool> show_level;       // the level in each line
    std::optional<bool> show_log_origin;  // the source file and line in each line

    bool operator==(const LoggerConfig&) const = default;
};

// "metrics": one JSON object per line appended to metrics_path (a file or a named pipe) every
// interval_s seconds, on request (flush) and when the VM ends. interval_s is an embervm
// extension (Firecracker writes every 60 s); 0 writes only on request and at the end.
inline constexpr uint32_t kDefaultMetricsIntervalS = 60;
inline constexpr uint32_t kMaxMetricsIntervalS = 86400;

struct MetricsConfig {
    std::string metrics_path;
    uint32_t interval_s = kDefaultMetricsIntervalS;

    bool operator==(const MetricsConfig&) const = default;
};

// "console": which device is the guest's console (an embervm extension). The UART (COM1,
// ttyS0) is always there. Serial (the default): the host's console input goes to the UART.
// Virtio: a virtio-console device (hvc0) is added and takes the input; the default command line
// says console=hvc0. Either way the guest's output (the UART's and hvc0's) goes to the
// console output: stdout, or the file of --serial-out (library: VmOptions::serial_out).
enum class ConsoleType { Serial, Virtio };
const char* to_string(ConsoleType type);  // "serial", "virtio"

struct ConsoleConfig {
    ConsoleType type = ConsoleType::Serial;

    bool operator==(const ConsoleConfig&) const = default;
};

// Everything needed to build and boot one VM. Later sections (drives, network interfaces,
// balloon, logger, metrics) are added here as members.
struct VmConfig {
    std::optional<BootSourceConfig> boot_source;
    MachineConfig machine_config;
    std::vector<DriveConfig> drives;  // in the order given; the root device is attached first
    std::vector<NetworkInterfaceConfig> network_interfaces;
    std::optional<BalloonConfig> balloon;
    std::optional<VsockConfig> vsock;
    std::vector<FsConfig> fs;  // in the order given
    std::optional<LoggerConfig> logger;
    std::optional<MetricsConfig> metrics;
    std::optional<ConsoleConfig> console;
    // "enable_pci" (Firecracker's --enable-pci): every virtio device over virtio-pci instead of
    // virtio-mmio.
    bool enable_pci = false;

    bool operator==(const VmConfig&) const = default;
};

// The drive `drive_id` of `config`: the one "no such drive" lookup (the Vmm's run-time
// configuration, the API). Throws ConfigError "drives.<id>: no such drive".
inline const DriveConfig& find_drive(const VmConfig& config, std::string_view drive_id) {
    for (const DriveConfig& d : config.drives) {
        if (d.drive_id == drive_id) return d;
    }
    throw ConfigError(std::string("drives.").append(drive_id).append(": no such drive"));
}
inline DriveConfig& find_drive(VmConfig& config, std::string_view drive_id) {
    return const_cast<DriveConfig&>(find_drive(std::as_const(config), drive_id));
}

}  // namespace embervm::vmm
