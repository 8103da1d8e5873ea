// Validation of the configuration model, shared by the config file, the flags and the API.
// Structural checks (ranges, lengths, refused features), and apart from them the file checks.
#include "vmm/config/validate.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <set>

#include <fmt/format.h>

#include "vmm/config/field_checks.h"
#include "vmm/sys/fd.h"

namespace embervm::vmm {

namespace {

// Paths and the command line end up as C strings; an embedded NUL would silently cut them.
void check_no_nul(std::string_view path, const std::string& value) {
    if (value.find('\0') != std::string::npos) throw field_error(path, "contains a NUL byte");
}

// Device ids (drive_id, iface_id) appear in logs, API paths and guest-visible serials.
void check_id(std::string_view path, const std::string& id) {
    if (id.empty()) throw field_error(path, "must not be empty");
    if (id.size() > kMaxDriveIdBytes) throw field_error(path, fmt::format("longer than {} bytes", kMaxDriveIdBytes));
    for (const char c : id) {
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) {
            throw field_error(path, fmt::format("'{}' may contain only letters, digits, '_' and '-'", id));
        }
    }
}

}  // namespace

void validate(const BootSourceConfig& bs, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    if (bs.kernel_image_path.empty()) throw field_error(path("kernel_image_path"), "must not be empty");
    check_no_nul(path("kernel_image_path"), bs.kernel_image_path);
    if (bs.initrd_path) {
        if (bs.initrd_path->empty()) throw field_error(path("initrd_path"), "must not be empty");
        check_no_nul(path("initrd_path"), *bs.initrd_path);
    }
    if (bs.boot_args) {
        if (bs.boot_args->size() > kMaxBootArgsBytes) {
            throw field_error(path("boot_args"), fmt::format("{} bytes is longer than the limit of {}",
                                                             bs.boot_args->size(), kMaxBootArgsBytes));
        }
        check_no_nul(path("boot_args"), *bs.boot_args);
    }
}

void validate(const MachineConfig& mc, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    check_range(path("vcpu_count"), mc.vcpu_count, kMinVcpus, kMaxVcpus);
    check_range(path("mem_size_mib"), mc.mem_size_mib, kMinMemSizeMib, kMaxMemSizeMib);
    if (mc.smt) throw field_error(path("smt"), "true is not supported (embervm does not emulate SMT topology)");
}

void validate(const RateLimiterConfig& r, std::string_view where) {
    const auto check = [&](const std::optional<TokenBucketConfig>& b, std::string_view name) {
        if (!b) return;
        const std::string at = fmt::format("{}.{}", where, name);
        check_range(at + ".size", b->size, 0, virtio::kMaxBucketTokens);
        check_range(at + ".one_time_burst", b->one_time_burst, 0, virtio::kMaxBucketTokens);
        check_range(at + ".refill_time", b->refill_time_ms, 0, virtio::kMaxRefillTimeMs);
        if (b->refill_time_ms == 0 && b->size != 0) {
            throw field_error(at + ".refill_time", "must not be 0 when size is not 0 (size 0 means no limit)");
        }
    };
    check(r.bandwidth, "bandwidth");
    check(r.ops, "ops");
}

