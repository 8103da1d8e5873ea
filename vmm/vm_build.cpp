// Builds the VM from its configuration: the KVM VM, guest memory, devices, vCPUs and the kernel.
#include <algorithm>
#include <optional>

#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "boot/boot.h"
#include "boot/layout.h"
#include "devices/bus.h"
#include "memory/guest_memory.h"
#include "virtio/balloon/balloon_device.h"
#include "virtio/console/console_device.h"
#include "virtio/console/fd_sink.h"
#include "virtio/vsock/vsock_device.h"
#include "vmm/console.h"
#include "vmm/kvm/cpu_setup.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/vcpu.h"
#include "vmm/legacy_devices.h"
#include "vmm/metrics.h"
#include "vmm/snapshot/memory_file.h"
#include "vmm/snapshot/uffd_backend.h"
#include "vmm/sys/error.h"
#include "vmm/sys/log.h"
#include "vmm/device_manager.h"
#include "vmm/vmm.h"

namespace embervm::vmm {

namespace {
constexpr uint64_t kTssAddr = 0xfffbd000;
constexpr uint64_t kIdentityMapAddr = 0xfffbc000;
constexpr const char* kDefaultCmdline = "console=ttyS0 reboot=k panic=1";
constexpr const char* kDefaultCmdlineVirtioConsole = "console=hvc0 reboot=k panic=1";
}  // namespace

void Vmm::build() {
    const VmConfig config = config_.snapshot();
    if (!config.boot_source && !options_.restore) {
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
    create_memory(config);
    create_devices(config);
    log::debug("memory and devices ready at {} us", log::micros_since_start());
    create_vcpus(config);
    log::debug("{} vCPUs created at {} us", vcpus_.size(), log::micros_since_start());
    if (options_.restore) {
        restore_state(*options_.restore);
        log::debug("state restored from {} at {} us", options_.restore->snapshot_path, log::micros_since_start());
    } else {
        load_guest(config);
        log::debug("guest loaded at {} us", log::micros_since_start());
    }
    loop_probe_ = std::make_unique<EventLoopProbe>(io_);
    if (config.metrics) {
        try {
            metrics_ = std::make_unique<MetricsWriter>(io_, config.metrics->metrics_path,
                                                       std::chrono::seconds(config.metrics->interval_s),
                                                       [this] { return metrics_document(true); });
        } catch (const Error& e) {
            throw ConfigError(fmt::format("metrics.metrics_path: {}", e.what()));
        }
    }
}

void Vmm::create_memory(const VmConfig& config) {
    const uint64_t bytes = config.machine_config.mem_size_mib << 20;
    // A vhost-user backend maps guest RAM itself: memfds, shared. Without one, private
    // anonymous memory as always.
    const bool shared = !config.fs.empty() || std::any_of(config.drives.begin(), config.drives.end(),
                                                          [](const DriveConfig& d) { return d.socket.has_value(); });
    memory_ = std::make_unique<memory::GuestMemory>(
        boot::guest_memory_ranges(bytes),
        shared ? memory::MemoryBacking::SharedMemfd : memory::MemoryBacking::Private);
    if (shared) log::info("guest memory: {} MiB in memfds, shared with vhost-user backends", bytes >> 20);
    // A restore maps the memory file in place of the fresh mapping (vmm/snapshot/memory_file.h),
    // or hands the empty mapping's page faults to the Uffd handler (vmm/snapshot/uffd_backend.h):
    // before KVM is given the addresses, and nothing of it is read now.
    if (options_.restore && options_.restore->mem_backend == MemBackendType::Uffd) {
        uffd_ = std::make_unique<snapshot::UffdBackend>(*memory_, options_.restore->mem_file_path);
    } else if (options_.restore) {
        snapshot::map_memory_file(*memory_, options_.restore->mem_file_path);
    }
    // track_dirty_pages: KVM logs the pages the guest writes, for Diff snapshots.
    const uint32_t flags = config.machine_config.track_dirty_pages ? KVM_MEM_LOG_DIRTY_PAGES : 0;
    uint32_t slot = 0;
    for (const auto& region : memory_->regions()) {
        vm_->set_user_memory_region(slot++, region.start().value, region.size(), region.host_base(), flags);
    }
}

void Vmm::create_devices(const VmConfig& config) {
    pio_bus_ = std::make_unique<Bus>("pio");
    mmio_bus_ = std::make_unique<Bus>("mmio");

    console_out_ = std::make_unique<ConsoleOutput>(options_.serial_out);
    legacy_ = std::make_unique<LegacyDevices>(
        *vm_, *pio_bus_, *mmio_bus_, [out = console_out_.get()](std::span<const uint8_t> bytes) { out->write(bytes); },
        [this](VmExit e) { request_exit(std::move(e)); }, config.machine_config.acpi);

    virtio_ = std::make_unique<DeviceManager>(*vm_, *mmio_bus_, io_, *memory_);
    if (config.enable_pci) virtio_->enable_pci(*pio_bus_);
    virtio_->attach_drives(config.drives);
    virtio_->attach_network_interfaces(config.network_interfaces);
    if (config.balloon) {
        balloon_ = virtio_->attach_balloon(*config.balloon);
    }
    if (config.vsock) {
        vsock_ = virtio_->attach_vsock(*config.vsock);
    }
    virtio_->attach_fs(config.fs);
    if (config.console && config.console->type == ConsoleType::Virtio) {
        // The same output as the UART's: stdout or the --serial-out file.
        console_ = virtio_->attach_console(std::make_unique<virtio::console::FdConsoleSink>(
            io_, console_out_->fd(), options_.serial_out.value_or("stdout")));
    }
}

void Vmm::create_vcpus(const VmConfig& config) {
    const auto supported = kvm_->supported_cpuid();
    const uint32_t count = config.machine_config.vcpu_count;
    // KVM's in-kernel LAPIC (always used here) emulates the TSC-deadline mode when this says so.
    const bool tsc_deadline = vm_->check_extension(KVM_CAP_TSC_DEADLINE_TIMER) != 0;
    for (uint32_t i = 0; i < count; i++) {
        auto kvcpu = std::make_unique<KvmVcpu>(*kvm_, *vm_, i);
        configure_vcpu(*kvcpu, supported, count, tsc_deadline);
        vcpus_.push_back(std::make_unique<Vcpu>(std::move(kvcpu), *pio_bus_, *mmio_bus_, *memory_,
                                                [this](VmExit e) { request_exit(std::move(e)); }));
    }
}

void Vmm::load_guest(const VmConfig& config) {
    const auto& source = *config.boot_source;
    const boot::FileImage kernel(source.kernel_image_path, "kernel image");
    std::optional<boot::FileImage> initrd;
    if (source.initrd_path) {
        initrd.emplace(*source.initrd_path, "initrd");
    }
    cmdline_ = source.boot_args.value_or(console_ ? kDefaultCmdlineVirtioConsole : kDefaultCmdline);
    // The `virtio_mmio.device=` entries stay on the command line with ACPI on: a kernel without
    // CONFIG_ACPI (the project's own minimal kernel) or booted with acpi=off finds the devices
    // only there. A kernel with both CONFIG_ACPI and CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES creates
    // two platform devices per window (LNRO0005:NN from the DSDT, virtio-mmio.N from the
    // command line), and that is harmless (Linux 6.1, drivers/virtio/virtio_mmio.c): the
    // driver's probe maps the window with devm_platform_ioremap_resource(), which claims it
    // (request_mem_region, IORESOURCE_BUSY); whichever of the two is probed second fails there
    // with -EBUSY ("can't request region for resource") before it touches a register, so each
    // device is driven once, and only one probe error per device is logged. Kernels without
    // CMDLINE_DEVICES (Debian's) ignore the parameter.
    if (const std::string extra = virtio_->kernel_cmdline_args(); !extra.empty()) {
        cmdline_ += (cmdline_.empty() ? "" : " ") + extra;
    }

    log::debug("kernel and initrd read ({} + {} bytes) at {} us", kernel.bytes().size(), initrd ? initrd->bytes().size() : 0,
               log::micros_since_start());
    boot::BootOptions opts;
    opts.kernel = kernel.bytes();
    opts.kernel_fd = kernel.fd();
    if (initrd) {
        opts.initrd = initrd->bytes();
        opts.initrd_fd = initrd->fd();
    }
    opts.cmdline = cmdline_;
    opts.vcpu_count = config.machine_config.vcpu_count;
    opts.prefer_pvh = options_.prefer_pvh;
    if (config.machine_config.acpi) {
        boot::acpi::AcpiLayout acpi;
        for (const auto& w : virtio_->windows()) acpi.virtio.push_back({w.base, w.size, w.gsi});
        acpi.vcpus = config.machine_config.vcpu_count;
        acpi.com1 = true;   // LegacyDevices: always there
        acpi.i8042 = true;
        if (virtio_->pci_enabled()) acpi.pci = boot::acpi::PciRootInfo{};  // boot::layout's BAR window
        opts.acpi = acpi;
    }
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
    if (setup.rsdp_addr != 0) {
        log::debug("ACPI tables written, RSDP at {:#x}", setup.rsdp_addr);
    } else {
        log::debug("no ACPI tables (machine-config.acpi is false)");
    }

    KvmVcpu& bsp = vcpus_.front()->kvm();
    kvm_regs regs{};
    kvm_sregs sregs = bsp.get_sregs();
    boot::setup_boot_registers(setup, regs, sregs);
    bsp.set_sregs(sregs);
    bsp.set_regs(regs);
}

}  // namespace embervm::vmm
