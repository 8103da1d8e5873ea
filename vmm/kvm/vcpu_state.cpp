// Saving and restoring a vCPU's state through KVM (see vcpu_state.h for the order).
#include "vmm/kvm/vcpu_state.h"

#include <sys/ioctl.h>
#include <x86intrin.h>

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

#include "vmm/kvm/kvm.h"
#include "vmm/kvm/kvm_abi.h"
#include "vmm/sys/error.h"

namespace embervm::vmm {

namespace {

constexpr uint32_t kVcpuStateVersion = 2;  // 2: the TSC offset
constexpr uint32_t kMsrTsc = 0x10;
constexpr uint32_t kMsrTscDeadline = 0x6e0;
constexpr size_t kLegacyXsaveSize = 4096;
// A sanity bound on KVM_CAP_XSAVE2 and on a saved XSAVE area (today's largest, with AMX, is ~11 KiB).
constexpr size_t kMaxXsaveSize = 64 * 1024;

using kvm_abi::kGetXsave;
using kvm_abi::kGetXsave2;
using kvm_abi::kSetXsave;

void vcpu_ioctl(const KvmVcpu& vcpu, unsigned long request, const void* arg, const char* what) {
    int r;
    do {
        r = ::ioctl(vcpu.fd(), request, arg);
    } while (r < 0 && errno == EINTR);
    if (r < 0) throw sys_error(fmt::format("{} on vCPU {}", what, vcpu.id()));
}

// KVM_GET_MSRS of `indices`; returns how many were read (KVM stops at the first it cannot read).
size_t read_msrs(const KvmVcpu& vcpu, std::span<const uint32_t> indices, std::vector<std::pair<uint32_t, uint64_t>>& out) {
    kvm_abi::FlexBuffer<kvm_abi::MsrsHeader, kvm_msr_entry> buf(indices.size());
    buf.header()->nmsrs = static_cast<uint32_t>(indices.size());
    for (size_t i = 0; i < indices.size(); i++) buf.entries()[i].index = indices[i];
    const int n = ::ioctl(vcpu.fd(), kvm_abi::kGetMsrs, buf.data());
    if (n < 0) throw sys_error(fmt::format("KVM_GET_MSRS on vCPU {}", vcpu.id()));
    for (int i = 0; i < n; i++) out.emplace_back(buf.entries()[i].index, buf.entries()[i].data);
    return static_cast<size_t>(n);
}

// This vCPU's KVM_VCPU_TSC_OFFSET if KVM has the attribute and guest TSC = host TSC + offset
// holds (no TSC scaling): IA32_TSC read right after the offset must lie between the host TSC
// before and after plus the offset, give or take 10 ms of ticks.
std::optional<uint64_t> unscaled_tsc_offset(const KvmVcpu& vcpu, uint32_t tsc_khz) {
    kvm_device_attr attr{};
    attr.group = KVM_VCPU_TSC_CTRL;
    attr.attr = KVM_VCPU_TSC_OFFSET;
    if (::ioctl(vcpu.fd(), KVM_HAS_DEVICE_ATTR, &attr) != 0) return std::nullopt;
    uint64_t offset = 0;
    attr.addr = reinterpret_cast<uint64_t>(&offset);
    const uint64_t before = __rdtsc();
    vcpu_ioctl(vcpu, KVM_GET_DEVICE_ATTR, &attr, "KVM_GET_DEVICE_ATTR (TSC offset)");
    const uint32_t index = kMsrTsc;
    std::vector<std::pair<uint32_t, uint64_t>> tsc;
    if (read_msrs(vcpu, std::span(&index, 1), tsc) != 1) return std::nullopt;
    const uint64_t after = __rdtsc();
    const auto slack = static_cast<int64_t>(tsc_khz) * 10;
    const auto d = static_cast<int64_t>(tsc.front().second - (before + offset));
    if (d < -slack || d > static_cast<int64_t>(after - before) + slack) return std::nullopt;
    return offset;
}

size_t xsave_size(const KvmVm& vm) {
    const int size = vm.check_extension(KVM_CAP_XSAVE2);
    if (size <= 0) return kLegacyXsaveSize;
    if (static_cast<size_t>(size) > kMaxXsaveSize || static_cast<size_t>(size) < kLegacyXsaveSize) {
        throw Error(fmt::format("KVM_CAP_XSAVE2: an XSAVE area of {} bytes is not supported", size));
    }
    return static_cast<size_t>(size);
}

}  // namespace

std::vector<uint32_t> saved_msr_indices(const KvmSystem& kvm, KvmVcpu& vcpu) {
    kvm_abi::MsrListHeader probe{0};
    if (::ioctl(kvm.fd(), kvm_abi::kGetMsrIndexList, &probe) == 0 || errno != E2BIG) {
        throw sys_error("KVM_GET_MSR_INDEX_LIST (size)");
    }
    kvm_abi::FlexBuffer<kvm_abi::MsrListHeader, uint32_t> list(probe.nmsrs);
    list.header()->nmsrs = probe.nmsrs;
    if (::ioctl(kvm.fd(), kvm_abi::kGetMsrIndexList, list.data()) != 0) throw sys_error("KVM_GET_MSR_INDEX_LIST");
    std::vector<uint32_t> wanted(list.entries().begin(), list.entries().begin() + list.header()->nmsrs);
    // Drop the ones this vCPU cannot read, one refusal at a time.
    std::vector<uint32_t> readable;
    std::span<const uint32_t> rest(wanted);
    while (!rest.empty()) {
        std::vector<std::pair<uint32_t, uint64_t>> values;
        const size_t n = read_msrs(vcpu, rest, values);
        for (const auto& v : values) readable.push_back(v.first);
        rest = rest.subspan(std::min(n + 1, rest.size()));
    }
    auto rank = [](uint32_t index) { return index == kMsrTsc ? 0 : index == kMsrTscDeadline ? 2 : 1; };
    std::stable_sort(readable.begin(), readable.end(), [&](uint32_t a, uint32_t b) { return rank(a) < rank(b); });
    return readable;
}

VcpuState save_vcpu_state(const KvmVm& vm, KvmVcpu& vcpu, std::span<const uint32_t> msr_indices) {
    VcpuState s;
    s.mp_state = vcpu.get_mp_state();
    s.regs = vcpu.get_regs();
    s.sregs = vcpu.get_sregs();
    const size_t size = xsave_size(vm);
    s.xsave.resize(size);
    vcpu_ioctl(vcpu, vm.check_extension(KVM_CAP_XSAVE2) > 0 ? kGetXsave2 : kGetXsave, s.xsave.data(), "KVM_GET_XSAVE");
    vcpu_ioctl(vcpu, KVM_GET_XCRS, &s.xcrs, "KVM_GET_XCRS");
    vcpu_ioctl(vcpu, KVM_GET_DEBUGREGS, &s.debugregs, "KVM_GET_DEBUGREGS");
    s.lapic = vcpu.get_lapic();
    if (read_msrs(vcpu, msr_indices, s.msrs) != msr_indices.size()) {
        throw Error(fmt::format("KVM_GET_MSRS on vCPU {}: MSR {:#x} cannot be read", vcpu.id(),
                                msr_indices[s.msrs.size()]));
    }
    s.events = vcpu.get_vcpu_events();
    const int khz = ::ioctl(vcpu.fd(), KVM_GET_TSC_KHZ, 0);
    if (khz <= 0) throw sys_error(fmt::format("KVM_GET_TSC_KHZ on vCPU {}", vcpu.id()));
    s.tsc_khz = static_cast<uint32_t>(khz);
    s.tsc_offset = unscaled_tsc_offset(vcpu, s.tsc_khz);
    return s;
}

void restore_vcpu_state(const KvmVm& vm, KvmVcpu& vcpu, const VcpuState& s) {
    const int khz = ::ioctl(vcpu.fd(), KVM_GET_TSC_KHZ, 0);
    if (khz <= 0) throw sys_error(fmt::format("KVM_GET_TSC_KHZ on vCPU {}", vcpu.id()));
    if (static_cast<uint32_t>(khz) != s.tsc_khz) {
        if (vm.check_extension(KVM_CAP_TSC_CONTROL) <= 0) {
            throw Error(fmt::format("vCPU {}: the guest's TSC ran at {} kHz, this host's runs at {} kHz and KVM cannot "
                                    "scale it (no KVM_CAP_TSC_CONTROL)", vcpu.id(), s.tsc_khz, khz));
        }
        if (::ioctl(vcpu.fd(), KVM_SET_TSC_KHZ, static_cast<unsigned long>(s.tsc_khz)) != 0) {
            throw sys_error(fmt::format("vCPU {}: KVM_SET_TSC_KHZ to the guest's {} kHz (host {} kHz)", vcpu.id(),
                                        s.tsc_khz, khz));
        }
    }
    if (s.xsave.size() > xsave_size(vm)) {
        throw Error(fmt::format("vCPU {}: the saved XSAVE area has {} bytes, this host's KVM takes {}", vcpu.id(),
                                s.xsave.size(), xsave_size(vm)));
    }
    vcpu_ioctl(vcpu, KVM_SET_MP_STATE, &s.mp_state, "KVM_SET_MP_STATE");
    vcpu.set_regs(s.regs);
    vcpu.set_sregs(s.sregs);
    std::vector<uint8_t> xsave(xsave_size(vm), 0);
    std::copy(s.xsave.begin(), s.xsave.end(), xsave.begin());
    vcpu_ioctl(vcpu, kSetXsave, xsave.data(), "KVM_SET_XSAVE");
    vcpu_ioctl(vcpu, KVM_SET_XCRS, &s.xcrs, "KVM_SET_XCRS");
    vcpu_ioctl(vcpu, KVM_SET_DEBUGREGS, &s.debugregs, "KVM_SET_DEBUGREGS");
    vcpu.set_lapic(s.lapic);
    vcpu.set_msrs(s.msrs);
    vcpu.set_vcpu_events(s.events);
}

bool restore_tsc_offsets(const KvmVm& vm, std::span<KvmVcpu* const> vcpus, std::span<const VcpuState> states,
                         const kvm_clock_data& saved_clock) {
    if ((saved_clock.flags & KVM_CLOCK_HOST_TSC) == 0 || vcpus.size() != states.size()) return false;
    for (size_t i = 0; i < vcpus.size(); i++) {
        if (!states[i].tsc_offset || !unscaled_tsc_offset(*vcpus[i], states[i].tsc_khz)) return false;
    }
    kvm_clock_data now{};
    if (::ioctl(vm.fd(), KVM_GET_CLOCK, &now) != 0) throw sys_error("KVM_GET_CLOCK");
    // The kvmclock that passed since KVM_SET_CLOCK: microseconds; an hour would be nonsense.
    const auto elapsed_ns = static_cast<int64_t>(now.clock - saved_clock.clock);
    if ((now.flags & KVM_CLOCK_HOST_TSC) == 0 || elapsed_ns < 0 || elapsed_ns > int64_t{3600} * 1000000000) return false;
    for (size_t i = 0; i < vcpus.size(); i++) {
        // The guest TSC at kvmclock time 0, ofs + host TSC - kvmclock * frequency, kept: the
        // kvmclock that passed since KVM_SET_CLOCK in guest ticks, plus the host TSCs' difference.
        const auto elapsed_ticks = static_cast<int64_t>(static_cast<double>(elapsed_ns) * states[i].tsc_khz / 1e6);
        uint64_t offset = *states[i].tsc_offset + static_cast<uint64_t>(elapsed_ticks) + saved_clock.host_tsc - now.host_tsc;
        kvm_device_attr attr{};
        attr.group = KVM_VCPU_TSC_CTRL;
        attr.attr = KVM_VCPU_TSC_OFFSET;
        attr.addr = reinterpret_cast<uint64_t>(&offset);
        vcpu_ioctl(*vcpus[i], KVM_SET_DEVICE_ATTR, &attr, "KVM_SET_DEVICE_ATTR (TSC offset)");
    }
    return true;
}

void encode_vcpu_state(StateWriter& w, const VcpuState& s) {
    w.put<uint32_t>(kVcpuStateVersion);
    w.put_struct(s.mp_state);
    w.put_struct(s.regs);
    w.put_struct(s.sregs);
    w.put_blob(s.xsave);
    w.put_struct(s.xcrs);
    w.put_struct(s.debugregs);
    w.put_struct(s.lapic);
    w.put<uint32_t>(static_cast<uint32_t>(s.msrs.size()));
    for (const auto& [index, value] : s.msrs) {
        w.put(index);
        w.put(value);
    }
    w.put_struct(s.events);
    w.put(s.tsc_khz);
    w.put_bool(s.tsc_offset.has_value());
    w.put<uint64_t>(s.tsc_offset.value_or(0));
}

VcpuState decode_vcpu_state(StateReader& r) {
    const uint32_t version = r.get_version(kVcpuStateVersion);
    VcpuState s;
    s.mp_state = r.get_struct<kvm_mp_state>("mp_state");
    s.regs = r.get_struct<kvm_regs>("regs");
    s.sregs = r.get_struct<kvm_sregs>("sregs");
    const auto xsave = r.get_blob("xsave");
    if (xsave.size() < kLegacyXsaveSize || xsave.size() > kMaxXsaveSize) {
        r.fail("xsave", fmt::format("{} bytes (an XSAVE area has {} to {})", xsave.size(), kLegacyXsaveSize, kMaxXsaveSize));
    }
    s.xsave.assign(xsave.begin(), xsave.end());
    s.xcrs = r.get_struct<kvm_xcrs>("xcrs");
    if (s.xcrs.nr_xcrs > KVM_MAX_XCRS) r.fail("xcrs", fmt::format("{} XCRs (at most {})", s.xcrs.nr_xcrs, KVM_MAX_XCRS));
    s.debugregs = r.get_struct<kvm_debugregs>("debugregs");
    s.lapic = r.get_struct<kvm_lapic_state>("lapic");
    const auto count = r.get<uint32_t>("msrs");
    if (count > r.remaining() / 12) r.fail("msrs", fmt::format("{} MSRs do not fit the {} bytes left", count, r.remaining()));
    for (uint32_t i = 0; i < count; i++) {
        const auto index = r.get<uint32_t>("msr index");
        s.msrs.emplace_back(index, r.get<uint64_t>("msr value"));
    }
    s.events = r.get_struct<kvm_vcpu_events>("events");
    s.tsc_khz = r.get<uint32_t>("tsc_khz");
    if (s.tsc_khz == 0) r.fail("tsc_khz", "0 kHz");
    if (version >= 2) {
        const bool has_offset = r.get_bool("tsc_offset");
        const auto offset = r.get<uint64_t>("tsc_offset");
        if (has_offset) s.tsc_offset = offset;
    }
    return s;
}

}  // namespace embervm::vmm
