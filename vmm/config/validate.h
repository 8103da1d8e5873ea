// Validation of the configuration model, shared by every front door (config file, command
// line, HTTP API): structural checks, then the filesystem checks once all overrides are applied.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "vmm/config/config.h"

namespace embervm::vmm {

// Structural checks (ranges, lengths, empty strings, NUL bytes, refused features); no
// filesystem access. `where` prefixes the field paths in error messages.
void validate(const BootSourceConfig& boot_source, std::string_view where = "boot-source");
void validate(const MachineConfig& machine_config, std::string_view where = "machine-config");
// Buckets: refill_time 0 with a non-zero size is refused (size 0 is the way to say "no limit").
void validate(const RateLimiterConfig& limiter, std::string_view where);
void validate(const DriveConfig& drive, std::string_view where);
// Also checks across drives: unique drive_id, at most one root device, at most kMaxDrives.
void validate_drives(const std::vector<DriveConfig>& drives, std::string_view where = "drives");
void validate(const NetworkInterfaceConfig& iface, std::string_view where);
// Also checks across interfaces: unique iface_id, host_dev_name and guest_mac, at most
// kMaxNetworkInterfaces.
void validate_network_interfaces(const std::vector<NetworkInterfaceConfig>& ifaces,
                                 std::string_view where = "network-interfaces");
void validate(const BalloonConfig& balloon, std::string_view where = "balloon");
void validate(const VsockConfig& vsock, std::string_view where = "vsock");
void validate(const FsConfig& fs, std::string_view where);
// Every entry valid, tags unique, at most kMaxFsDevices.
void validate_fs(const std::vector<FsConfig>& fs, std::string_view where = "fs");
void validate(const LoggerConfig& logger, std::string_view where = "logger");
void validate(const MetricsConfig& metrics, std::string_view where = "metrics");
void validate(const VmConfig& config);

// Filesystem checks: every path names a file that exists and can be opened for reading.
// Error: "boot-source.kernel_image_path: /x/vmlinux: No such file or directory".
void validate_files(const BootSourceConfig& boot_source, std::string_view where = "boot-source");
// A drive's image must be a regular file or block device, readable, and writable unless
// is_read_only.
void validate_files(const DriveConfig& drive, std::string_view where);
void validate_files(const VmConfig& config);

// Opens `path` read-only and closes it again; throws "<field>: <path>: <strerror>" on failure
// (a directory fails with "Is a directory").
void check_readable_file(std::string_view field, const std::string& path);

}  // namespace embervm::vmm
