// The virtual machine monitor: VM construction, boot, event loop and orderly shutdown.
#include "vmm/vmm.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <future>

#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "boot/boot.h"
#include "boot/layout.h"
#include "devices/boot_timer.h"
#include "virtio/balloon/balloon_device.h"
#include "devices/debug_exit.h"
#include "devices/i8042.h"
#include "devices/serial.h"
#include "memory/guest_memory.h"
#include "devices/bus.h"
#include "vmm/config/config.h"
#include "vmm/kvm/cpu_setup.h"
#include "vmm/sys/error.h"
#include "vmm/sys/eventfd.h"
#include "vmm/kvm/kvm.h"
#include "vmm/sys/log.h"
#include "vmm/metrics.h"
#include "vmm/terminal.h"
#include "vmm/kvm/vcpu.h"
#include "vmm/device_manager.h"

namespace embervm::vmm {

namespace asio = boost::asio;

namespace {
constexpr uint64_t kTssAddr = 0xfffbd000;
constexpr uint64_t kIdentityMapAddr = 0xfffbc000;
constexpr uint8_t kConsoleEscape = 0x01;  // Ctrl-A, then 'x' quits
constexpr const char* kDefaultCmdline = "console=ttyS0 reboot=k panic=1";

// Writes all bytes to fd, retrying on EINTR and partial writes; a non-blocking terminal that
// is full is waited on so console output is never dropped.
void write_all(int fd, std::span<const uint8_t> data) {
    size_t off = 0;
    while (off < data.size()) {
        const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
        if (n > 0) {
            off += static_cast<size_t>(n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            ::usleep(1000);
        } else {
            return;  // EOF/EPIPE on the console: drop, the guest must not stall on it
        }
    }
}
}  // namespace

struct Vmm::StdinState {
    explicit StdinState(asio::io_context& io, int fd) : descriptor(io, fd), retry(io), terminal(STDIN_FILENO) {}
    asio::posix::stream_descriptor descriptor;
    asio::steady_timer retry;
    RawTerminal terminal;
    std::array<uint8_t, 512> buffer{};
    std::vector<uint8_t> pending;  // read from the host but not yet accepted by the UART
};

Vmm::Vmm(VmConfig config, RunOptions options) : config_(std::move(config)), options_(std::move(options)) {}

Vmm::~Vmm() {
    shutdown_vcpus();
    if (serial_out_fd_ >= 0 && serial_out_fd_ != STDOUT_FILENO) {
        ::close(serial_out_fd_);
    }
}

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

void Vmm::create_memory() {
    const uint64_t bytes = config_.machine_config.mem_size_mib << 20;
    memory_ = std::make_unique<memory::GuestMemory>(boot::guest_memory_ranges(bytes));
    uint32_t slot = 0;
    for (const auto& region : memory_->regions()) {
        vm_->set_user_memory_region(slot++, region.start().value, region.size(), region.host_base());
    }
}

void Vmm::create_devices() {
    pio_bus_ = std::make_unique<Bus>("pio");
    mmio_bus_ = std::make_unique<Bus>("mmio");

    auto com1_irq = std::make_shared<EventFdIrq>();
    vm_->register_irqfd(com1_irq->fd(), boot::layout::kCom1Irq);
    irqs_.push_back(com1_irq);

    if (options_.serial_out) {
        serial_out_fd_ = ::open(options_.serial_out->c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (serial_out_fd_ < 0) {
            const int err = errno;
            throw ConfigError(fmt::format("--serial-out: cannot open {}: {}", *options_.serial_out, std::strerror(err)));
        }
    } else {
        serial_out_fd_ = STDOUT_FILENO;
    }
    const int out_fd = serial_out_fd_;
    serial_ = std::make_shared<devices::Serial>(com1_irq, [out_fd](std::span<const uint8_t> bytes) {
        write_all(out_fd, bytes);
    });
    pio_bus_->insert(serial_, boot::layout::kCom1Port, 8);

    auto kbd_irq = std::make_shared<EventFdIrq>();
    vm_->register_irqfd(kbd_irq->fd(), boot::layout::kI8042KbdIrq);
    irqs_.push_back(kbd_irq);
    i8042_ = std::make_shared<devices::I8042>(
        [this] { request_exit(VmExit{VmExit::Reason::GuestReset, 0, "i8042 reset"}); }, kbd_irq);
    pio_bus_->insert(i8042_, boot::layout::kI8042Port, devices::I8042::kSize);
    pio_bus_->insert(std::make_shared<devices::DebugExit>([this](uint8_t status) {
                         request_exit(VmExit{VmExit::Reason::DebugExit, status,
                                             fmt::format("debug-exit port written with {}", status)});
                     }),
                     boot::layout::kDebugExitPort, devices::DebugExit::kSize);
    boot_timer_ = std::make_shared<devices::BootTimer>(log::process_start());
    mmio_bus_->insert(boot_timer_, boot::layout::kBootTimerAddr, 0x1000);

    virtio_ = std::make_unique<DeviceManager>(*vm_, *mmio_bus_, io_, *memory_);
    virtio_->attach_drives(config_.drives);
    virtio_->attach_network_interfaces(config_.network_interfaces);
    if (config_.balloon) {
        balloon_ = virtio_->attach_balloon(*config_.balloon);
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
    if (!balloon_ || mib > config_.machine_config.mem_size_mib) return false;
    balloon_->set_target_mib(mib);
    return true;
}

bool Vmm::send_ctrl_alt_del() {
    if (!started_ || ended_) return false;
    if (i8042_->send_ctrl_alt_del()) {
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
    return true;
}

void Vmm::update_drive(const std::string& drive_id, const std::string& path_on_host) {
    const std::string where = fmt::format("drives.{}", drive_id);
    DriveConfig drive;
    {
        std::lock_guard lock(config_mutex_);
        const auto it = std::find_if(config_.drives.begin(), config_.drives.end(),
                                     [&](const DriveConfig& d) { return d.drive_id == drive_id; });
        if (it == config_.drives.end()) {
            throw ConfigError(fmt::format("{}: no such drive", where));
        }
        drive = *it;
    }
    drive.path_on_host = path_on_host;
    validate(drive, where);        // empty path, NUL bytes
    validate_files(drive, where);  // exists, a file or block device, opens as the drive needs
    if (!started_ || ended_) {
        throw Error(fmt::format("{}: the VM is not running (a drive's image is changed at run time only)", where));
    }
    // The device, its completion watch and the config change on the event-loop thread, the
    // one that serves the device's completions.
    const auto work = [this, drive] {
        virtio_->update_drive(drive);
        std::lock_guard lock(config_mutex_);
        for (DriveConfig& d : config_.drives) {
            if (d.drive_id == drive.drive_id) d.path_on_host = drive.path_on_host;
        }
    };
    if (io_.get_executor().running_in_this_thread()) {
        work();  // called from an event-loop handler: waiting for the loop would deadlock
        return;
    }
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> result = done->get_future();
    asio::post(io_, [work, done] {
        try {
            work();
            done->set_value();
        } catch (...) {
            done->set_exception(std::current_exception());
        }
    });
    // The loop may end (request_exit) before it runs the work; then it never will.
    while (result.wait_for(std::chrono::milliseconds(20)) != std::future_status::ready) {
        if (ended_ && result.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
            throw Error(fmt::format("{}: the VM ended before the drive was updated", where));
        }
    }
    result.get();  // rethrows the loop's error
}


void Vmm::load_guest() {
    const auto& source = *config_.boot_source;
    const boot::FileImage kernel(source.kernel_image_path, "kernel image");
    std::optional<boot::FileImage> initrd;
    if (source.initrd_path) {
        initrd.emplace(*source.initrd_path, "initrd");
    }
    cmdline_ = source.boot_args.value_or(kDefaultCmdline);
    if (const std::string extra = virtio_->kernel_cmdline_args(); !extra.empty()) {
        cmdline_ += (cmdline_.empty() ? "" : " ") + extra;
    }

    log::debug("kernel and initrd read ({} + {} bytes) at {} us", kernel.bytes().size(), initrd ? initrd->bytes().size() : 0,
               log::micros_since_start());
    boot::BootOptions opts;
    opts.kernel = kernel.bytes();
    if (initrd) {
        opts.initrd = initrd->bytes();
    }
    opts.cmdline = cmdline_;
    opts.vcpu_count = config_.machine_config.vcpu_count;
    opts.prefer_pvh = options_.prefer_pvh;
    // Everything setup_boot() rejects (not a kernel, truncated or corrupt image, an initrd or
    // command line that does not fit) is bad user input: reported as a configuration error.
    boot::BootSetup setup;
    try {
        setup = boot::setup_boot(*memory_, opts);
    } catch (const ConfigError&) {
        throw;
    } catch (const std::exception& e) {
        throw ConfigError(e.what());
    }
    log::info("kernel {} loaded ({}), entry {:#x}, command line \"{}\"", source.kernel_image_path,
              setup.protocol == boot::EntryProtocol::Pvh ? "PVH entry" : "64-bit Linux boot protocol", setup.entry,
              cmdline_);

    KvmVcpu& bsp = vcpus_.front()->kvm();
    kvm_regs regs{};
    kvm_sregs sregs = bsp.get_sregs();
    boot::setup_boot_registers(setup, regs, sregs);
    bsp.set_sregs(sregs);
    bsp.set_regs(regs);
}

void Vmm::create_vcpus() {
    const auto supported = kvm_->supported_cpuid();
    const uint32_t count = config_.machine_config.vcpu_count;
    for (uint32_t i = 0; i < count; i++) {
        auto kvcpu = std::make_unique<KvmVcpu>(*kvm_, *vm_, i);
        configure_vcpu(*kvcpu, supported, count);
        vcpus_.push_back(std::make_unique<Vcpu>(std::move(kvcpu), *pio_bus_, *mmio_bus_, *memory_,
                                                [this](VmExit e) { request_exit(std::move(e)); }));
    }
}

void Vmm::build() {
    if (!config_.boot_source) {
        throw Error("no boot source configured");
    }
    kvm_ = std::make_unique<KvmSystem>();
    vm_ = std::make_unique<KvmVm>(*kvm_);
    vm_->set_tss_addr(kTssAddr);
    vm_->set_identity_map_addr(kIdentityMapAddr);
    vm_->create_irqchip();
    vm_->create_pit2();
    if (vm_->check_extension(KVM_CAP_EXIT_ON_EMULATION_FAILURE) != 0) {
        vm_->enable_cap(KVM_CAP_EXIT_ON_EMULATION_FAILURE, 1);
    } else {
        log::warn("KVM_CAP_EXIT_ON_EMULATION_FAILURE is not available: instructions KVM cannot emulate stop the VM");
    }
    log::debug("KVM VM created at {} us", log::micros_since_start());
    create_memory();
    create_devices();
    log::debug("memory and devices ready at {} us", log::micros_since_start());
    create_vcpus();
    log::debug("{} vCPUs created at {} us", vcpus_.size(), log::micros_since_start());
    load_guest();
    log::debug("guest loaded at {} us", log::micros_since_start());
    loop_probe_ = std::make_unique<EventLoopProbe>(io_);
    if (config_.metrics) {
        try {
            metrics_ = std::make_unique<MetricsWriter>(io_, config_.metrics->metrics_path,
                                                       std::chrono::seconds(config_.metrics->interval_s),
                                                       [this] { return metrics_document(true); });
        } catch (const Error& e) {
            throw ConfigError(fmt::format("metrics.metrics_path: {}", e.what()));
        }
    }
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

void Vmm::handle_console_input(const uint8_t* data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        const uint8_t c = data[i];
        if (escape_pending_) {
            escape_pending_ = false;
            if (c == 'x' || c == 'X') {
                request_exit(VmExit{VmExit::Reason::UserQuit, 0, "Ctrl-A x on the console"});
                return;
            }
            if (c != kConsoleEscape) {
                stdin_->pending.push_back(kConsoleEscape);
            }
        } else if (c == kConsoleEscape && stdin_->terminal.active()) {
            escape_pending_ = true;
            continue;
        }
        stdin_->pending.push_back(c);
    }
}

void Vmm::read_stdin() {
    // Offer what the UART has not taken yet; while its buffer is full, poll again shortly
    // instead of reading more from the host (back-pressure, no bytes dropped).
    if (!stdin_->pending.empty()) {
        const size_t taken = serial_->enqueue_input(stdin_->pending);
        stdin_->pending.erase(stdin_->pending.begin(), stdin_->pending.begin() + static_cast<long>(taken));
        if (!stdin_->pending.empty()) {
            stdin_->retry.expires_after(std::chrono::milliseconds(10));
            stdin_->retry.async_wait([this](const boost::system::error_code& ec) {
                if (!ec) read_stdin();
            });
            return;
        }
    }
    stdin_->descriptor.async_read_some(asio::buffer(stdin_->buffer),
                                       [this](const boost::system::error_code& ec, size_t n) {
                                           if (ec) {
                                               log::debug("stdin closed: {}", ec.message());
                                               return;
                                           }
                                           handle_console_input(stdin_->buffer.data(), n);
                                           read_stdin();
                                       });
}

void Vmm::start_stdin() {
    struct stat st{};
    if (!options_.attach_stdin || ::fstat(STDIN_FILENO, &st) < 0) {
        return;
    }
    // epoll cannot watch regular files (or /dev/null); only terminals, pipes and sockets feed the guest.
    const bool pollable = S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || ::isatty(STDIN_FILENO) != 0;
    if (!pollable) {
        return;
    }
    const int fd = ::fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) {
        throw sys_error("dup of stdin");
    }
    stdin_ = std::make_unique<StdinState>(io_, fd);
    read_stdin();
}

VmExit Vmm::run() {
    Vcpu::install_kick_handler();
    // A closed console pipe must surface as a write error, not kill the VMM (and the guest).
    std::signal(SIGPIPE, SIG_IGN);
    build();

    asio::signal_set signals(io_);
    if (options_.handle_signals) {
        signals.add(SIGINT);
        signals.add(SIGTERM);
        signals.add(SIGHUP);
        signals.async_wait([this](const boost::system::error_code& ec, int signo) {
            if (!ec) {
                log::info("received signal {} ({}), shutting down", signo, strsignal(signo));
                request_exit(VmExit{VmExit::Reason::Signal, 128 + signo, fmt::format("signal {}", signo)});
            }
        });
    }
    start_stdin();
    // The loop ends by request_exit() (io_.stop()) only, not when it runs out of watches.
    auto keep_running = asio::make_work_guard(io_);

    loop_probe_->start();
    virtio_->start_watchdog([this] { return !paused_.load(); });
    if (metrics_) metrics_->start();
    {
        std::lock_guard lock(pause_mutex_);
        for (auto& v : vcpus_) {
            v->start();
        }
        started_ = true;
    }
    // io_.run(), counting the handlers for the metrics.
    while (io_.run_one() != 0) loop_handlers_.fetch_add(1, std::memory_order_relaxed);
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
    if (stdin_) {
        stdin_->terminal.restore();
    }
    signals.cancel();

    std::lock_guard<std::mutex> lock(exit_mutex_);
    VmExit result = exit_.value_or(VmExit{VmExit::Reason::VmmError, 1, "event loop ended without an exit"});
    if (auto t = boot_timer_->boot_time()) {
        log::info("guest boot time: {} us (boot-timer device)", t->count());
    }
    log::info("VM ended: {} ({}), exit status {}", to_string(result.reason), result.detail, result.status);
    return result;
}

}  // namespace embervm::vmm
