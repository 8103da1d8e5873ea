// RuntimeConfig: the running VM's configuration, shared by the Vmm, the library and the API.
#include "vmm/runtime_config.h"

#include <utility>

namespace embervm::vmm {

RuntimeConfig::RuntimeConfig(VmConfig config) : config_(std::move(config)) {}

VmConfig RuntimeConfig::snapshot() const {
    std::lock_guard lock(mutex_);
    return config_;
}

DriveConfig RuntimeConfig::drive(const std::string& drive_id) const {
    std::lock_guard lock(mutex_);
    return find_drive(config_, drive_id);
}

void RuntimeConfig::set_drive_path(const std::string& drive_id, const std::string& path_on_host) {
    std::lock_guard lock(mutex_);
    find_drive(config_, drive_id).path_on_host = path_on_host;
}

void RuntimeConfig::set_drive_rate_limiter(const std::string& drive_id, const RateLimiterConfig& limiter) {
    std::lock_guard lock(mutex_);
    find_drive(config_, drive_id).rate_limiter = limiter;
}

namespace {

NetworkInterfaceConfig& find_interface(VmConfig& config, const std::string& iface_id) {
    for (NetworkInterfaceConfig& n : config.network_interfaces) {
        if (n.iface_id == iface_id) return n;
    }
    throw ConfigError("network-interfaces." + iface_id + ": no such network interface");
}

}  // namespace

void RuntimeConfig::set_network_rate_limiters(const std::string& iface_id, const std::optional<RateLimiterConfig>& rx,
                                              const std::optional<RateLimiterConfig>& tx) {
    std::lock_guard lock(mutex_);
    NetworkInterfaceConfig& n = find_interface(config_, iface_id);
    if (rx) n.rx_rate_limiter = rx;
    if (tx) n.tx_rate_limiter = tx;
}

NetworkInterfaceConfig RuntimeConfig::network_interface(const std::string& iface_id) const {
    std::lock_guard lock(mutex_);
    return find_interface(const_cast<VmConfig&>(config_), iface_id);
}

void RuntimeConfig::set_balloon_target_mib(uint64_t mib) {
    std::lock_guard lock(mutex_);
    if (config_.balloon) config_.balloon->amount_mib = mib;
}

void RuntimeConfig::set_balloon_stats_interval(uint32_t seconds) {
    std::lock_guard lock(mutex_);
    if (config_.balloon) config_.balloon->stats_polling_interval_s = seconds;
}

}  // namespace embervm::vmm
