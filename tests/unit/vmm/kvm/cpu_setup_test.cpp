// Tests for vmm/kvm/cpu_setup: the CPUID table built for each vCPU from a synthetic supported
// table (exact values), the boot MSRs, FPU and LAPIC LINT pins, and, tagged [kvm], what a real
// vCPU reports after configure_vcpu (KVM_GET_CPUID2, KVM_GET_MSRS, KVM_GET_FPU, KVM_GET_LAPIC).
#include <catch2/catch.hpp>

#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "tests/unit/vmm/kvm/real_mode_vm.h"
#include "vmm/kvm/cpu_setup.h"

namespace vmm = embervm::vmm;
using embervm::test::RealModeVm;

namespace {

constexpr uint32_t kKvmSignatureLeaf = 0x40000000;
constexpr uint32_t kKvmKvm = 0x4b4d564b, kVmKv = 0x564b4d56, kM = 0x4d;  // "KVMKVMKVM\0\0\0"

kvm_cpuid_entry2 leaf(uint32_t function, uint32_t index, uint32_t eax, uint32_t ebx, uint32_t ecx, uint32_t edx) {
    kvm_cpuid_entry2 e{};
    e.function = function;
    e.index = index;
    e.eax = eax;
    e.ebx = ebx;
    e.ecx = ecx;
    e.edx = edx;
    return e;
}

std::optional<kvm_cpuid_entry2> find(const std::vector<kvm_cpuid_entry2>& table, uint32_t function,
                                     uint32_t index = 0) {
    for (const auto& e : table) {
        if (e.function == function && e.index == index) return e;
    }
    return std::nullopt;
}

// eax, ebx, ecx, edx of an entry, for comparisons that print.
std::vector<uint32_t> regs(const kvm_cpuid_entry2& e) { return {e.eax, e.ebx, e.ecx, e.edx}; }

std::vector<kvm_cpuid_entry2> synthetic_supported() {
    return {
        leaf(0x0, 0, 0x1f, 0x756e6547, 0x6c65746e, 0x49656e69),
        leaf(0x1, 0, 0x000806f8, 0xaa000800, 0x00000001, 0x00000010),  // stale APIC ID 0xaa, CLFLUSH 8
        leaf(0x4, 0, 0xfc004121, 0x01c0003f, 0x3f, 0),                  // 64 cores, sharing bits set
        leaf(0x7, 0, 0, 0x1, 0, (1u << 29) | (1u << 4)),
        leaf(0x7, 1, 0, 0, 0, 1u << 29),
        leaf(0xb, 0, 9, 9, 9, 9),
        leaf(0xb, 1, 9, 9, 9, 9),
        leaf(0xb, 2, 9, 9, 9, 9),
        leaf(0x80000000, 0, 0x80000008, 0, 0, 0),
    };
}

uint32_t lapic_reg(const kvm_lapic_state& s, size_t offset) {
    uint32_t v;
    std::memcpy(&v, s.regs + offset, sizeof(v));
    return v;
}

}  // namespace

TEST_CASE("cpu setup: the CPUID table of vCPU 2 of 3", "[cpu_setup]") {
    const auto supported = synthetic_supported();
    const auto table = vmm::build_vcpu_cpuid(supported, 2, 3);
    REQUIRE(table.size() == supported.size() + 1);  // the KVM signature leaf is added

    // Leaf 1: APIC ID 2, 3 logical processors, CLFLUSH size kept; hypervisor and HTT bits on.
    CHECK(regs(*find(table, 0x1)) == std::vector<uint32_t>{0x000806f8, 0x02030800, 0x80000001, 0x10000010});
    // Leaf 4: cores per package - 1 = 2 in EAX[31:26], no sharing bits [25:14].
    CHECK(find(table, 0x4)->eax == 0x08000121);
    // Leaf 7: ARCH_CAPABILITIES hidden in subleaf 0 only.
    CHECK(find(table, 0x7, 0)->edx == 1u << 4);
    CHECK(find(table, 0x7, 1)->edx == 1u << 29);
    // Leaf 0xb: SMT level of one thread, core level of 3 (shift 2), x2APIC ID 2 everywhere.
    CHECK(regs(*find(table, 0xb, 0)) == std::vector<uint32_t>{0, 1, 0x100, 2});
    CHECK(regs(*find(table, 0xb, 1)) == std::vector<uint32_t>{2, 3, 0x201, 2});
    CHECK(regs(*find(table, 0xb, 2)) == std::vector<uint32_t>{0, 0, 2, 2});
    CHECK(regs(*find(table, kKvmSignatureLeaf)) == std::vector<uint32_t>{kKvmSignatureLeaf, kKvmKvm, kVmKv, kM});
    // Leaves the set-up has no business with are copied unchanged.
    CHECK(regs(*find(table, 0x0)) == regs(supported[0]));
    CHECK(regs(*find(table, 0x80000000)) == regs(supported.back()));
}

TEST_CASE("cpu setup: one vCPU, and a KVM leaf already supported", "[cpu_setup]") {
    auto supported = synthetic_supported();
    supported.push_back(leaf(kKvmSignatureLeaf, 0, 0x40000001, 0, 0, 0));
    const auto table = vmm::build_vcpu_cpuid(supported, 0, 1);
    REQUIRE(table.size() == supported.size());  // the signature is filled in, not added again

    CHECK(find(table, 0x1)->ebx == 0x00010800);
    CHECK((find(table, 0x1)->edx & (1u << 28)) == 0);  // no HTT for a single vCPU
    CHECK(find(table, 0x4)->eax == 0x00000121);
    CHECK(regs(*find(table, 0xb, 1)) == std::vector<uint32_t>{0, 1, 0x201, 0});
    // Its EAX (the highest hypervisor leaf) is KVM's own, kept.
    CHECK(regs(*find(table, kKvmSignatureLeaf)) == std::vector<uint32_t>{0x40000001, kKvmKvm, kVmKv, kM});
}

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
    vmm::configure_vcpu(*vcpu, supported, 2);

    const auto cpuid = vcpu->get_cpuid();
    CHECK(cpuid.size() == vmm::build_vcpu_cpuid(supported, 1, 2).size());
    const auto l1 = find(cpuid, 0x1);
    REQUIRE(l1);
    CHECK(l1->ebx >> 24 == 1);             // initial APIC ID = vCPU id
    CHECK(((l1->ebx >> 16) & 0xff) == 2);  // logical processors
    CHECK((l1->ecx & (1u << 31)) != 0);    // hypervisor
    CHECK((l1->edx & (1u << 28)) != 0);    // HTT
    if (const auto l7 = find(cpuid, 0x7, 0)) {
        CHECK((l7->edx & (1u << 29)) == 0);  // no ARCH_CAPABILITIES
    }
    if (find(supported, 0xb, 1)) {
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
