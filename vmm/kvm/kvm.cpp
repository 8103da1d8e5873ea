// RAII wrappers for the KVM system, VM and vCPU file descriptors.
#include "vmm/kvm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "vmm/sys/error.h"
#include "vmm/kvm/kvm_abi.h"
#include "vmm/kvm/vm_state.h"

namespace embervm::vmm {

namespace {
template <typename T>
int checked_ioctl(int fd, unsigned long request, T arg, const char* what) {
    int r;
    do {
        r = ::ioctl(fd, request, arg);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        throw sys_error(what);
    }
    return r;
}
}  // namespace

KvmSystem::KvmSystem(const std::string& path) : fd_(::open(path.c_str(), O_RDWR | O_CLOEXEC)) {
    if (!fd_) {
        const int err = errno;
        std::string hint;
        if (err == ENOENT) {
            hint = "this host offers no KVM: load kvm_intel or kvm_amd (needs VMX/SVM, on bare metal or with "
                   "nested virtualization), or run embervm inside scripts/with-kvm";
        } else if (err == EACCES || err == EPERM) {
            hint = "you may not use it: add yourself to its group (usually kvm) or run as root";
        } else {
            hint = "is KVM available and are you allowed to use it?";
        }
        throw sys_error(fmt::format("cannot open {} ({})", path, hint), err);
    }
    const int version = checked_ioctl(fd(), KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION");
    if (version != KVM_API_VERSION) {
        throw Error(fmt::format("{}: KVM API version {} is not the supported {}", path, version, KVM_API_VERSION));
    }
}

int KvmSystem::check_extension(long cap) const {
    const int r = ::ioctl(fd(), KVM_CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
}

size_t KvmSystem::vcpu_mmap_size() const {
    return static_cast<size_t>(checked_ioctl(fd(), KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE"));
}

std::vector<kvm_cpuid_entry2> KvmSystem::supported_cpuid() const {
    for (uint32_t n = 128;; n *= 2) {
        kvm_abi::FlexBuffer<kvm_abi::Cpuid2Header, kvm_cpuid_entry2> buf(n);
        buf.header()->nent = n;
        if (::ioctl(fd(), kvm_abi::kGetSupportedCpuid, buf.data()) == 0) {
            const auto entries = buf.entries().first(std::min<size_t>(buf.header()->nent, n));
            return std::vector<kvm_cpuid_entry2>(entries.begin(), entries.end());
        }
        if (errno != E2BIG || n > 4096) {
            throw sys_error("KVM_GET_SUPPORTED_CPUID");
        }
    }
}

KvmVm::KvmVm(const KvmSystem& kvm) : fd_(checked_ioctl(kvm.fd(), KVM_CREATE_VM, 0, "KVM_CREATE_VM")) {}

int KvmVm::check_extension(long cap) const {
    const int r = ::ioctl(fd(), KVM_CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
}

void KvmVm::set_user_memory_region(uint32_t slot, uint64_t guest_phys, uint64_t size, void* host, uint32_t flags) {
    kvm_userspace_memory_region region{};
    region.slot = slot;
    region.flags = flags;
    region.guest_phys_addr = guest_phys;
    region.memory_size = size;
    region.userspace_addr = reinterpret_cast<uint64_t>(host);
    if (::ioctl(fd(), KVM_SET_USER_MEMORY_REGION, &region) < 0) {
        throw sys_error(fmt::format("KVM_SET_USER_MEMORY_REGION slot {} at {:#x} size {:#x}", slot, guest_phys, size));
    }
}

void KvmVm::set_tss_addr(uint64_t addr) { checked_ioctl(fd(), KVM_SET_TSS_ADDR, addr, "KVM_SET_TSS_ADDR"); }

void KvmVm::set_identity_map_addr(uint64_t addr) {
    checked_ioctl(fd(), KVM_SET_IDENTITY_MAP_ADDR, &addr, "KVM_SET_IDENTITY_MAP_ADDR");
}

void KvmVm::create_irqchip() { checked_ioctl(fd(), KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP"); }

void KvmVm::create_pit2() {
    kvm_pit_config config{};
    config.flags = KVM_PIT_SPEAKER_DUMMY;
    checked_ioctl(fd(), KVM_CREATE_PIT2, &config, "KVM_CREATE_PIT2");
}

void KvmVm::enable_cap(uint32_t cap, uint64_t arg0) {
    kvm_enable_cap ec{};
    ec.cap = cap;
    ec.args[0] = arg0;
    if (::ioctl(fd(), KVM_ENABLE_CAP, &ec) < 0) {
        throw sys_error(fmt::format("KVM_ENABLE_CAP {}", cap));
    }
}

void KvmVm::register_irqfd(int eventfd, uint32_t gsi) {
    kvm_irqfd irqfd{};
    irqfd.fd = static_cast<uint32_t>(eventfd);
    irqfd.gsi = gsi;
    if (::ioctl(fd(), KVM_IRQFD, &irqfd) < 0) {
        throw sys_error(fmt::format("KVM_IRQFD for GSI {}", gsi));
    }
}

void KvmVm::register_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio, std::optional<uint64_t> datamatch) {
    ioeventfd(eventfd, addr, len, pio, datamatch, false);
}

void KvmVm::unregister_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                                 std::optional<uint64_t> datamatch) {
    ioeventfd(eventfd, addr, len, pio, datamatch, true);
}

void KvmVm::ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio, std::optional<uint64_t> datamatch,
                      bool deassign) {
    kvm_ioeventfd io{};
    io.addr = addr;
    io.len = len;
    io.fd = eventfd;
    io.flags = (pio ? KVM_IOEVENTFD_FLAG_PIO : 0) | (datamatch ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0) |
               (deassign ? KVM_IOEVENTFD_FLAG_DEASSIGN : 0);
    io.datamatch = datamatch.value_or(0);
    if (::ioctl(fd(), KVM_IOEVENTFD, &io) < 0) {
        throw sys_error(fmt::format("KVM_IOEVENTFD{} at {:#x}", deassign ? " (deassign)" : "", addr));
    }
}

namespace {
constexpr uint32_t kIoapicPins = 24;
constexpr uint32_t kPicPins = 16;
}  // namespace

void KvmVm::set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) {
    if (gsi < kIoapicPins) {
        throw Error(fmt::format("MSI route for GSI {}: GSIs below {} belong to the IOAPIC", gsi, kIoapicPins));
    }
    std::lock_guard lock(routes_mutex_);
    msi_routes_[gsi] = {address, data};
    std::vector<kvm_irq_routing_entry> entries;
    // KVM's default x86 routing (what KVM_CREATE_IRQCHIP installs): GSIs 0-15 to the PIC and
    // the IOAPIC, 16-23 to the IOAPIC, pin = GSI.
    for (uint32_t g = 0; g < kIoapicPins; ++g) {
        kvm_irq_routing_entry e{};
        e.gsi = g;
        e.type = KVM_IRQ_ROUTING_IRQCHIP;
        e.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
        e.u.irqchip.pin = g;
        entries.push_back(e);
        if (g < kPicPins) {
            e.u.irqchip.irqchip = g < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
            e.u.irqchip.pin = g % 8;
            entries.push_back(e);
        }
    }
    for (const auto& [g, msg] : msi_routes_) {
        kvm_irq_routing_entry e{};
        e.gsi = g;
        e.type = KVM_IRQ_ROUTING_MSI;
        e.u.msi.address_lo = static_cast<uint32_t>(msg.first);
        e.u.msi.address_hi = static_cast<uint32_t>(msg.first >> 32);
        e.u.msi.data = msg.second;
        entries.push_back(e);
    }
    kvm_abi::FlexBuffer<kvm_abi::IrqRoutingHeader, kvm_irq_routing_entry> table(entries.size());
    table.header()->nr = static_cast<uint32_t>(entries.size());
    std::copy(entries.begin(), entries.end(), table.entries().begin());
    if (::ioctl(fd(), kvm_abi::kSetGsiRouting, table.data()) < 0) {
        throw sys_error(fmt::format("KVM_SET_GSI_ROUTING (MSI route for GSI {})", gsi));
    }
}

std::string KvmVm::describe_gsi(uint32_t gsi) const {
    if (gsi >= kIoapicPins) return {};
    kvm_irqchip chip{};
    try {
        chip = get_irqchip(*this, KVM_IRQCHIP_IOAPIC);
    } catch (const std::exception& e) {
        return fmt::format("IOAPIC pin {}: {}", gsi, e.what());
    }
    const kvm_ioapic_state& io = chip.chip.ioapic;
    const auto& e = io.redirtbl[gsi].fields;
    return fmt::format("IOAPIC pin {}: vector {:#x}, {}, {}, remote IRR {}, delivery pending {}, request {}, "
                       "destination {:#x} ({})",
                       gsi, e.vector, e.trig_mode ? "level" : "edge", e.mask ? "MASKED" : "unmasked", e.remote_irr,
                       e.delivery_status, (io.irr >> gsi) & 1u, e.dest_id, e.dest_mode ? "logical" : "physical");
}

bool KvmVm::gsi_masked(uint32_t gsi) const {
    if (gsi >= kIoapicPins) return false;
    try {
        return get_irqchip(*this, KVM_IRQCHIP_IOAPIC).chip.ioapic.redirtbl[gsi].fields.mask != 0;
    } catch (const std::exception&) {
        return false;  // unknown: raise it again, as before
    }
}

KvmVcpu::KvmVcpu(const KvmSystem& kvm, const KvmVm& vm, uint32_t id)
    : id_(id), fd_(checked_ioctl(vm.fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(id), "KVM_CREATE_VCPU")) {
    run_size_ = kvm.vcpu_mmap_size();
    void* p = ::mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    if (p == MAP_FAILED) {
        throw sys_error(fmt::format("mmap of kvm_run for vCPU {}", id));
    }
    run_ = static_cast<kvm_run*>(p);
}

KvmVcpu::~KvmVcpu() {
    if (run_ != nullptr) {
        ::munmap(run_, run_size_);
    }
}

bool KvmVcpu::run() {
    if (::ioctl(fd(), KVM_RUN, 0) < 0) {
        if (errno == EINTR || errno == EAGAIN) {
            return false;
        }
        throw sys_error(fmt::format("KVM_RUN on vCPU {}", id_));
    }
    return true;
}

kvm_regs KvmVcpu::get_regs() const {
    kvm_regs r{};
    checked_ioctl(fd(), KVM_GET_REGS, &r, "KVM_GET_REGS");
    return r;
}
void KvmVcpu::set_regs(const kvm_regs& regs) { checked_ioctl(fd(), KVM_SET_REGS, &regs, "KVM_SET_REGS"); }
kvm_sregs KvmVcpu::get_sregs() const {
    kvm_sregs s{};
    checked_ioctl(fd(), KVM_GET_SREGS, &s, "KVM_GET_SREGS");
    return s;
}
void KvmVcpu::set_sregs(const kvm_sregs& sregs) { checked_ioctl(fd(), KVM_SET_SREGS, &sregs, "KVM_SET_SREGS"); }
kvm_fpu KvmVcpu::get_fpu() const {
    kvm_fpu f{};
    checked_ioctl(fd(), KVM_GET_FPU, &f, "KVM_GET_FPU");
    return f;
}
void KvmVcpu::set_fpu(const kvm_fpu& fpu) { checked_ioctl(fd(), KVM_SET_FPU, &fpu, "KVM_SET_FPU"); }

std::vector<kvm_cpuid_entry2> KvmVcpu::get_cpuid() const {
    // Not every kernel writes nent back (6.1 leaves it as it was, on success and on E2BIG):
    // the entries are pre-filled with a pattern no real entry has (its padding is zero), and
    // the table ends at the first entry the kernel left untouched.
    kvm_cpuid_entry2 unused;
    std::memset(&unused, 0xff, sizeof(unused));
    for (uint32_t n = 128;; n *= 2) {
        kvm_abi::FlexBuffer<kvm_abi::Cpuid2Header, kvm_cpuid_entry2> buf(n);
        buf.header()->nent = n;
        std::fill(buf.entries().begin(), buf.entries().end(), unused);
        if (::ioctl(fd(), kvm_abi::kGetCpuid2, buf.data()) == 0) {
            const auto entries = buf.entries().first(std::min<size_t>(buf.header()->nent, n));
            const auto end = std::find_if(entries.begin(), entries.end(), [&](const kvm_cpuid_entry2& e) {
                return std::memcmp(&e, &unused, sizeof(e)) == 0;
            });
            return std::vector<kvm_cpuid_entry2>(entries.begin(), end);
        }
        if (errno != E2BIG || n > 4096) {
            throw sys_error(fmt::format("KVM_GET_CPUID2 on vCPU {}", id_));
        }
    }
}

void KvmVcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
    kvm_abi::FlexBuffer<kvm_abi::Cpuid2Header, kvm_cpuid_entry2> buf(entries.size());
    buf.header()->nent = static_cast<uint32_t>(entries.size());
    std::copy(entries.begin(), entries.end(), buf.entries().begin());
    checked_ioctl(fd(), kvm_abi::kSetCpuid2, buf.data(), "KVM_SET_CPUID2");
}

uint64_t KvmVcpu::get_msr(uint32_t index) const {
    kvm_abi::FlexBuffer<kvm_abi::MsrsHeader, kvm_msr_entry> buf(1);
    buf.header()->nmsrs = 1;
    buf.entries()[0].index = index;
    if (checked_ioctl(fd(), kvm_abi::kGetMsrs, buf.data(), "KVM_GET_MSRS") != 1) {
        throw Error(fmt::format("KVM_GET_MSRS: MSR {:#x} not readable", index));
    }
    return buf.entries()[0].data;
}

void KvmVcpu::set_msrs(const std::vector<std::pair<uint32_t, uint64_t>>& values) {
    kvm_abi::FlexBuffer<kvm_abi::MsrsHeader, kvm_msr_entry> buf(values.size());
    buf.header()->nmsrs = static_cast<uint32_t>(values.size());
    for (size_t i = 0; i < values.size(); i++) {
        buf.entries()[i].index = values[i].first;
        buf.entries()[i].data = values[i].second;
    }
    const int n = checked_ioctl(fd(), kvm_abi::kSetMsrs, buf.data(), "KVM_SET_MSRS");
    if (n != static_cast<int>(values.size())) {
        throw Error(fmt::format("KVM_SET_MSRS: MSR {:#x} was refused", values[static_cast<size_t>(n)].first));
    }
}

kvm_lapic_state KvmVcpu::get_lapic() const {
    kvm_lapic_state s{};
    checked_ioctl(fd(), KVM_GET_LAPIC, &s, "KVM_GET_LAPIC");
    return s;
}
void KvmVcpu::set_lapic(const kvm_lapic_state& lapic) { checked_ioctl(fd(), KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC"); }
kvm_vcpu_events KvmVcpu::get_vcpu_events() const {
    kvm_vcpu_events e{};
    checked_ioctl(fd(), KVM_GET_VCPU_EVENTS, &e, "KVM_GET_VCPU_EVENTS");
    return e;
}
void KvmVcpu::set_vcpu_events(const kvm_vcpu_events& events) {
    checked_ioctl(fd(), KVM_SET_VCPU_EVENTS, &events, "KVM_SET_VCPU_EVENTS");
}
kvm_mp_state KvmVcpu::get_mp_state() const {
    kvm_mp_state s{};
    checked_ioctl(fd(), KVM_GET_MP_STATE, &s, "KVM_GET_MP_STATE");
    return s;
}

std::optional<uint64_t> KvmVcpu::translate(uint64_t linear) const {
    kvm_translation tr{};
    tr.linear_address = linear;
    if (::ioctl(fd(), KVM_TRANSLATE, &tr) < 0) {
        throw sys_error(fmt::format("KVM_TRANSLATE of {:#x} on vCPU {}", linear, id_));
    }
    if (tr.valid == 0) {
        return std::nullopt;
    }
    return static_cast<uint64_t>(tr.physical_address);
}

}  // namespace embervm::vmm
