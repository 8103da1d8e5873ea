// Tests for vmm/kvm/cpu_setup: the boot MSRs, FPU and LAPIC LINT pins, and, tagged [kvm], what a
// real vCPU reports after configure_vcpu (KVM_GET_CPUID2, KVM_GET_MSRS, KVM_GET_FPU, KVM_GET_LAPIC).
// The CPUID table itself is tested in cpuid_test.cpp.
#include <catch2/catch.hpp>

#include <sys/ioctl.h>

#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "tests/unit/vmm/kvm/real_mode_vm.h"
#include "vmm/kvm/cpu_setup.h"
#include "vmm/kvm/cpuid.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_cpu_setup_test {

namespace vmm = embervm::vmm;
using embervm::test::RealModeVm;

namespace {

constexpr uint32_t kKvmSignatureLeaf = 0x40000000;
constexpr uint32_t kKvmKvm = 0x4b4d564b, kVmKv = 0x564b4d56, kM = 0x4d;  // "KVMKVMKVM\0\0\0"

std::optional<kvm_cpuid_entry2> find(const std::vector<kvm_cpuid_entry2>& table, uint32_t function,
                                     uint32_t index = 0) {
    for (const auto& e : table) {
        if (e.function == function && e.index == index) return e;
    }
    return std::nullopt;
}

uint32_t lapic_reg(const kvm_lapic_state& s, size_t offset) {
    uint32_t v;
    std::memcpy(&v, s.regs + offset, sizeof(v));
    return v;
}

}  // namespace

TEST_CASE("cpu setup: boot MSRs, FPU and LAPIC LINT pins", "[cpu_setup]") {
    const auto msrs = vmm::boot_msrs();
    std::map<uint32_t, uint64_t> by_index(msrs.begin(), msrs.end());
    CHECK(by_index.size() == msrs.size());  // no MSR twice
    CHECK(by_index == std::map<uint32_t, uint64_t>{{0x10, 0},         {0x174, 0},        {0x175, 0},
                                                   {0x176, 0},        {0x1a0, 1},        {0x2ff, 0x806},
                                                   {0xc0000081, 0},   {0xc0000082, 0},   {0xc0000083, 0},
                                                   {0xc0000084, 0},   {0xc0000102, 0}});

    const kvm_fpu fpu = vmm::boot_fpu();
    kvm_fpu expected{};
    expected.fcw = 0x37f;
    expected.mxcsr = 0x1f80;
    CHECK(std::memcmp(&fpu, &expected, sizeof(fpu)) == 0);

    kvm_lapic_state lapic{};
    std::memset(lapic.regs, 0x5a, sizeof(lapic.regs));
    const uint32_t lvt0 = 0x00010000, lvt1 = 0x00018700;  // masked; masked, level, ExtINT
    std::memcpy(lapic.regs + 0x350, &lvt0, 4);
    std::memcpy(lapic.regs + 0x360, &lvt1, 4);
    kvm_lapic_state before = lapic;
    vmm::set_lapic_lints(lapic);
    CHECK(lapic_reg(lapic, 0x350) == 0x00010700);  // delivery mode ExtINT, the rest kept
    CHECK(lapic_reg(lapic, 0x360) == 0x00018400);  // delivery mode NMI
    // Nothing else changed.
    std::memcpy(before.regs + 0x350, lapic.regs + 0x350, 4);
    std::memcpy(before.regs + 0x360, lapic.regs + 0x360, 4);
    CHECK(std::memcmp(before.regs, lapic.regs, sizeof(lapic.regs)) == 0);
}

