// The API: Firecracker's HTTP endpoints over the shared configuration model and the library's
// Vm. Independent of HTTP framing (vmm/api/api_server.h carries the requests here).
//
// Before InstanceStart the requests edit a VmConfig (the same model --config-file fills); at
// InstanceStart that config builds an embervm::Vm; afterwards the run-time requests (pause,
// resume, balloon target, drive swap, Ctrl-Alt-Del, metrics) go to the Vm, which hands them to
// the VMM's event loop, and the configuration the API shows (GET /vm/config, /machine-config,
// /balloon) is the VM's own (Vm::config()), with its run-time changes. Pre-boot-only requests
// after the start, and run-time-only requests before it, are refused with 400, never ignored.
//
// Endpoints (Firecracker's paths, bodies and status codes; 204 with no body on success of PUT
// and PATCH):
//   GET  /                         instance info: id, state, vmm_version, app_name
//   GET  /version                  {"firecracker_version": <embervm version>, "app_name": "embervm"}
//   PUT  /boot-source              pre-boot
//   GET  /machine-config; PUT|PATCH /machine-config (pre-boot)
//   PUT  /drives/{id} (pre-boot); PATCH /drives/{id} (run time: path_on_host, the drive swap
//                                  of Vmm::update_drive in vmm/vmm.h)
//   PUT  /network-interfaces/{id}  pre-boot
//   GET|PUT|PATCH /balloon         PUT pre-boot; PATCH amount_mib any time
//   GET|PATCH /balloon/statistics  run time
//   PUT  /actions                  InstanceStart | SendCtrlAltDel | FlushMetrics
//   PATCH /vm                      {"state": "Paused" | "Resumed"}
//   GET  /vm/config                the configuration in the --config-file schema
//   PUT  /logger, PUT /metrics     pre-boot
// Errors: {"fault_message": "..."}: 400 for a bad request (naming the field), 404 for an
// unknown path, 405 for a method a path does not take, 500 if the VMM failed.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "vmm/api/api_server.h"
#include "vmm/config/config.h"
#include "vmm/embervm.h"

namespace embervm::vmm {

struct ApiControllerOptions {
    std::string instance_id = "anonymous-instance";
    VmOptions vm_options;  // how InstanceStart builds the Vm (console, boot protocol)
    // Where InstanceStart builds and starts the Vm: given the work, runs it (on another thread)
    // and returns when it is done. Unset: on the calling thread. The embervm program runs it
    // on its main thread, so the VM's threads are not created by (and do not inherit the
    // seccomp filter of) the API thread.
    std::function<void(const std::function<void()>&)> run_instance_start;
};

class ApiController {
public:
    explicit ApiController(VmConfig initial = {}, ApiControllerOptions options = {});
    ~ApiController();

    // Serves one request (the API server's handler). Not re-entrant: one caller at a time.
    ApiResponse handle(const ApiRequest& request);

    // InstanceStart: builds the VM from the configuration and starts it. Throws ConfigError
    // (bad or incomplete configuration) or embervm::Error (the VM could not be built); the
    // configuration stays as it was, so the caller may fix it and try again.
    void start_instance();

    // The VM once InstanceStart succeeded, else null. The VM outlives the controller's use of it.
    std::shared_ptr<Vm> vm() const;

    // The configuration as it stands: the one being edited before InstanceStart, the VM's
    // (with its run-time changes: drive images, balloon target) after. Any thread.
    VmConfig config() const;

private:
    ApiResponse route(const ApiRequest& request);
    // Makes the Vm (`make`, on options_.run_instance_start's thread if set), starts it and keeps it.
    void start_vm(const std::function<std::shared_ptr<Vm>()>& make);
    void start_instance_locked();  // request_mutex_ held

    ApiResponse get_instance_info() const;
    ApiResponse put_boot_source(const nlohmann::json& body);
    ApiResponse put_machine_config(const nlohmann::json& body, bool patch);
    ApiResponse put_drive(const std::string& id, const nlohmann::json& body);
    ApiResponse patch_drive(const std::string& id, const nlohmann::json& body);
    ApiResponse put_network_interface(const std::string& id, const nlohmann::json& body);
    ApiResponse patch_network_interface(const std::string& id, const nlohmann::json& body);
    ApiResponse get_balloon() const;
    ApiResponse put_balloon(const nlohmann::json& body);
    ApiResponse patch_balloon(const nlohmann::json& body);
    ApiResponse get_balloon_statistics() const;
    ApiResponse patch_balloon_statistics(const nlohmann::json& body);
    ApiResponse put_action(const nlohmann::json& body);
    ApiResponse patch_vm(const nlohmann::json& body);
    ApiResponse put_logger(const nlohmann::json& body);
    ApiResponse put_metrics(const nlohmann::json& body);
    ApiResponse put_console(const nlohmann::json& body);
    ApiResponse put_vsock(const nlohmann::json& body);
    ApiResponse put_pci(const nlohmann::json& body);
    ApiResponse put_snapshot_create(const nlohmann::json& body);
    ApiResponse put_snapshot_load(const nlohmann::json& body);
    ApiResponse put_fs(const std::string& tag, const nlohmann::json& body);

    // The 400 for a request that is only allowed before (pre_boot) or after the start.
    std::optional<ApiResponse> refuse_unless(bool pre_boot, std::string_view what) const;
    bool started() const;
    // config() without the lock (the API thread).
    VmConfig current_config() const;

    ApiControllerOptions options_;
    std::mutex request_mutex_;  // one request (or start_instance) at a time
    mutable std::mutex mutex_;  // draft_ and vm_ (handle() runs on the API thread, vm() anywhere)
    VmConfig draft_;            // the configuration before InstanceStart; not used after it
    std::shared_ptr<Vm> vm_;
};

}  // namespace embervm::vmm