void validate(const DriveConfig& d, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    // The id is also the virtio-blk serial (GET_ID) and appears in logs and API paths.
    check_id(path("drive_id"), d.drive_id);
    if (d.socket) {
        // vhost-user-blk: the backend owns the image, its access mode and its I/O.
        if (d.socket->empty()) throw field_error(path("socket"), "must not be empty");
        check_no_nul(path("socket"), *d.socket);
        if (d.socket->size() > kMaxSocketPathBytes) {
            throw field_error(path("socket"), fmt::format("longer than {} bytes (a Unix socket path)", kMaxSocketPathBytes));
        }
        if (!d.path_on_host.empty()) throw field_error(path("path_on_host"), "is not allowed with socket (vhost-user)");
        if (d.is_read_only) {
            throw field_error(path("is_read_only"), "is not allowed with socket: the backend says whether it is");
        }
        if (d.io_engine != IoEngine::Sync) throw field_error(path("io_engine"), "is not allowed with socket");
        if (d.rate_limiter) throw field_error(path("rate_limiter"), "is not allowed with socket");
        return;
    }
    if (d.path_on_host.empty()) throw field_error(path("path_on_host"), "must not be empty");
    check_no_nul(path("path_on_host"), d.path_on_host);
    if (d.rate_limiter) validate(*d.rate_limiter, path("rate_limiter"));
    if (d.partuuid) {
        if (!d.is_root_device) throw field_error(path("partuuid"), "is only meaningful with is_root_device: true");
        if (d.partuuid->empty()) throw field_error(path("partuuid"), "must not be empty");
        for (const char c : *d.partuuid) {
            if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == '-')) {
                throw field_error(path("partuuid"), fmt::format("'{}' is not a partition UUID", *d.partuuid));
            }
        }
    }
}

void validate_drives(const std::vector<DriveConfig>& drives, std::string_view where) {
    if (drives.size() > kMaxDrives) {
        throw field_error(where, fmt::format("{} drives is more than the limit of {}", drives.size(), kMaxDrives));
    }
    std::set<std::string> ids;
    const DriveConfig* root = nullptr;
    for (size_t i = 0; i < drives.size(); i++) {
        const std::string at = fmt::format("{}[{}]", where, i);
        validate(drives[i], at);
        if (!ids.insert(drives[i].drive_id).second) {
            throw field_error(at + ".drive_id", fmt::format("'{}' is used by another drive", drives[i].drive_id));
        }
        if (drives[i].is_root_device) {
            if (root) {
                throw field_error(at + ".is_root_device",
                                  fmt::format("drive '{}' is already the root device", root->drive_id));
            }
            root = &drives[i];
        }
    }
}

void validate(const NetworkInterfaceConfig& n, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    check_id(path("iface_id"), n.iface_id);
    if (n.host_dev_name.empty()) throw field_error(path("host_dev_name"), "must not be empty");
    if (n.host_dev_name.size() > kMaxHostDevNameBytes) {
        throw field_error(path("host_dev_name"), fmt::format("'{}' is longer than the {} bytes of a Linux interface name",
                                                             n.host_dev_name, kMaxHostDevNameBytes));
    }
    for (const char c : n.host_dev_name) {
        if (c == '/' || c == ':' || c == '\0' || std::isspace(static_cast<unsigned char>(c))) {
            throw field_error(path("host_dev_name"), fmt::format("'{}' is not a valid interface name", n.host_dev_name));
        }
    }
    if (n.host_dev_name == "." || n.host_dev_name == "..") {
        throw field_error(path("host_dev_name"), fmt::format("'{}' is not a valid interface name", n.host_dev_name));
    }
    if (n.guest_mac) {
        if ((*n.guest_mac)[0] & 1) {
            throw field_error(path("guest_mac"), fmt::format("{} is a multicast address", format_mac(*n.guest_mac)));
        }
        if (*n.guest_mac == MacAddress{}) throw field_error(path("guest_mac"), "00:00:00:00:00:00 is not usable");
    }
    if (n.mtu) check_range(path("mtu"), *n.mtu, kMinMtu, kMaxMtu);
    if (n.rx_rate_limiter) validate(*n.rx_rate_limiter, path("rx_rate_limiter"));
    if (n.tx_rate_limiter) validate(*n.tx_rate_limiter, path("tx_rate_limiter"));
    if (n.vhost) {
        // vhost-net moves the frames in the host kernel: no limiter would see them.
        for (const auto& [key, limiter] : {std::pair{"rx_rate_limiter", &n.rx_rate_limiter},
                                           std::pair{"tx_rate_limiter", &n.tx_rate_limiter}}) {
            if (*limiter && limits(**limiter)) {
                throw field_error(path(key), "a rate limiter cannot apply with \"vhost\": true (the host kernel "
                                             "moves the frames, the VMM never sees them)");
            }
        }
    }
}

