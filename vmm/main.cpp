// embervm: command-line entry point, a thin client of the library (vmm/embervm.h). Parses flags
// and the config file, then runs one VM: from the configuration alone, or configured and
// driven through the HTTP API (--api-sock).
//
// Exit status: 0 when the guest rebooted or powered off, 3 when it triple-faulted (crashed), the
// debug-exit status a test guest chose, 1 on a VMM error, 2 on a bad command line or
// configuration, 128+N on signal N.
#include <pthread.h>
#include <signal.h>

#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>

#include <fmt/format.h>

#include "vmm/api/api.h"
#include "vmm/api/api_server.h"
#include "vmm/sys/signals.h"
#include "vmm/config/cli.h"
#include "vmm/config/config.h"
#include "vmm/embervm.h"
#include "vmm/sys/log.h"
#include "vmm/sys/seccomp.h"

namespace {

using namespace embervm;

// The signal another thread sends to wake the main thread for MainThreadRunner::run. Blocked
// on every thread (main() blocks it first), taken by sigtimedwait only.
int wake_signal() { return SIGRTMIN + 1; }

// Runs work on the main thread for other threads: InstanceStart, which creates the VM's
// threads, must not run on the API thread, whose seccomp filter they would inherit.
class MainThreadRunner {
public:
    MainThreadRunner() : main_(pthread_self()) {}

    // Any thread: runs `work` on the main thread (at once when called there) and returns when
    // it is done. `work` must not throw.
    void run(const std::function<void()>& work) {
        if (pthread_equal(pthread_self(), main_) != 0) {
            work();
            return;
        }
        std::unique_lock lock(mutex_);
        done_.wait(lock, [&] { return pending_ == nullptr; });
        pending_ = &work;
        pthread_kill(main_, wake_signal());
        done_.wait(lock, [&] { return pending_ != &work; });
    }

    // The main thread: runs the work waiting, if any.
    void serve() {
        std::unique_lock lock(mutex_);
        if (pending_ == nullptr) return;
        const std::function<void()>* work = pending_;
        lock.unlock();
        (*work)();
        lock.lock();
        pending_ = nullptr;
        done_.notify_all();
    }

private:
    pthread_t main_;
    std::mutex mutex_;
    std::condition_variable done_;
    const std::function<void()>* pending_ = nullptr;
};

// The main thread's own filter, once it creates no more threads (the VM runs).
void filter_main_thread(const VmOptions& options) {
    if (options.seccomp) seccomp::install_on_this_thread(seccomp::ThreadKind::Main);
    seccomp::forbidden_call_for_test(seccomp::ThreadKind::Main);
}

// Runs the VM from the configuration; the process's console is the guest's.
int run_without_api(const vmm::VmConfig& config, VmOptions options) {
    options.handle_signals = true;
    Vm vm(config, options);
    vm.start();
    filter_main_thread(options);
    return vm.wait().status;  // the VMM logged how the VM ended
}

// Runs the VM saved in the --restore snapshot; the process's console is the guest's.
int run_restored(const vmm::CliOptions& cli, VmOptions options) {
    options.handle_signals = true;
    RestoreOptions restore;
    restore.resume_vm = true;
    if (cli.restore_uffd) restore.mem_backend = MemBackend::Uffd;
    const std::unique_ptr<Vm> vm =
        Vm::restore({*cli.restore, cli.restore_uffd.value_or(cli.restore_mem.value_or(""))}, restore, options);
    vm->start();
    filter_main_thread(options);
    return vm->wait().status;
}

// Serves the API until the VM ends (or a signal comes). If the configuration has a kernel,
// the VM starts at once, as Firecracker does with --config-file and an API socket.
int run_with_api(const vmm::CliOptions& cli, const vmm::VmConfig& config, const VmOptions& options) {
    // Signals are taken here, by sigtimedwait, in every state (before InstanceStart too); main()
    // blocked them before any thread existed, so every thread has them blocked.
    sigset_t signals = vmm::termination_signals();
    sigaddset(&signals, wake_signal());
    MainThreadRunner runner;

    vmm::ApiControllerOptions controller_options;
    controller_options.vm_options = options;
    if (cli.instance_id) controller_options.instance_id = *cli.instance_id;
    controller_options.run_instance_start = [&runner](const std::function<void()>& work) { runner.run(work); };
    vmm::ApiController controller(config, controller_options);
    std::unique_ptr<vmm::ApiServer> server_ptr;
    try {
        vmm::ApiServerOptions server_options;
        server_options.seccomp = options.seccomp;
        server_ptr = std::make_unique<vmm::ApiServer>(
            *cli.api_sock, [&controller](const vmm::ApiRequest& r) { return controller.handle(r); }, server_options);
    } catch (const Error& e) {
        // A path that cannot be served on (too long, a file in the way, no such directory, in
        // use) is a bad command line.
        throw vmm::CliError(fmt::format("--api-sock: {}", e.what()));
    }
    vmm::ApiServer& server = *server_ptr;
    server.start();
    if (config.boot_source) controller.start_instance();

    bool main_filtered = false;
    for (;;) {
        const timespec tick{0, 20'000'000};
        const int sig = sigtimedwait(&signals, nullptr, &tick);
        runner.serve();
        if (!main_filtered && controller.vm()) {
            filter_main_thread(options);
            main_filtered = true;
        }
        if (sig > 0 && sig != wake_signal()) {
            log::info("signal {} ({}): ending the VM", sig, strsignal(sig));
            if (auto vm = controller.vm()) {
                vm->end_on_signal(sig);
                vm->wait();
            }
            server.stop();
            return 128 + sig;
        }
        if (auto vm = controller.vm(); vm && vm->state() == VmState::Ended) {
            const int status = vm->wait().status;
            server.stop();
            return status;
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    // SIGINT, SIGTERM and SIGHUP are held pending from the first instruction on, so that one that
    // comes while the VMM starts still ends it cleanly (status 128+N) instead of killing it:
    // the run loop (Vmm::run) or the API loop (sigtimedwait) takes them. Every thread inherits
    // the mask.
    // The API's wake signal (wake_signal()) likewise, for the API loop's sigtimedwait.
    sigset_t held = vmm::termination_signals();
    sigaddset(&held, wake_signal());
    pthread_sigmask(SIG_BLOCK, &held, nullptr);

    vmm::CliOptions cli;
    vmm::VmConfig config;
    try {
        cli = vmm::parse_cli(argc, argv);
        if (cli.help) {
            fmt::print("{}", vmm::usage_text());
            return 0;
        }
        if (cli.version) {
            fmt::print("embervm {}\n", EMBERVM_VERSION);
            return 0;
        }
        if (cli.log_level) {
            log::set_level(*cli.log_level);
        }
        config = vmm::resolve_config(cli);
        vmm::apply_cli_logging(cli, config);  // the config's logger section, then the flags
    } catch (const std::exception& e) {
        fmt::print(stderr, "embervm: {}\n", e.what());
        return 2;
    }

    try {
        VmOptions options;
        options.serial_out = cli.serial_out;
        options.prefer_pvh = cli.boot_protocol != vmm::BootProtocol::Linux64;
        options.console = true;
        options.seccomp = !cli.no_seccomp;
        if (cli.restore) return run_restored(cli, options);
        return cli.api_sock ? run_with_api(cli, config, options) : run_without_api(config, options);
    } catch (const vmm::ConfigError& e) {
        // Found only when the VM is built (e.g. a file that is not a kernel image).
        fmt::print(stderr, "embervm: {}\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        log::error("{}", e.what());
        return 1;
    }
}
