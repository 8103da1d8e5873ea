// RuntimeConfig: the one live copy of a running VM's configuration. The Vmm builds the VM from
// it and the run-time requests change it (a drive's image, the balloon's target and statistics
// interval); the library (Vm::config()) and the HTTP API after InstanceStart (GET /vm/config,
// /machine-config, /balloon) read it. Any thread.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "vmm/config/config.h"

namespace embervm::vmm {

class RuntimeConfig {
public:
    explicit RuntimeConfig(VmConfig config);
    RuntimeConfig(const RuntimeConfig&) = delete;
    RuntimeConfig& operator=(const RuntimeConfig&) = delete;

    // The configuration as it stands now (a copy).
    VmConfig snapshot() const;
    // One drive as it stands now (a copy); throws as find_drive (vmm/config/config.h).
    DriveConfig drive(const std::string& drive_id) const;

    // Records a change the VM made (these do not change the VM). A drive's new image; throws as
    // find_drive.
    void set_drive_path(const std::string& drive_id, const std::string& path_on_host);
    // A drive's or an interface's rate limiters (nullopt: unchanged); throws as find_drive /
    // "network-interfaces.<id>: no such network interface".
    void set_drive_rate_limiter(const std::string& drive_id, const RateLimiterConfig& limiter);
    void set_network_rate_limiters(const std::string& iface_id, const std::optional<RateLimiterConfig>& rx,
                                   const std::optional<RateLimiterConfig>& tx);
    // One interface as it stands now (a copy); throws as set_network_rate_limiters.
    NetworkInterfaceConfig network_interface(const std::string& iface_id) const;
    // The balloon's target and statistics interval; nothing without a balloon section.
    void set_balloon_target_mib(uint64_t mib);
    void set_balloon_stats_interval(uint32_t seconds);

private:
    mutable std::mutex mutex_;
    VmConfig config_;
};

}  // namespace embervm::vmm