void validate_network_interfaces(const std::vector<NetworkInterfaceConfig>& ifaces, std::string_view where) {
    if (ifaces.size() > kMaxNetworkInterfaces) {
        throw field_error(where, fmt::format("{} network interfaces is more than the limit of {}", ifaces.size(),
                                             kMaxNetworkInterfaces));
    }
    std::set<std::string> ids, devs;
    std::set<MacAddress> macs;
    for (size_t i = 0; i < ifaces.size(); i++) {
        const std::string at = fmt::format("{}[{}]", where, i);
        const auto& n = ifaces[i];
        validate(n, at);
        if (!ids.insert(n.iface_id).second) {
            throw field_error(at + ".iface_id", fmt::format("'{}' is used by another interface", n.iface_id));
        }
        if (!devs.insert(n.host_dev_name).second) {
            throw field_error(at + ".host_dev_name", fmt::format("'{}' is used by another interface", n.host_dev_name));
        }
        if (n.guest_mac && !macs.insert(*n.guest_mac).second) {
            throw field_error(at + ".guest_mac", fmt::format("{} is used by another interface", format_mac(*n.guest_mac)));
        }
    }
}

void validate(const BalloonConfig& b, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    check_range(path("amount_mib"), b.amount_mib, 0, kMaxMemSizeMib);
    check_range(path("stats_polling_interval_s"), b.stats_polling_interval_s, 0, kMaxStatsPollingIntervalS);
}

void validate(const VsockConfig& v, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    check_range(path("guest_cid"), v.guest_cid, kMinVsockGuestCid, kMaxVsockGuestCid);
    if (v.uds_path.empty()) throw field_error(path("uds_path"), "must not be empty");
    check_no_nul(path("uds_path"), v.uds_path);
    if (v.uds_path.size() > kMaxVsockUdsPathLength) {
        throw field_error(path("uds_path"), fmt::format("longer than {} bytes (the guest's connections go to "
                                                        "<uds_path>_<port>, which must fit a Unix socket address)",
                                                        kMaxVsockUdsPathLength));
    }
}

void validate(const FsConfig& fs, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    if (fs.tag.empty()) throw field_error(path("tag"), "must not be empty");
    check_no_nul(path("tag"), fs.tag);
    if (fs.tag.size() > kMaxFsTagBytes) {
        throw field_error(path("tag"), fmt::format("longer than {} bytes (virtio-fs's tag field)", kMaxFsTagBytes));
    }
    if (fs.socket.empty()) throw field_error(path("socket"), "must not be empty");
    check_no_nul(path("socket"), fs.socket);
    if (fs.socket.size() > kMaxSocketPathBytes) {
        throw field_error(path("socket"), fmt::format("longer than {} bytes (a Unix socket path)", kMaxSocketPathBytes));
    }
    check_range(path("num_request_queues"), fs.num_request_queues, 1, kMaxFsRequestQueues);
    check_range(path("queue_size"), fs.queue_size, 1, kMaxFsQueueSize);
    if ((fs.queue_size & (fs.queue_size - 1)) != 0) {
        throw field_error(path("queue_size"), fmt::format("{} is not a power of two", fs.queue_size));
    }
}

void validate_fs(const std::vector<FsConfig>& fs, std::string_view where) {
    if (fs.size() > kMaxFsDevices) {
        throw field_error(where, fmt::format("{} fs devices is more than the limit of {}", fs.size(), kMaxFsDevices));
    }
    std::set<std::string> tags;
    for (size_t i = 0; i < fs.size(); i++) {
        const std::string at = fmt::format("{}[{}]", where, i);
        validate(fs[i], at);
        if (!tags.insert(fs[i].tag).second) {
            throw field_error(at + ".tag", fmt::format("'{}' is used by another fs device", fs[i].tag));
        }
    }
}

void validate(const LoggerConfig& l, std::string_view where) {
    if (l.log_path) {
        const std::string path = fmt::format("{}.log_path", where);
        if (l.log_path->empty()) throw field_error(path, "must not be empty");
        check_no_nul(path, *l.log_path);
    }
}

