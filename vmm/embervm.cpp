#include "vmm/embervm.h"

#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "virtio/balloon/balloon_device.h"
#include "vmm/log.h"
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
    vmm::VmConfig config;
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

Vm::Vm(vmm::VmConfig config, VmOptions options) : impl_(std::make_unique<Impl>()) {
    if (!config.boot_source) throw vmm::ConfigError("boot-source: required (the guest kernel)");
    vmm::validate(config);
    vmm::validate_files(config);
    impl_->config = config;
    vmm::RunOptions run;
    run.serial_out = options.serial_out.value_or("/dev/null");
    run.prefer_pvh = options.prefer_pvh;
    run.attach_stdin = false;
    run.handle_signals = false;  // the embedding program owns its signals
    impl_->vmm = std::make_unique<vmm::Vmm>(std::move(config), run);
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

std::optional<std::string> Vm::balloon_statistics_json() const {
    const auto s = impl_->vmm->balloon_stats();
    if (!s) return std::nullopt;
    nlohmann::json j = nlohmann::json::object();
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

const vmm::VmConfig& Vm::config() const { return impl_->config; }

}  // namespace embervm
