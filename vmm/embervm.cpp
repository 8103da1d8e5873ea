// The library API (vmm/embervm.h): a Vmm run on a thread of its own.
#include "vmm/embervm.h"

#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "virtio/balloon/balloon_device.h"
#include "vmm/config/from_json.h"
#include "vmm/config/validate.h"
#include "vmm/sys/log.h"
#include "vmm/vmm.h"

namespace embervm {

const char* to_string(VmState state) {
    switch (state) {
        case VmState::Created: return "Created";
        case VmState::Running: return "Running";
        case VmState::Paused: return "Paused";
        case VmState::Ended: return "Ended";
    }
    return "?";
}

struct Vm::Impl {
    std::unique_ptr<vmm::Vmm> vmm;
    std::thread thread;
    mutable std::mutex mutex;
    std::condition_variable cv;
    bool started = false;  // start() was called
    bool ended = false;
    std::exception_ptr error;  // run() threw (before or after starting the vCPUs)
    vmm::VmExit exit;
};

std::unique_ptr<Vm> Vm::from_json(std::string_view config_json, VmOptions options) {
    return std::make_unique<Vm>(vmm::parse_config_json(config_json), std::move(options));
}

namespace {
vmm::RunOptions run_options(const VmOptions& options) {
    vmm::RunOptions run;
    run.serial_out = options.console ? options.serial_out : options.serial_out.value_or("/dev/null");
    run.prefer_pvh = options.prefer_pvh;
    run.attach_stdin = options.console;
    run.handle_signals = options.handle_signals;
    run.seccomp = options.seccomp;
    return run;
}
}  // namespace

Vm::Vm(vmm::VmConfig config, VmOptions options) : impl_(std::make_unique<Impl>()) {
    if (!config.boot_source) throw vmm::ConfigError("boot-source: required (the guest kernel)");
    vmm::validate(config);
    vmm::validate_files(config);
    impl_->vmm = std::make_unique<vmm::Vmm>(std::move(config), run_options(options));
}

std::unique_ptr<Vm> Vm::restore(const SnapshotFiles& files, RestoreOptions restore, VmOptions options) {
    return std::unique_ptr<Vm>(new Vm(RestoreTag{}, files, restore, std::move(options)));
}

Vm::Vm(RestoreTag, const SnapshotFiles& files, RestoreOptions restore, VmOptions options)
    : impl_(std::make_unique<Impl>()) {
    auto source = std::make_shared<vmm::RestoreSource>(
        vmm::read_restore_source(files.snapshot_path, files.mem_file_path, restore.resume_vm,
                                 restore.mem_backend == MemBackend::Uffd ? vmm::MemBackendType::Uffd
                                                                         : vmm::MemBackendType::File));
    source->config.machine_config.track_dirty_pages = restore.track_dirty_pages;
    vmm::validate(source->config);
    // The drives are re-opened by path: each must still be there (the kernel need not be).
    for (const vmm::DriveConfig& d : source->config.drives) {
        if (!d.socket) vmm::validate_files(d, "drives." + d.drive_id);
    }
    vmm::RunOptions run = run_options(options);
    run.restore = source;
    impl_->vmm = std::make_unique<vmm::Vmm>(source->config, run);
}

void Vm::snapshot(SnapshotKind kind, const SnapshotFiles& files) {
    vmm::SnapshotRequest request;
    request.type = kind == SnapshotKind::Full ? snapshot::SnapshotType::Full : snapshot::SnapshotType::Diff;
    request.snapshot_path = files.snapshot_path;
    request.mem_file_path = files.mem_file_path;
    impl_->vmm->create_snapshot(request);
}

Vm::~Vm() {
    if (impl_->thread.joinable()) {
        request_shutdown();
        impl_->thread.join();
    }
}

void Vm::start() {
    std::unique_lock lock(impl_->mutex);
    if (impl_->started) throw Error("Vm::start: the VM was started already");
    impl_->started = true;
    impl_->thread = std::thread([impl = impl_.get()] {
        vmm::VmExit exit;
        std::exception_ptr error;
        try {
            exit = impl->vmm->run();
        } catch (...) {
            error = std::current_exception();
            exit = vmm::VmExit{vmm::VmExit::Reason::VmmError, 1, "the VM could not be built"};
        }
        std::lock_guard lock(impl->mutex);
        impl->exit = exit;
        impl->error = error;
        impl->ended = true;
        impl->cv.notify_all();
    });
    // Wait until the vCPUs run or the build failed.
    while (!impl_->ended && !impl_->vmm->started()) {
        impl_->cv.wait_for(lock, std::chrono::milliseconds(1));
    }
    if (impl_->ended && impl_->error) {
        lock.unlock();
        impl_->thread.join();
        std::rethrow_exception(impl_->error);
    }
}

bool Vm::pause() { return impl_->vmm->pause(); }
bool Vm::resume() { return impl_->vmm->resume(); }

void Vm::end_on_signal(int signo) {
    impl_->vmm->request_exit(
        vmm::VmExit{vmm::VmExit::Reason::Signal, 128 + signo, fmt::format("signal {} ({})", signo, strsignal(signo))});
}

void Vm::request_shutdown() {
    impl_->vmm->request_exit(vmm::VmExit{vmm::VmExit::Reason::Requested, 0, "shutdown requested by the library user"});
}

vmm::VmExit Vm::wait() {
    std::unique_lock lock(impl_->mutex);
    if (!impl_->started) throw Error("Vm::wait: the VM was not started");
    impl_->cv.wait(lock, [&] { return impl_->ended; });
    return impl_->exit;
}

VmState Vm::state() const {
    std::lock_guard lock(impl_->mutex);
    if (impl_->ended) return VmState::Ended;
    if (!impl_->started || !impl_->vmm->started()) return VmState::Created;
    return impl_->vmm->paused() ? VmState::Paused : VmState::Running;
}

bool Vm::set_balloon_target_mib(uint64_t mib) { return impl_->vmm->set_balloon_target_mib(mib); }

void Vm::update_drive(const std::string& drive_id, const std::string& path_on_host) {
    impl_->vmm->update_drive(drive_id, path_on_host);
}

void Vm::update_drive_rate_limiter(const std::string& drive_id, const vmm::RateLimiterConfig& limiter) {
    impl_->vmm->update_drive_rate_limiter(drive_id, limiter);
}

void Vm::update_network_rate_limiters(const std::string& iface_id, const std::optional<vmm::RateLimiterConfig>& rx,
                                      const std::optional<vmm::RateLimiterConfig>& tx) {
    impl_->vmm->update_network_rate_limiters(iface_id, rx, tx);
}

bool Vm::send_ctrl_alt_del() { return impl_->vmm->send_ctrl_alt_del(); }

std::string Vm::metrics_json() const { return impl_->vmm->metrics_json(); }
bool Vm::flush_metrics() { return impl_->vmm->flush_metrics(); }

std::optional<std::string> Vm::balloon_statistics_json() const {
    const auto s = impl_->vmm->balloon_stats();
    const auto size = impl_->vmm->balloon_size();
    if (!s || !size) return std::nullopt;
    nlohmann::json j = nlohmann::json::object();
    j["target_mib"] = size->target_mib;
    j["target_pages"] = size->target_mib * 256;
    j["actual_pages"] = size->actual_pages;
    j["actual_mib"] = size->actual_pages / 256;
    const auto put = [&](const char* key, const std::optional<uint64_t>& v) {
        if (v) j[key] = *v;
    };
    put("swap_in", s->swap_in);
    put("swap_out", s->swap_out);
    put("major_faults", s->major_faults);
    put("minor_faults", s->minor_faults);
    put("free_memory", s->free_memory);
    put("total_memory", s->total_memory);
    put("available_memory", s->available_memory);
    put("disk_caches", s->disk_caches);
    put("hugetlb_allocations", s->hugetlb_allocations);
    put("hugetlb_failures", s->hugetlb_failures);
    return j.dump();
}

bool Vm::set_balloon_stats_interval(uint32_t seconds) { return impl_->vmm->set_balloon_stats_interval(seconds); }

vmm::VmConfig Vm::config() const { return impl_->vmm->config(); }

}  // namespace embervm