void validate(const MetricsConfig& m, std::string_view where) {
    const auto path = [&](std::string_view key) { return fmt::format("{}.{}", where, key); };
    if (m.metrics_path.empty()) throw field_error(path("metrics_path"), "must not be empty");
    check_no_nul(path("metrics_path"), m.metrics_path);
    check_range(path("interval_s"), m.interval_s, 0, kMaxMetricsIntervalS);
}

namespace {

// KVM's dirty log sees the vCPUs' writes only: a vhost backend (the kernel's vhost-net worker, a
// vhost-user process) writes received frames, read data and used rings into guest memory behind
// it, so a Diff snapshot would miss those pages. Refused rather than half right.
void check_dirty_tracking(const VmConfig& config) {
    const auto refuse = [](const std::string& device) {
        throw field_error("machine-config.track_dirty_pages",
                          fmt::format("not with {}: its backend writes guest memory behind KVM's dirty log, so a Diff "
                                      "snapshot would miss pages (take Full snapshots)",
                                      device));
    };
    for (const NetworkInterfaceConfig& n : config.network_interfaces) {
        if (n.vhost) refuse(fmt::format("network interface {} (\"vhost\": true)", n.iface_id));
    }
    for (const DriveConfig& d : config.drives) {
        if (d.socket) refuse(fmt::format("vhost-user drive {}", d.drive_id));
    }
    for (const FsConfig& fs : config.fs) refuse(fmt::format("virtio-fs {} (vhost-user)", fs.tag));
}

}  // namespace

void validate(const VmConfig& config) {
    if (config.boot_source) validate(*config.boot_source);
    validate(config.machine_config);
    validate_drives(config.drives);
    validate_network_interfaces(config.network_interfaces);
    if (config.logger) validate(*config.logger);
    if (config.metrics) validate(*config.metrics);
    if (config.vsock) validate(*config.vsock);
    validate_fs(config.fs);
    if (config.machine_config.track_dirty_pages) check_dirty_tracking(config);
    if (config.balloon) {
        validate(*config.balloon);
        if (config.balloon->amount_mib > config.machine_config.mem_size_mib) {
            throw field_error("balloon.amount_mib",
                              fmt::format("{} MiB is more than the guest's memory (machine-config.mem_size_mib {})",
                                          config.balloon->amount_mib, config.machine_config.mem_size_mib));
        }
    }
}

void check_readable_file(std::string_view field, const std::string& path) {
    const FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw field_error(field, fmt::format("{}: {}", path, std::strerror(errno)));
    struct stat st {};
    const bool is_dir = ::fstat(fd.get(), &st) == 0 && S_ISDIR(st.st_mode);
    if (is_dir) throw field_error(field, fmt::format("{}: {}", path, std::strerror(EISDIR)));
}

void validate_files(const BootSourceConfig& bs, std::string_view where) {
    check_readable_file(fmt::format("{}.kernel_image_path", where), bs.kernel_image_path);
    if (bs.initrd_path) check_readable_file(fmt::format("{}.initrd_path", where), *bs.initrd_path);
}

void validate_files(const DriveConfig& d, std::string_view where) {
    // A vhost-user drive's socket is connected to when the device is made (an error names it).
    if (d.socket) return;
    const std::string field = fmt::format("{}.path_on_host", where);
    const FileDescriptor fd(::open(d.path_on_host.c_str(), (d.is_read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!fd) {
        const int err = errno;
        throw field_error(field, fmt::format("{}: {}{}", d.path_on_host, std::strerror(err),
                                             err == EACCES || err == EROFS ? " (set is_read_only: true?)" : ""));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
        throw field_error(field, fmt::format("{}: not a regular file or block device", d.path_on_host));
    }
}

void validate_files(const VmConfig& config) {
    if (config.boot_source) validate_files(*config.boot_source);
    for (size_t i = 0; i < config.drives.size(); i++) {
        validate_files(config.drives[i], fmt::format("drives[{}]", i));
    }
}

}  // namespace embervm::vmm
