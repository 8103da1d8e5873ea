// Serialisation of the configuration model to JSON (GET /vm/config, /machine-config, /balloon).
// The document is the one from_json.h reads back.
#include "vmm/config/to_json.h"

#include <fmt/format.h>

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

// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF; what nlohmann::json's dump() accepts), or 0.
size_t utf8_sequence_length(std::string_view s, size_t i) {
    const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char b0 = byte(i);
    if (b0 < 0x80) return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;  // the range of the second byte
    if (b0 >= 0xc2 && b0 <= 0xdf) {
        n = 2;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
        n = 3;
        if (b0 == 0xe0) lo = 0xa0;  // overlong
        if (b0 == 0xed) hi = 0x9f;  // surrogates
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
        n = 4;
        if (b0 == 0xf0) lo = 0x90;  // overlong
        if (b0 == 0xf4) hi = 0x8f;  // above U+10FFFF
    } else {
        return 0;
    }
    if (i + n > s.size()) return 0;
    if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
    for (size_t k = 2; k < n; ++k) {
        if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return 0;
    }
    return n;
}

}  // namespace

json to_json(const RateLimiterConfig& r) {
    json j = json::object();
    const auto bucket = [](const TokenBucketConfig& b) {
        return json{{"size", b.size}, {"one_time_burst", b.one_time_burst}, {"refill_time", b.refill_time_ms}};
    };
    if (r.bandwidth) j["bandwidth"] = bucket(*r.bandwidth);
    if (r.ops) j["ops"] = bucket(*r.ops);
    return j;
}

std::string json_text(std::string_view bytes) {
    bool valid = true;
    for (size_t i = 0; i < bytes.size() && valid;) {
        const size_t n = utf8_sequence_length(bytes, i);
        valid = n != 0;
        i += n;
    }
    if (valid) return std::string(bytes);
    std::string out;
    for (size_t i = 0; i < bytes.size();) {
        const size_t n = utf8_sequence_length(bytes, i);
        if (n == 0 || bytes[i] == '\\') {
            out += fmt::format("\\x{:02x}", static_cast<unsigned char>(bytes[i]));
            i += 1;
        } else {
            out.append(bytes.substr(i, n));
            i += n;
        }
    }
    return out;
}

json to_json(const DriveConfig& d) {
    json j = {{"drive_id", d.drive_id}, {"is_root_device", d.is_root_device}, {"cache_type", to_string(d.cache_type)}};
    if (d.socket) {
        j["socket"] = json_text(*d.socket);
    } else {
        j["path_on_host"] = json_text(d.path_on_host);
        j["is_read_only"] = d.is_read_only;
        j["io_engine"] = to_string(d.io_engine);
    }
    if (d.partuuid) j["partuuid"] = *d.partuuid;
    if (d.rate_limiter) j["rate_limiter"] = to_json(*d.rate_limiter);
    return j;
}

json to_json(const NetworkInterfaceConfig& n) {
    json j = {{"iface_id", n.iface_id}, {"host_dev_name", json_text(n.host_dev_name)}};
    if (n.guest_mac) j["guest_mac"] = format_mac(*n.guest_mac);
    if (n.mtu) j["mtu"] = *n.mtu;
    if (n.rx_rate_limiter) j["rx_rate_limiter"] = to_json(*n.rx_rate_limiter);
    if (n.tx_rate_limiter) j["tx_rate_limiter"] = to_json(*n.tx_rate_limiter);
    if (n.vhost) j["vhost"] = true;
    return j;
}

json to_json(const BalloonConfig& b) {
    return {{"amount_mib", b.amount_mib},
            {"deflate_on_oom", b.deflate_on_oom},
            {"stats_polling_interval_s", b.stats_polling_interval_s},
            {"free_page_reporting", b.free_page_reporting}};
}

json to_json(const FsConfig& fs) {
    return {{"tag", json_text(fs.tag)},
            {"socket", json_text(fs.socket)},
            {"num_request_queues", fs.num_request_queues},
            {"queue_size", fs.queue_size}};
}

json to_json(const VsockConfig& v) { return {{"guest_cid", v.guest_cid}, {"uds_path", json_text(v.uds_path)}}; }

json to_json(const LoggerConfig& l) {
    json j = json::object();
    if (l.log_path) j["log_path"] = json_text(*l.log_path);
    if (l.level) j["level"] = to_string(*l.level);
    if (l.show_level) j["show_level"] = *l.show_level;
    if (l.show_log_origin) j["show_log_origin"] = *l.show_log_origin;
    return j;
}

json to_json(const MetricsConfig& m) { return {{"metrics_path", json_text(m.metrics_path)}, {"interval_s", m.interval_s}}; }

json to_json(const ConsoleConfig& c) { return {{"type", to_string(c.type)}}; }

json to_json(const BootSourceConfig& bs) {
    json j = {{"kernel_image_path", json_text(bs.kernel_image_path)}};
    if (bs.initrd_path) j["initrd_path"] = json_text(*bs.initrd_path);
    if (bs.boot_args) j["boot_args"] = json_text(*bs.boot_args);
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
    if (config.vsock) put("vsock", to_json(*config.vsock));
    if (!config.fs.empty()) put("fs", array_to_json(config.fs));
    if (config.logger) put("logger", to_json(*config.logger));
    if (config.metrics) put("metrics", to_json(*config.metrics));
    if (config.console) put("console", to_json(*config.console));
    j["enable_pci"] = config.enable_pci;
    return j;
}

}  // namespace embervm::vmm