TEST_CASE("cpu setup: a configured vCPU reports what was set", "[kvm][cpu_setup]") {
    RealModeVm t(true);  // the LAPIC needs the in-kernel irqchip
    auto vcpu = t.make_vcpu({0xf4}, 1);
    // State that configure_vcpu must undo.
    vcpu->set_msrs({{0x174, 0x10}, {0xc0000082, 0xffffffff81000000}});
    kvm_fpu odd{};
    odd.fcw = 0x27f;
    vcpu->set_fpu(odd);
    const auto supported = t.kvm.supported_cpuid();
    const bool tsc_deadline = t.vm.check_extension(KVM_CAP_TSC_DEADLINE_TIMER) != 0;
    CHECK(tsc_deadline);  // every KVM with an in-kernel LAPIC has it
    vmm::configure_vcpu(*vcpu, supported, 2, tsc_deadline);

    const auto cpuid = vcpu->get_cpuid();
    CHECK(cpuid.size() == vmm::normalize_vcpu_cpuid(supported, {.index = 1, .count = 2}).size());
    const auto l1 = find(cpuid, 0x1);
    REQUIRE(l1);
    CHECK(l1->ebx >> 24 == 1);             // initial APIC ID = vCPU id
    CHECK(((l1->ebx >> 16) & 0xff) == 2);  // logical processors
    CHECK((l1->ecx & (1u << 31)) != 0);    // hypervisor
    CHECK((l1->edx & (1u << 28)) != 0);    // HTT
    CHECK((l1->ecx & (1u << 24)) != 0);    // TSC-deadline timer
    if (const auto xsave = find(cpuid, 0xd, 0)) {
        CHECK(xsave->ebx == 576);  // KVM keeps it at the guest's XCR0: x87 only after reset
        CHECK(xsave->ecx >= 576);
    }
    if (const auto l7 = find(cpuid, 0x7, 0)) {
        CHECK((l7->edx & (1u << 29)) == 0);  // no ARCH_CAPABILITIES
    }
    if (find(supported, 0xb, 0)) {
        REQUIRE(find(cpuid, 0xb, 1));
        CHECK(find(cpuid, 0xb, 1)->ebx == 2);
        CHECK(find(cpuid, 0xb, 1)->edx == 1);
    }
    const auto sig = find(cpuid, kKvmSignatureLeaf);
    REQUIRE(sig);
    CHECK(std::vector<uint32_t>{sig->ebx, sig->ecx, sig->edx} == std::vector<uint32_t>{kKvmKvm, kVmKv, kM});

    for (const auto& [index, value] : vmm::boot_msrs()) {
        if (index == 0x10) continue;  // the TSC has moved on since it was set
        INFO("MSR " << std::hex << index);
        CHECK(vcpu->get_msr(index) == value);
    }

    // KVM_GET_FPU reports no MXCSR: only the control word can be read back.
    CHECK(vcpu->get_fpu().fcw == 0x37f);

    const kvm_lapic_state lapic = vcpu->get_lapic();
    CHECK(((lapic_reg(lapic, 0x350) >> 8) & 7) == 7);  // LINT0: ExtINT
    CHECK(((lapic_reg(lapic, 0x360) >> 8) & 7) == 4);  // LINT1: NMI
}

// One TSC for the whole VM: configure_vcpu writes 0 to every vCPU's TSC, which KVM takes as "in
// step with the vCPUs already there" however late the vCPU comes (a non-zero value is matched
// only within about a second; here the later vCPUs come 1.2 s after the first, and a value such
// as 2^40 leaves them behind). Read one after the other, the TSCs must then be in order: each
// between two reads of vCPU 0's, give or take 1 ms.
TEST_CASE("cpu setup: all vCPUs share one TSC even when created apart", "[kvm][cpu_setup]") {
    RealModeVm t(true);
    const auto supported = t.kvm.supported_cpuid();
    constexpr uint32_t kCount = 4;
    std::vector<std::unique_ptr<vmm::KvmVcpu>> vcpus;
    for (uint32_t i = 0; i < kCount; i++) {
        if (i == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1200));
        vcpus.push_back(t.make_vcpu({0xf4}, i));
        vmm::configure_vcpu(*vcpus.back(), supported, kCount, true);
    }
    const int khz = ioctl(vcpus[0]->fd(), KVM_GET_TSC_KHZ);
    REQUIRE(khz > 0);
    const auto slack = static_cast<uint64_t>(khz);  // 1 ms of TSC cycles
    const uint64_t first = vcpus[0]->get_msr(0x10);
    std::vector<uint64_t> tsc;
    for (const auto& v : vcpus) tsc.push_back(v->get_msr(0x10));
    const uint64_t last = vcpus[0]->get_msr(0x10);
    CHECK(last - first < 1000 * slack);  // the reads took well under a second
    for (uint32_t i = 0; i < kCount; i++) {
        INFO("vCPU " << i << " TSC " << tsc[i] << ", vCPU 0 read before " << first << " and after " << last);
        CHECK(tsc[i] + slack >= first);
        CHECK(tsc[i] <= last + slack);
    }
}

}  // namespace unit_cpu_setup_test
