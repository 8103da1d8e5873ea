// The API's endpoints: requests routed to the configuration before InstanceStart and to the Vm after.
#include "vmm/api/api.h"

#include <algorithm>
#include <array>
#include <exception>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vmm/config/apply_logger.h"
#include "vmm/config/from_json.h"
#include "vmm/config/to_json.h"
#include "vmm/config/validate.h"
#include "vmm/sys/log.h"

namespace embervm::vmm {

using nlohmann::json;

namespace {

ApiResponse no_content() { return ApiResponse{204, {}}; }
ApiResponse ok_json(const json& j) { return ApiResponse{200, j.dump()}; }
ApiResponse bad_request(std::string_view message) { return api_fault(400, message); }

// A PATCH's rate limiter over the current one (Firecracker's update): a bucket in the update
// replaces the current one (size 0: no limit), a bucket left out stays.
RateLimiterConfig merge_rate_limiter(const std::optional<RateLimiterConfig>& current, const RateLimiterConfig& update) {
    RateLimiterConfig merged = current.value_or(RateLimiterConfig{});
    if (update.bandwidth) merged.bandwidth = update.bandwidth;
    if (update.ops) merged.ops = update.ops;
    return merged;
}

// Firecracker resources embervm does not implement: refused by name rather than "not found".
constexpr std::array<std::string_view, 6> kUnsupportedPaths = {
    "/mmds", "/mmds/config", "/entropy", "/cpu-config", "/serial", "/hotplug/memory",
};

// "/drives/rootfs" with prefix "/drives/" -> "rootfs"; nullopt if the path is not of that form.
std::optional<std::string> path_id(std::string_view path, std::string_view prefix) {
    if (!path.starts_with(prefix)) return std::nullopt;
    std::string_view id = path.substr(prefix.size());
    if (id.empty() || id.find('/') != std::string_view::npos) return std::nullopt;
    return std::string(id);
}

// The body of a PUT or PATCH: a JSON object.
json parse_body(const std::string& body, std::string_view what) {
    if (body.empty()) throw ConfigError(fmt::format("{}: the request has no body (a JSON object is expected)", what));
    json j = parse_json_document(body, what, what);  // a body is the section `what`
    if (!j.is_object()) {
        throw ConfigError(fmt::format("{}: expected a JSON object, got {}", what, describe_json_value(j)));
    }
    return j;
}

// `key` of a body that must equal the id in the path (Firecracker refuses a mismatch).
void check_body_id(const json& body, std::string_view key, const std::string& id, const std::string& where) {
    const auto it = body.find(key);
    if (it == body.end()) return;  // the section parser reports the missing field
    if (it->is_string() && it->get<std::string>() != id) {
        throw ConfigError(fmt::format("{}.{}: '{}' does not match the id in the path ('{}')", where, key,
                                      it->get<std::string>(), id));
    }
}

// Replaces the element with the same id or appends it.
template <typename T, typename Id>
void upsert(std::vector<T>& list, T item, Id id_of) {
    for (T& existing : list) {
        if (id_of(existing) == id_of(item)) {
            existing = std::move(item);
            return;
        }
    }
    list.push_back(std::move(item));
}

const char* state_name(VmState state) {
    switch (state) {
        case VmState::Created: return "Not started";
        case VmState::Running: return "Running";
        case VmState::Paused: return "Paused";
        case VmState::Ended: return "Halted";
    }
    return "?";
}

}  // namespace

ApiController::ApiController(VmConfig initial, ApiControllerOptions options)
    : options_(std::move(options)), draft_(std::move(initial)) {}

ApiController::~ApiController() = default;

std::shared_ptr<Vm> ApiController::vm() const {
    std::lock_guard lock(mutex_);
    return vm_;
}

VmConfig ApiController::config() const {
    std::lock_guard lock(mutex_);
    return current_config();
}

VmConfig ApiController::current_config() const { return vm_ ? vm_->config() : draft_; }

bool ApiController::started() const { return vm_ != nullptr; }

std::optional<ApiResponse> ApiController::refuse_unless(bool pre_boot, std::string_view what) const {
    if (pre_boot && started()) {
        return bad_request(fmt::format("{}: not allowed after the microVM started (pre-boot only)", what));
    }
    if (!pre_boot && !started()) {
        return bad_request(fmt::format("{}: not allowed before the microVM started (InstanceStart first)", what));
    }
    return std::nullopt;
}

void ApiController::start_instance() {
    std::lock_guard serial(request_mutex_);
    start_instance_locked();
}

void ApiController::start_vm(const std::function<std::shared_ptr<Vm>()>& make) {
    // Without mutex_: the runner may wait for a thread that calls vm() meanwhile.
    std::shared_ptr<Vm> vm;
    const auto build = [&] {
        vm = make();
        vm->start();
    };
    if (options_.run_instance_start) {
        std::exception_ptr error;
        options_.run_instance_start([&] {
            try {
                build();
            } catch (...) {
                error = std::current_exception();
                vm.reset();  // destroyed where it was made
            }
        });
        if (error) std::rethrow_exception(error);
    } else {
        build();
    }
    std::lock_guard lock(mutex_);
    vm_ = std::move(vm);
}

void ApiController::start_instance_locked() {
    VmConfig config;
    {
        std::lock_guard lock(mutex_);
        if (vm_) throw ConfigError("InstanceStart: the microVM was started already");
        if (!draft_.boot_source) throw ConfigError("boot-source: required before InstanceStart (PUT /boot-source)");
        config = draft_;
    }
    // Vm's constructor validates the whole configuration and its files; start() builds the VM.
    start_vm([&] { return std::make_shared<Vm>(config, options_.vm_options); });
    log::info("API: the microVM started");
}

ApiResponse ApiController::handle(const ApiRequest& request) {
    std::lock_guard serial(request_mutex_);
    try {
        return route(request);
    } catch (const ConfigError& e) {
        return bad_request(e.what());
    } catch (const std::exception& e) {
        // A failure of the VMM, not of the request (the VM could not be built, an ioctl failed).
        return api_fault(400, e.what());
    }
}

ApiResponse ApiController::route(const ApiRequest& request) {
    const std::string_view target = request.target;
    const std::string_view path = target.substr(0, target.find('?'));
    const std::string& method = request.method;
    const auto allow = [&](std::initializer_list<std::string_view> methods) -> std::optional<ApiResponse> {
        if (std::find(methods.begin(), methods.end(), method) != methods.end()) return std::nullopt;
        std::string list;
        for (std::string_view m : methods) list += (list.empty() ? "" : ", ") + std::string(m);
        return api_fault(405, fmt::format("{} is not allowed on {} (allowed: {})", method, path, list));
    };
    const auto body = [&](std::string_view what) { return parse_body(request.body, what); };

    if (path == "/") {
        if (auto r = allow({"GET"})) return *r;
        return get_instance_info();
    }
    if (path == "/version") {
        if (auto r = allow({"GET"})) return *r;
        return ok_json({{"firecracker_version", EMBERVM_VERSION}, {"app_name", "embervm"}});
    }
    if (path == "/boot-source") {
        if (auto r = allow({"PUT"})) return *r;
        return put_boot_source(body("boot-source"));
    }
    if (path == "/machine-config") {
        if (auto r = allow({"GET", "PUT", "PATCH"})) return *r;
        if (method == "GET") return ok_json(to_json(current_config().machine_config));
        return put_machine_config(body("machine-config"), method == "PATCH");
    }
    if (auto id = path_id(path, "/drives/")) {
        if (auto r = allow({"PUT", "PATCH"})) return *r;
        const json b = body(fmt::format("drives.{}", *id));
        return method == "PUT" ? put_drive(*id, b) : patch_drive(*id, b);
    }
    if (auto id = path_id(path, "/network-interfaces/")) {
        if (auto r = allow({"PUT", "PATCH"})) return *r;
        const json b = body(fmt::format("network-interfaces.{}", *id));
        return method == "PUT" ? put_network_interface(*id, b) : patch_network_interface(*id, b);
    }
    if (auto tag = path_id(path, "/fs/")) {
        if (auto r = allow({"PUT"})) return *r;
        return put_fs(*tag, body(fmt::format("fs.{}", *tag)));
    }
    if (path == "/balloon") {
        if (auto r = allow({"GET", "PUT", "PATCH"})) return *r;
        if (method == "GET") return get_balloon();
        return method == "PUT" ? put_balloon(body("balloon")) : patch_balloon(body("balloon"));
    }
    if (path == "/balloon/statistics") {
        if (auto r = allow({"GET", "PATCH"})) return *r;
        if (method == "GET") return get_balloon_statistics();
        return patch_balloon_statistics(body("balloon"));
    }
    if (path == "/actions") {
        if (auto r = allow({"PUT"})) return *r;
        return put_action(body("actions"));
    }
    if (path == "/vm") {
        if (auto r = allow({"PATCH"})) return *r;
        return patch_vm(body("vm"));
    }
    if (path == "/vm/config") {
        if (auto r = allow({"GET"})) return *r;
        return ok_json(to_json(current_config()));
    }
    if (path == "/logger") {
        if (auto r = allow({"PUT"})) return *r;
        return put_logger(body("logger"));
    }
    if (path == "/metrics") {
        if (auto r = allow({"PUT"})) return *r;
        return put_metrics(body("metrics"));
    }
    if (path == "/console") {
        if (auto r = allow({"PUT"})) return *r;
        return put_console(body("console"));
    }
    if (path == "/vsock") {
        if (auto r = allow({"PUT"})) return *r;
        return put_vsock(body("vsock"));
    }
    if (path == "/pci") {
        if (auto r = allow({"PUT"})) return *r;
        return put_pci(body("pci"));
    }
    if (path == "/snapshot/create") {
        if (auto r = allow({"PUT"})) return *r;
        return put_snapshot_create(body("snapshot"));
    }
    if (path == "/snapshot/load") {
        if (auto r = allow({"PUT"})) return *r;
        return put_snapshot_load(body("snapshot"));
    }
    for (std::string_view unsupported : kUnsupportedPaths) {
        if (path == unsupported || (path.starts_with(unsupported) && path[unsupported.size()] == '/')) {
            return bad_request(fmt::format("{}: not supported by embervm", path));
        }
    }
    return api_fault(404, fmt::format("no such resource: {}", path));
}

ApiResponse ApiController::get_instance_info() const {
    const VmState state = vm_ ? vm_->state() : VmState::Created;
    return ok_json({{"id", options_.instance_id},
                    {"state", state_name(state)},
                    {"vmm_version", EMBERVM_VERSION},
                    {"app_name", "embervm"}});
}

ApiResponse ApiController::put_boot_source(const json& body) {
    if (auto r = refuse_unless(true, "PUT /boot-source")) return *r;
    BootSourceConfig bs = boot_source_from_json(body, "boot-source");
    validate_files(bs);
    std::lock_guard lock(mutex_);
    draft_.boot_source = std::move(bs);
    return no_content();
}

ApiResponse ApiController::put_machine_config(const json& body, bool patch) {
    if (auto r = refuse_unless(true, patch ? "PATCH /machine-config" : "PUT /machine-config")) return *r;
    json merged = body;
    if (patch) {
        merged = to_json(draft_.machine_config);
        for (const auto& [key, value] : body.items()) merged[key] = value;
    }
    MachineConfig mc = machine_config_from_json(merged, "machine-config");
    VmConfig next = draft_;
    next.machine_config = mc;
    validate(next);  // e.g. a balloon larger than the new memory size
    std::lock_guard lock(mutex_);
    draft_ = std::move(next);
    return no_content();
}

ApiResponse ApiController::put_drive(const std::string& id, const json& body) {
    const std::string where = fmt::format("drives.{}", id);
    if (auto r = refuse_unless(true, "PUT /drives")) return *r;
    check_body_id(body, "drive_id", id, where);
    DriveConfig drive = drive_from_json(body, where);
    VmConfig next = draft_;
    upsert(next.drives, drive, [](const DriveConfig& d) { return d.drive_id; });
    validate_drives(next.drives);
    validate_files(drive, where);
    std::lock_guard lock(mutex_);
    draft_ = std::move(next);
    return no_content();
}

ApiResponse ApiController::patch_drive(const std::string& id, const json& body) {
    const std::string where = fmt::format("drives.{}", id);
    if (auto r = refuse_unless(false, "PATCH /drives")) return *r;
    check_body_id(body, "drive_id", id, where);
    const JsonFields f(body, where, {"drive_id", "path_on_host", "rate_limiter"});
    f.required_string("drive_id");
    const auto path = f.optional_string("path_on_host");
    const auto limiter = optional_rate_limiter(f, "rate_limiter");  // checked before anything changes
    const DriveConfig current = find_drive(vm_->config(), id);  // "drives.<id>: no such drive"
    if (path && path->empty()) throw ConfigError(fmt::format("{}.path_on_host: empty", where));
    if (path) vm_->update_drive(id, *path);  // the drive swap, recorded in the VM's configuration
    if (limiter) vm_->update_drive_rate_limiter(id, merge_rate_limiter(current.rate_limiter, *limiter));
    return no_content();
}

ApiResponse ApiController::put_fs(const std::string& tag, const json& body) {
    const std::string where = fmt::format("fs.{}", tag);
    // A virtio-fs device after the start would need hot-plug.
    if (auto r = refuse_unless(true, "PUT /fs")) return *r;
    check_body_id(body, "tag", tag, where);
    FsConfig fs = fs_from_json(body, where);
    VmConfig next = draft_;
    upsert(next.fs, fs, [](const FsConfig& f) { return f.tag; });
    validate_fs(next.fs);
    std::lock_guard lock(mutex_);
    draft_ = std::move(next);
    return no_content();
}

ApiResponse ApiController::put_network_interface(const std::string& id, const json& body) {
    const std::string where = fmt::format("network-interfaces.{}", id);
    if (auto r = refuse_unless(true, "PUT /network-interfaces")) return *r;
    check_body_id(body, "iface_id", id, where);
    NetworkInterfaceConfig iface = network_interface_from_json(body, where);
    VmConfig next = draft_;
    upsert(next.network_interfaces, iface, [](const NetworkInterfaceConfig& n) { return n.iface_id; });
    validate_network_interfaces(next.network_interfaces);
    std::lock_guard lock(mutex_);
    draft_ = std::move(next);
    return no_content();
}

ApiResponse ApiController::patch_network_interface(const std::string& id, const json& body) {
    const std::string where = fmt::format("network-interfaces.{}", id);
    if (auto r = refuse_unless(false, "PATCH /network-interfaces")) return *r;
    check_body_id(body, "iface_id", id, where);
    const JsonFields f(body, where, {"iface_id", "rx_rate_limiter", "tx_rate_limiter"});
    f.required_string("iface_id");
    const auto rx = optional_rate_limiter(f, "rx_rate_limiter");
    const auto tx = optional_rate_limiter(f, "tx_rate_limiter");
    const VmConfig config = vm_->config();
    const auto it = std::find_if(config.network_interfaces.begin(), config.network_interfaces.end(),
                                 [&](const NetworkInterfaceConfig& n) { return n.iface_id == id; });
    if (it == config.network_interfaces.end()) throw ConfigError(where + ": no such network interface");
    if (!rx && !tx) return no_content();  // nothing to change
    std::optional<RateLimiterConfig> next_rx, next_tx;
    if (rx) next_rx = merge_rate_limiter(it->rx_rate_limiter, *rx);
    if (tx) next_tx = merge_rate_limiter(it->tx_rate_limiter, *tx);
    vm_->update_network_rate_limiters(id, next_rx, next_tx);
    return no_content();
}

ApiResponse ApiController::get_balloon() const {
    const VmConfig config = current_config();
    if (!config.balloon) return bad_request("balloon: no balloon device is configured");
    return ok_json(to_json(*config.balloon));
}

ApiResponse ApiController::put_balloon(const json& body) {
    if (auto r = refuse_unless(true, "PUT /balloon")) return *r;
    BalloonConfig b = balloon_from_json(body, "balloon");
    VmConfig next = draft_;
    next.balloon = b;
    validate(next);
    std::lock_guard lock(mutex_);
    draft_ = std::move(next);
    return no_content();
}

ApiResponse ApiController::patch_balloon(const json& body) {
    const VmConfig config = current_config();
    if (!config.balloon) return bad_request("balloon: no balloon device is configured (PUT /balloon before boot)");
    const JsonFields f(body, "balloon", {"amount_mib"});
    const uint64_t mib = f.required_uint("amount_mib", 0, config.machine_config.mem_size_mib);
    if (vm_) {
        // The VM records the new target in its configuration.
        if (!vm_->set_balloon_target_mib(mib)) return bad_request("balloon.amount_mib: the microVM is not running");
        return no_content();
    }
    std::lock_guard lock(mutex_);
    draft_.balloon->amount_mib = mib;
    return no_content();
}

ApiResponse ApiController::get_balloon_statistics() const {
    const VmConfig config = current_config();
    if (!config.balloon) return bad_request("balloon: no balloon device is configured");
    if (config.balloon->stats_polling_interval_s == 0) {
        return bad_request("balloon: statistics are not enabled (stats_polling_interval_s is 0)");
    }
    if (auto r = refuse_unless(false, "GET /balloon/statistics")) return *r;
    const auto stats = vm_->balloon_statistics_json();
    if (!stats) return bad_request("balloon: the guest has not reported statistics yet");
    return ApiResponse{200, *stats};
}

ApiResponse ApiController::patch_balloon_statistics(const json& body) {
    const VmConfig config = current_config();
    if (!config.balloon) return bad_request("balloon: no balloon device is configured");
    if (auto r = refuse_unless(false, "PATCH /balloon/statistics")) return *r;
    const JsonFields f(body, "balloon", {"stats_polling_interval_s"});
    const auto s = static_cast<uint32_t>(f.required_uint("stats_polling_interval_s", 0, kMaxStatsPollingIntervalS));
    const uint32_t now = config.balloon->stats_polling_interval_s;
    // The statistics queue exists only if it was negotiated at boot.
    if (now == 0 && s != 0) {
        return bad_request("balloon.stats_polling_interval_s: statistics were not enabled at boot and cannot be now");
    }
    if (now != 0 && s == 0) {
        return bad_request("balloon.stats_polling_interval_s: statistics cannot be disabled after boot");
    }
    // The VM records the new interval in its configuration.
    if (!vm_->set_balloon_stats_interval(s)) return bad_request("balloon: the microVM is not running");
    return no_content();
}

ApiResponse ApiController::put_action(const json& body) {
    const JsonFields f(body, "actions", {"action_type"});
    const auto action = f.optional_choice("action_type", {"InstanceStart", "SendCtrlAltDel", "FlushMetrics"});
    if (!action) throw ConfigError("actions.action_type: required");
    if (*action == "InstanceStart") {
        if (auto r = refuse_unless(true, "InstanceStart")) return *r;
        try {
            start_instance_locked();
        } catch (const ConfigError& e) {
            return bad_request(fmt::format("InstanceStart: {}", e.what()));
        } catch (const std::exception& e) {
            return bad_request(fmt::format("InstanceStart: the microVM could not be started: {}", e.what()));
        }
        return no_content();
    }
    if (*action == "SendCtrlAltDel") {
        if (auto r = refuse_unless(false, "SendCtrlAltDel")) return *r;
        if (!vm_->send_ctrl_alt_del()) return bad_request("SendCtrlAltDel: the microVM is not running");
        return no_content();
    }
    // FlushMetrics
    if (!current_config().metrics) return bad_request("FlushMetrics: metrics are not configured (PUT /metrics first)");
    if (auto r = refuse_unless(false, "FlushMetrics")) return *r;
    if (!vm_->flush_metrics()) return bad_request("FlushMetrics: the microVM is not running");
    return no_content();
}

ApiResponse ApiController::patch_vm(const json& body) {
    const JsonFields f(body, "vm", {"state"});
    const auto state = f.optional_choice("state", {"Paused", "Resumed"});
    if (!state) throw ConfigError("vm.state: required");
    if (auto r = refuse_unless(false, "PATCH /vm")) return *r;
    const bool ok = *state == "Paused" ? vm_->pause() : vm_->resume();
    if (!ok) return bad_request(fmt::format("vm.state: the microVM is not running (it is {})", state_name(vm_->state())));
    return no_content();
}

ApiResponse ApiController::put_logger(const json& body) {
    if (auto r = refuse_unless(true, "PUT /logger")) return *r;
    LoggerConfig logger = logger_from_json(body, "logger");
    apply_logger_config(logger, "logger");
    std::lock_guard lock(mutex_);
    draft_.logger = std::move(logger);
    return no_content();
}

ApiResponse ApiController::put_metrics(const json& body) {
    if (auto r = refuse_unless(true, "PUT /metrics")) return *r;
    MetricsConfig metrics = metrics_from_json(body, "metrics");
    std::lock_guard lock(mutex_);
    draft_.metrics = std::move(metrics);
    return no_content();
}

ApiResponse ApiController::put_console(const json& body) {
    if (auto r = refuse_unless(true, "PUT /console")) return *r;
    ConsoleConfig console = console_from_json(body, "console");
    std::lock_guard lock(mutex_);
    draft_.console = console;
    return no_content();
}

ApiResponse ApiController::put_vsock(const json& body) {
    if (auto r = refuse_unless(true, "PUT /vsock")) return *r;
    VsockConfig vsock = vsock_from_json(body, "vsock");
    std::lock_guard lock(mutex_);
    draft_.vsock = std::move(vsock);
    return no_content();
}

// An embervm extension: Firecracker enables PCI only with its --enable-pci flag. The body is
// the config file's top-level key, {"enable_pci": true|false}.
ApiResponse ApiController::put_pci(const json& body) {
    if (auto r = refuse_unless(true, "PUT /pci")) return *r;
    const JsonFields f(body, "pci", {"enable_pci"});
    const bool enable = f.required_bool("enable_pci");
    std::lock_guard lock(mutex_);
    draft_.enable_pci = enable;
    return no_content();
}

// Firecracker's PUT /snapshot/create: on a paused microVM; returns when both files are written.
ApiResponse ApiController::put_snapshot_create(const json& body) {
    const JsonFields f(body, "snapshot", {"snapshot_type", "snapshot_path", "mem_file_path", "version"});
    const auto type = f.optional_choice("snapshot_type", {"Full", "Diff"}).value_or("Full");
    SnapshotFiles files{f.required_string("snapshot_path"), f.required_string("mem_file_path")};
    if (auto r = refuse_unless(false, "PUT /snapshot/create")) return *r;
    if (vm_->state() != VmState::Paused) {
        return bad_request(fmt::format("snapshot: the microVM is {}: pause it first (PATCH /vm {{\"state\": \"Paused\"}})",
                                       state_name(vm_->state())));
    }
    vm_->snapshot(type == "Full" ? SnapshotKind::Full : SnapshotKind::Diff, files);
    return no_content();
}

// Firecracker's PUT /snapshot/load: in a fresh process only (nothing configured but the logger
// and metrics, no InstanceStart); the restored microVM runs with resume_vm, else stays Paused.
ApiResponse ApiController::put_snapshot_load(const json& body) {
    const JsonFields f(body, "snapshot",
                       {"snapshot_path", "mem_backend", "mem_file_path", "track_dirty_pages", "resume_vm",
                        "enable_diff_snapshots"});
    SnapshotFiles files;
    files.snapshot_path = f.required_string("snapshot_path");
    if (body.contains("mem_backend")) {
        const JsonFields m(body["mem_backend"], "snapshot.mem_backend", {"backend_type", "backend_path"});
        const auto backend = m.optional_choice("backend_type", {"File", "Uffd"});
        if (!backend) throw ConfigError("snapshot.mem_backend.backend_type: required");
        files.mem_file_path = m.required_string("backend_path");
        if (body.contains("mem_file_path")) throw ConfigError("snapshot.mem_file_path: not together with mem_backend");
    } else {
        files.mem_file_path = f.required_string("mem_file_path");
    }
    RestoreOptions restore;
    if (body.contains("mem_backend") && body["mem_backend"].value("backend_type", "") == "Uffd") {
        restore.mem_backend = MemBackend::Uffd;
    }
    restore.resume_vm = f.optional_bool("resume_vm").value_or(false);
    restore.track_dirty_pages =
        f.optional_bool("track_dirty_pages").value_or(f.optional_bool("enable_diff_snapshots").value_or(false));
    if (auto r = refuse_unless(true, "PUT /snapshot/load")) return *r;
    {
        std::lock_guard lock(mutex_);
        VmConfig configured = draft_;
        configured.logger.reset();
        configured.metrics.reset();
        if (!(configured == VmConfig{})) {
            return bad_request("PUT /snapshot/load: the microVM was configured already: load a snapshot in a fresh "
                               "embervm (only logger and metrics may come first)");
        }
    }
    start_vm([&] { return std::shared_ptr<Vm>(Vm::restore(files, restore, options_.vm_options)); });
    log::info("API: the microVM was restored from {}", files.snapshot_path);
    return no_content();
}

}  // namespace embervm::vmm
