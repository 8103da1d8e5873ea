// Serialisation of the configuration model to JSON (GET /vm/config, /machine-config, /balloon).
// The document is the one from_json.h reads back.
#include "vmm/config/to_json.h"

namespace embervm::vmm {

using nlohmann::json;

namespace {

// A list section, left out of the document when empty.
template <typename T>
json array_to_json(const std::vector<T>& items) {
    if (items.empty()) return nullptr;
    json a = json::array();
    for (const T& item : items) a.push_back(to_json(item));
    return a;
}

}  // namespace

json to_json(const DriveConfig& d) {
    json j = {{"drive_id", d.drive_id},         {"path_on_host", d.path_on_host},
              {"is_root_device", d.is_root_device}, {"is_read_only", d.is_read_only},
              {"cache_type", to_string(d.cache_type)}, {"io_engine", to_string(d.io_engine)}};
    if (d.partuuid) j["partuuid"] = *d.partuuid;
    return j;
}

json to_json(const NetworkInterfaceConfig& n) {
    json j = {{"iface_id", n.iface_id}, {"host_dev_name", n.host_dev_name}};
    if (n.guest_mac) j["guest_mac"] = format_mac(*n.guest_mac);
    if (n.mtu) j["mtu"] = *n.mtu;
    return j;
}

json to_json(const BalloonConfig& b) {
    return {{"amount_mib", b.amount_mib},
            {"deflate_on_oom", b.deflate_on_oom},
            {"stats_polling_interval_s", b.stats_polling_interval_s},
            {"free_page_reporting", b.free_page_reporting}};
}

json to_json(const LoggerConfig& l) {
    json j = json::object();
    if (l.log_path) j["log_path"] = *l.log_path;
    if (l.level) j["level"] = to_string(*l.level);
    if (l.show_level) j["show_level"] = *l.show_level;
    if (l.show_log_origin) j["show_log_origin"] = *l.show_log_origin;
    return j;
}

json to_json(const MetricsConfig& m) { return {{"metrics_path", m.metrics_path}, {"interval_s", m.interval_s}}; }

json to_json(const BootSourceConfig& bs) {
    json j = {{"kernel_image_path", bs.kernel_image_path}};
    if (bs.initrd_path) j["initrd_path"] = *bs.initrd_path;
    if (bs.boot_args) j["boot_args"] = *bs.boot_args;
    return j;
}

json to_json(const MachineConfig& mc) {
    return {{"vcpu_count", mc.vcpu_count},
            {"mem_size_mib", mc.mem_size_mib},
            {"smt", mc.smt},
            {"track_dirty_pages", mc.track_dirty_pages},
            {"acpi", mc.acpi}};
}


json to_json(const VmConfig& config) {
    json j = json::object();
    const auto put = [&j](const char* key, json section) {
        if (!section.is_null()) j[key] = std::move(section);
    };
    if (config.boot_source) put("boot-source", to_json(*config.boot_source));
    put("machine-config", to_json(config.machine_config));
    put("drives", array_to_json(config.drives));
    put("network-interfaces", array_to_json(config.network_interfaces));
    if (config.balloon) put("balloon", to_json(*config.balloon));
    if (config.logger) put("logger", to_json(*config.logger));
    if (config.metrics) put("metrics", to_json(*config.metrics));
    j["enable_pci"] = config.enable_pci;
    return j;
}

}  // namespace embervm::vmm
