// Snapshots of a Vmm: creating one from a paused VM, and restoring one into a VM built from the
// snapshot's configuration (instead of loading a kernel). The file format is vmm/snapshot/; the
// KVM state vmm/kvm/vcpu_state.h and vm_state.h; the devices encode their own.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "devices/i8042.h"
#include "devices/serial.h"
#include "memory/guest_memory.h"
#include "vmm/config/from_json.h"
#include "vmm/config/to_json.h"
#include "vmm/config/validate.h"
#include "vmm/device_manager.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/vcpu.h"
#include "vmm/kvm/vcpu_state.h"
#include "vmm/kvm/vm_state.h"
#include "vmm/legacy_devices.h"
#include "vmm/sys/error.h"
#include "vmm/sys/log.h"
#include "vmm/vmm.h"

namespace embervm::vmm {

namespace {

using snapshot::Section;
using snapshot::SectionKind;
using snapshot::SnapshotContents;
using snapshot::SnapshotError;

constexpr uint32_t kCpuIdentityVersion = 1;

std::vector<uint8_t> cpu_identity(const std::vector<kvm_cpuid_entry2>& entries) {
    StateWriter w;
    w.put<uint32_t>(kCpuIdentityVersion);
    w.put<uint32_t>(static_cast<uint32_t>(entries.size()));
    for (const kvm_cpuid_entry2& e : entries) w.put_struct(e);
    return w.take();
}

// The first difference between the CPUID the snapshot's guest was given and this one's, or "".
std::string cpu_difference(std::span<const uint8_t> saved_bytes, const std::vector<kvm_cpuid_entry2>& now) {
    StateReader r(saved_bytes, "snapshot cpu identity");
    r.get_version(kCpuIdentityVersion);
    const auto count = r.get<uint32_t>("entries");
    std::vector<kvm_cpuid_entry2> saved;
    for (uint32_t i = 0; i < count; i++) saved.push_back(r.get_struct<kvm_cpuid_entry2>("entry"));
    r.expect_end();
    auto same_leaf = [](const kvm_cpuid_entry2& a, const kvm_cpuid_entry2& b) {
        return a.function == b.function && a.index == b.index;
    };
    for (const kvm_cpuid_entry2& s : saved) {
        const auto it = std::find_if(now.begin(), now.end(), [&](const kvm_cpuid_entry2& n) { return same_leaf(s, n); });
        if (it == now.end()) return fmt::format("CPUID leaf {:#x} index {} is gone", s.function, s.index);
        if (s.eax != it->eax || s.ebx != it->ebx || s.ecx != it->ecx || s.edx != it->edx) {
            return fmt::format("CPUID leaf {:#x} index {} was {:08x} {:08x} {:08x} {:08x}, is {:08x} {:08x} {:08x} {:08x}",
                               s.function, s.index, s.eax, s.ebx, s.ecx, s.edx, it->eax, it->ebx, it->ecx, it->edx);
        }
    }
    if (now.size() != saved.size()) return fmt::format("{} CPUID leaves where the snapshot has {}", now.size(), saved.size());
    return "";
}

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

uint64_t realtime_ns() {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

}  // namespace

RestoreSource read_restore_source(const std::string& snapshot_path, const std::string& mem_file_path, bool resume_vm,
                                  MemBackendType mem_backend) {
    RestoreSource source;
    source.snapshot_path = snapshot_path;
    source.mem_backend = mem_backend;
    source.mem_file_path = mem_file_path;
    source.resume_vm = resume_vm;
    source.contents = snapshot::read_snapshot_file(snapshot_path);
    const Section& config = source.contents.section(SectionKind::Config, "vm-config");
    try {
        source.config = parse_config_json({reinterpret_cast<const char*>(config.payload.data()), config.payload.size()});
    } catch (const std::exception& e) {
        throw SnapshotError(fmt::format("snapshot {}: its configuration: {}", snapshot_path, e.what()));
    }
    const uint64_t mem_bytes = source.config.machine_config.mem_size_mib << 20;
    if (mem_bytes != source.contents.header.mem_size) {
        throw SnapshotError(fmt::format("snapshot {}: its header says {} bytes of memory, its configuration {} MiB",
                                        snapshot_path, source.contents.header.mem_size,
                                        source.config.machine_config.mem_size_mib));
    }
    if (source.contents.sections_of(SectionKind::Vcpu).size() != source.config.machine_config.vcpu_count) {
        throw SnapshotError(fmt::format("snapshot {}: {} vCPU sections for {} vCPUs", snapshot_path,
                                        source.contents.sections_of(SectionKind::Vcpu).size(),
                                        source.config.machine_config.vcpu_count));
    }
    struct stat st {};
    if (mem_backend == MemBackendType::Uffd) {
        // The handler maps the memory file itself; here only its socket must be there.
        if (::stat(mem_file_path.c_str(), &st) != 0) {
            if (errno == ENOENT) {
                throw Error(fmt::format("mem_backend.backend_path: {}: no such socket (start the page-fault handler "
                                        "first)", mem_file_path));
            }
            throw sys_error(fmt::format("mem_backend.backend_path: {}: the page-fault handler's socket", mem_file_path));
        }
        if (!S_ISSOCK(st.st_mode)) {
            throw Error(fmt::format("mem_backend.backend_path: {}: not a Unix socket", mem_file_path));
        }
        return source;
    }
    if (::stat(mem_file_path.c_str(), &st) != 0) throw sys_error(fmt::format("memory file {}: cannot open", mem_file_path));
    if (static_cast<uint64_t>(st.st_size) != mem_bytes) {
        throw Error(fmt::format("memory file {}: {} bytes, the snapshot's guest memory is {} bytes", mem_file_path,
                                st.st_size, mem_bytes));
    }
    return source;
}

SnapshotSummary Vmm::create_snapshot(const SnapshotRequest& request) {
    const auto t0 = std::chrono::steady_clock::now();
    std::lock_guard lock(pause_mutex_);
    if (!started_ || ended_) throw Error("snapshot: the VM is not running");
    if (!paused_) throw Error("snapshot: the VM is running: pause it first (PATCH /vm {\"state\": \"Paused\"})");
    const VmConfig config = config_.snapshot();
    if (request.type == snapshot::SnapshotType::Diff && !config.machine_config.track_dirty_pages) {
        throw ConfigError("snapshot_type: Diff needs machine-config.track_dirty_pages");
    }

    SnapshotContents c;
    c.embervm_version = EMBERVM_VERSION;
    c.header = {request.type, memory_->total_size(), realtime_ns()};
    c.sections.push_back({SectionKind::Config, "vm-config", bytes_of(to_json(config).dump())});
    c.sections.push_back({SectionKind::CpuIdentity, "cpuid", cpu_identity(vcpus_.front()->kvm().get_cpuid())});
    // The devices first: they complete what is in flight (which writes guest memory and may
    // raise interrupts) before the irqchip and memory are saved.
    const std::vector<DeviceState> devices = virtio_->pause_and_save_devices();
    struct ResumeDevices {
        DeviceManager& dm;
        ~ResumeDevices() { dm.resume_devices(); }
    } resume_devices{*virtio_};
    for (const DeviceState& d : devices) c.sections.push_back({SectionKind::VirtioDevice, d.id, d.bytes});
    if (auto root = virtio_->save_pci_root()) c.sections.push_back({SectionKind::PciRoot, "pci-root", std::move(*root)});
    {
        StateWriter w;
        encode_vm_state(w, save_vm_state(*vm_));
        c.sections.push_back({SectionKind::Vm, "vm", w.take()});
    }
    const std::vector<uint32_t> msrs = saved_msr_indices(*kvm_, vcpus_.front()->kvm());
    for (auto& v : vcpus_) {
        StateWriter w;
        encode_vcpu_state(w, save_vcpu_state(*vm_, v->kvm(), msrs));
        c.sections.push_back({SectionKind::Vcpu, fmt::format("vcpu{}", v->kvm().id()), w.take()});
    }
    {
        StateWriter w;
        legacy_->serial().save_state(w);
        c.sections.push_back({SectionKind::LegacyDevice, "serial", w.take()});
    }
    {
        StateWriter w;
        legacy_->i8042().save_state(w);
        c.sections.push_back({SectionKind::LegacyDevice, "i8042", w.take()});
    }

    // The dirty log is read (and so cleared) for a Full snapshot too: the next Diff holds what
    // changed since this one.
    std::vector<std::vector<uint64_t>> dirty;
    if (config.machine_config.track_dirty_pages) {
        uint32_t slot = 0;
        for (const auto& region : memory_->regions()) {
            dirty.emplace_back((region.size() / snapshot::kPageSize + 63) / 64, 0);
            get_dirty_log(*vm_, slot++, dirty.back());
        }
    }
    SnapshotSummary summary;
    summary.memory = request.type == snapshot::SnapshotType::Full
                         ? snapshot::write_full_memory_file(*memory_, request.mem_file_path)
                         : snapshot::write_diff_memory_file(*memory_, dirty, request.mem_file_path);
    snapshot::write_snapshot_file(request.snapshot_path, c);
    struct stat st {};
    if (::stat(request.snapshot_path.c_str(), &st) == 0) summary.state_bytes = static_cast<uint64_t>(st.st_size);
    summary.duration = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    log::info("snapshot ({}) created in {} ms: {} ({} bytes), memory {} ({} MiB, {} pages written, {} holes)",
              request.type == snapshot::SnapshotType::Full ? "Full" : "Diff", summary.duration.count() / 1000,
              request.snapshot_path, summary.state_bytes, request.mem_file_path, summary.memory.file_size >> 20,
              summary.memory.pages_written, summary.memory.pages_skipped);
    return summary;
}

void Vmm::restore_state(const RestoreSource& source) {
    const SnapshotContents& c = source.contents;
    const std::string difference =
        cpu_difference(c.section(SectionKind::CpuIdentity, "cpuid").payload, vcpus_.front()->kvm().get_cpuid());
    if (!difference.empty()) {
        throw Error(fmt::format("snapshot {}: this host's CPU is not the one the snapshot was taken on: {}",
                                source.snapshot_path, difference));
    }
    // Decode everything before the first KVM write, so a bad section changes nothing.
    const auto decode = [&](SectionKind kind, const std::string& id, auto&& fn) {
        StateReader r(c.section(kind, id).payload, id);
        auto value = fn(r);
        r.expect_end();
        return value;
    };
    const KvmVmState vm_state = decode(SectionKind::Vm, "vm", [](StateReader& r) { return decode_vm_state(r); });
    std::vector<VcpuState> vcpu_states;
    for (auto& v : vcpus_) {
        vcpu_states.push_back(decode(SectionKind::Vcpu, fmt::format("vcpu{}", v->kvm().id()),
                                     [](StateReader& r) { return decode_vcpu_state(r); }));
    }
    std::vector<DeviceState> devices;
    for (const Section* s : c.sections_of(SectionKind::VirtioDevice)) devices.push_back({s->id, s->payload});
    std::optional<std::span<const uint8_t>> pci_root;
    if (!c.sections_of(SectionKind::PciRoot).empty()) pci_root = c.section(SectionKind::PciRoot, "pci-root").payload;

    restore_vm_state(*vm_, vm_state);
    for (size_t i = 0; i < vcpus_.size(); i++) restore_vcpu_state(*vm_, vcpus_[i]->kvm(), vcpu_states[i]);
    std::vector<KvmVcpu*> kvm_vcpus;
    for (auto& v : vcpus_) kvm_vcpus.push_back(&v->kvm());
    if (restore_tsc_offsets(*vm_, kvm_vcpus, vcpu_states, vm_state.clock)) {
        log::info("snapshot {}: the vCPUs' TSCs restored in step with kvmclock (their offsets)", source.snapshot_path);
    } else {
        log::info("snapshot {}: the TSC restored from IA32_TSC alone (no TSC offsets saved, no host TSC in KVM's "
                  "clock, or a scaled TSC): the guest may see it jump against kvmclock",
                  source.snapshot_path);
    }
    {
        StateReader r(c.section(SectionKind::LegacyDevice, "serial").payload, "serial");
        legacy_->serial().restore_state(r);
        r.expect_end();
    }
    {
        StateReader r(c.section(SectionKind::LegacyDevice, "i8042").payload, "i8042");
        legacy_->i8042().restore_state(r);
        r.expect_end();
    }
    virtio_->restore_devices(devices, pci_root);
}

}  // namespace embervm::vmm
