// The Vmm's life cycle (run loop, pause, resume, exit) and its run-time requests.
#include "vmm/vmm.h"

#include <csignal>
#include <cstring>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "devices/boot_timer.h"
#include "devices/bus.h"
#include "devices/i8042.h"
#include "memory/guest_memory.h"
#include "virtio/balloon/balloon_device.h"
#include "virtio/console/console_device.h"
#include "vmm/config/validate.h"
#include "vmm/console.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/vcpu.h"
#include "vmm/legacy_devices.h"
#include "vmm/metrics.h"
#include "vmm/sys/error.h"
#include "vmm/sys/log.h"
#include "vmm/snapshot/uffd_backend.h"
#include "vmm/sys/seccomp.h"
#include "vmm/sys/signals.h"
#include "vmm/device_manager.h"

namespace embervm::vmm {

namespace asio = boost::asio;

Vmm::Vmm(VmConfig config, RunOptions options)
    : config_(std::move(config)), options_(std::move(options)), loop_calls_(io_) {}

Vmm::~Vmm() { shutdown_vcpus(); }

void Vmm::request_exit(VmExit exit) {
    {
        std::lock_guard<std::mutex> lock(exit_mutex_);
        if (exit_) {
            return;
        }
        exit_ = exit;
    }
    // Stop the vCPUs right away (they may be spinning in the guest), and the loop from its thread.
    for (auto& v : vcpus_) {
        v->request_stop();
    }
    asio::post(io_, [this] { io_.stop(); });
}

void Vmm::shutdown_vcpus() {
    for (auto& v : vcpus_) {
        v->request_stop();
    }
    for (auto& v : vcpus_) {
        v->join();
    }
}

bool Vmm::pause() {
    std::lock_guard lock(pause_mutex_);
    if (!started_ || ended_) return false;
    if (!paused_) {
        for (auto& v : vcpus_) v->pause();
        paused_ = true;
        log::info("VM paused");
    }
    return true;
}

bool Vmm::resume() {
    std::lock_guard lock(pause_mutex_);
    if (!started_ || ended_) return false;
    if (paused_) {
        for (auto& v : vcpus_) v->resume();
        paused_ = false;
        log::info("VM resumed");
    }
    return true;
}

bool Vmm::set_balloon_target_mib(uint64_t mib) {
    if (!balloon_ || mib > config_.snapshot().machine_config.mem_size_mib) return false;
    balloon_->set_target_mib(mib);
    config_.set_balloon_target_mib(mib);
    return true;
}

bool Vmm::send_ctrl_alt_del() {
    if (!started_ || ended_) return false;
    if (legacy_->i8042().send_ctrl_alt_del()) {
        log::info("Ctrl+Alt+Del sent to the guest's keyboard");
    } else {
        log::warn("Ctrl+Alt+Del dropped: the guest disabled keyboard scanning or has not read earlier key strokes");
    }
    return true;
}

std::optional<virtio::balloon::BalloonStats> Vmm::balloon_stats() const {
    if (!balloon_) return std::nullopt;
    return balloon_->stats();
}

std::optional<BalloonSize> Vmm::balloon_size() const {
    if (!balloon_) return std::nullopt;
    return BalloonSize{balloon_->target_mib(), balloon_->actual_pages()};
}

bool Vmm::set_balloon_stats_interval(uint32_t seconds) {
    if (!balloon_ || balloon_->options().stats_polling_interval_s == 0 || seconds == 0 || !started_ || ended_) {
        return false;
    }
    balloon_->set_stats_interval(seconds);
    config_.set_balloon_stats_interval(seconds);
    return true;
}

void Vmm::update_drive(const std::string& drive_id, const std::string& path_on_host) {
    const std::string where = fmt::format("drives.{}", drive_id);
    DriveConfig next = config_.drive(drive_id);
    next.path_on_host = path_on_host;
    validate(next, where);        // empty path, NUL bytes
    validate_files(next, where);  // exists, a file or block device, opens as the drive needs
    if (!started_ || ended_) {
        throw Error(fmt::format("{}: the VM is not running (a drive's image is changed at run time only)", where));
    }
    const bool ran = loop_calls_.call([this, &drive_id, &path_on_host] {
        // The drive as it is now: another swap may have run since the lookup above.
        virtio_->update_drive(config_.drive(drive_id), path_on_host);
        config_.set_drive_path(drive_id, path_on_host);
    });
    if (!ran) throw Error(fmt::format("{}: the VM ended before the drive was updated", where));
}

void Vmm::update_drive_rate_limiter(const std::string& drive_id, const RateLimiterConfig& limiter) {
    const std::string where = fmt::format("drives.{}", drive_id);
    config_.drive(drive_id);  // no such drive
    validate(limiter, where + ".rate_limiter");
    if (!started_ || ended_) throw Error(fmt::format("{}: the VM is not running", where));
    const bool ran = loop_calls_.call([this, &drive_id, &limiter] {
        virtio_->update_drive_rate_limiter(drive_id, limiter);
        config_.set_drive_rate_limiter(drive_id, limiter);
    });
    if (!ran) throw Error(fmt::format("{}: the VM ended before the rate limiter was updated", where));
}

void Vmm::update_network_rate_limiters(const std::string& iface_id, const std::optional<RateLimiterConfig>& rx,
                                       const std::optional<RateLimiterConfig>& tx) {
    const std::string where = fmt::format("network-interfaces.{}", iface_id);
    const NetworkInterfaceConfig iface = config_.network_interface(iface_id);  // no such interface
    if (rx) validate(*rx, where + ".rx_rate_limiter");
    if (tx) validate(*tx, where + ".tx_rate_limiter");
    if (iface.vhost && ((rx && limits(*rx)) || (tx && limits(*tx)))) {
        throw ConfigError(fmt::format("{}.{}: a rate limiter cannot apply with \"vhost\": true (the host kernel "
                                      "moves the frames, the VMM never sees them)",
                                      where, rx && limits(*rx) ? "rx_rate_limiter" : "tx_rate_limiter"));
    }
    if (!started_ || ended_) throw Error(fmt::format("{}: the VM is not running", where));
    const bool ran = loop_calls_.call([this, &iface_id, &rx, &tx] {
        virtio_->update_network_rate_limiters(iface_id, rx, tx);
        config_.set_network_rate_limiters(iface_id, rx, tx);
    });
    if (!ran) throw Error(fmt::format("{}: the VM ended before the rate limiters were updated", where));
}

std::string Vmm::metrics_document(bool new_window) {
    nlohmann::json j = {{"utc_timestamp_ms", utc_timestamp_ms()}};
    // The vCPUs, devices and probe exist (and stay) once started_ is set.
    if (!started_.load()) return j.dump();
    std::vector<const VcpuStats*> stats;
    for (const auto& v : vcpus_) stats.push_back(&v->stats());
    j["vcpu"] = vcpu_metrics_json(stats);
    j["event_loop"] = loop_probe_->window_json(new_window);
    j["event_loop"]["handlers"] = loop_handlers_.load(std::memory_order_relaxed);
    virtio_->add_metrics(j);
    return j.dump();
}

std::string Vmm::metrics_json() { return metrics_document(false); }

bool Vmm::flush_metrics() {
    if (!started_.load() || ended_.load() || !metrics_) return false;
    return metrics_->write_line();
}

VmExit Vmm::run() {
    Vcpu::install_kick_handler();
    // A closed console pipe must surface as a write error, not kill the VMM (and the guest).
    std::signal(SIGPIPE, SIG_IGN);

    // Before build(), which can take seconds on a loaded host: a signal that comes meanwhile
    // waits in the signal set and ends the VM as soon as the loop runs, instead of killing the
    // process with the default action (no exit status 128+N, no final metrics line).
    asio::signal_set signals(io_);
    if (options_.handle_signals) {
        signals.add(SIGINT);
        signals.add(SIGTERM);
        signals.add(SIGHUP);
        // embervm's main() holds them pending from its start: one that came before is taken now.
        const sigset_t termination = termination_signals();
        pthread_sigmask(SIG_UNBLOCK, &termination, nullptr);
        signals.async_wait([this](const boost::system::error_code& ec, int signo) {
            if (!ec) {
                log::info("received signal {} ({}), shutting down", signo, strsignal(signo));
                request_exit(VmExit{VmExit::Reason::Signal, 128 + signo, fmt::format("signal {}", signo)});
            }
        });
    }
    build();
    if (options_.attach_stdin) {
        devices::ConsoleInput& input = console_ ? static_cast<devices::ConsoleInput&>(*console_) : legacy_->serial();
        stdin_ = StdinConsole::attach(io_, input, [this] {
            request_exit(VmExit{VmExit::Reason::UserQuit, 0, "Ctrl-A x on the console"});
        });
    }
    // The loop ends by request_exit() (io_.stop()) only, not when it runs out of watches.
    auto keep_running = asio::make_work_guard(io_);

    loop_probe_->start();
    virtio_->start_watchdog([this] { return !paused_.load(); });
    if (metrics_) metrics_->start();
    {
        std::lock_guard lock(pause_mutex_);
        // A restored VM without resume_vm starts paused: its vCPUs park before their first KVM_RUN.
        if (options_.restore && !options_.restore->resume_vm) {
            for (auto& v : vcpus_) v->pause();
            paused_ = true;
        }
        // A handler that goes away ends the VM (before a vCPU can wait for a page for ever).
        if (uffd_) {
            uffd_->watch(
                [this](const std::string& why) {
                    log::error("{}", why);
                    request_exit(VmExit{VmExit::Reason::VmmError, 1, why});
                },
                options_.seccomp);
        }
        for (auto& v : vcpus_) {
            v->start(options_.seccomp);
        }
        started_ = true;
    }
    // This thread created the vCPU threads (a filter passes to threads created after it) and
    // creates no other: from here on it serves the loop under its own allowlist. If the filter
    // cannot be loaded, the VM ends with an error rather than run unfiltered.
    if (options_.seccomp) {
        try {
            seccomp::install_on_this_thread(seccomp::ThreadKind::EventLoop);
        } catch (const std::exception& e) {
            log::error("{}", e.what());
            request_exit(VmExit{VmExit::Reason::VmmError, 1, e.what()});
        }
    }
    seccomp::forbidden_call_for_test(seccomp::ThreadKind::EventLoop);
    // io_.run(), counting the handlers for the metrics. However the loop ends (a handler may
    // throw), calls still waiting for it fail instead of waiting for ever.
    struct CloseCalls {
        LoopCaller& calls;
        ~CloseCalls() { calls.close(); }
    } close_calls{loop_calls_};
    while (io_.run_one() != 0) loop_handlers_.fetch_add(1, std::memory_order_relaxed);
    loop_calls_.close();
    {
        std::lock_guard lock(pause_mutex_);
        ended_ = true;
        for (auto& v : vcpus_) v->resume();  // a paused VM that ends must not keep its vCPUs parked
    }
    shutdown_vcpus();
    virtio_->stop_watchdog();
    virtio_->log_counters();
    loop_probe_->stop();
    if (metrics_) {
        metrics_->stop();
        metrics_->write_line();  // the final counters
    }
    if (stdin_) stdin_->restore_terminal();
    signals.cancel();

    std::lock_guard<std::mutex> lock(exit_mutex_);
    VmExit result = exit_.value_or(VmExit{VmExit::Reason::VmmError, 1, "event loop ended without an exit"});
    if (auto t = legacy_->boot_timer().boot_time()) {
        log::info("guest boot time: {} us (boot-timer device)", t->count());
    }
    log::info("VM ended: {} ({}), exit status {}", to_string(result.reason), result.detail, result.status);
    return result;
}

}  // namespace embervm::vmm
