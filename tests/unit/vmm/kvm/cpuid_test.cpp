// Tests for vmm/kvm/cpuid: the per-vCPU CPUID table built from synthetic Intel and AMD supported tables (no KVM).
#include <catch2/catch.hpp>

#include <bit>
#include <optional>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "vmm/kvm/cpuid.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_cpuid_test {

namespace vmm = embervm::vmm;

namespace {

constexpr uint32_t kKvmSignatureLeaf = 0x40000000;
constexpr uint32_t kKvmKvm = 0x4b4d564b, kVmKv = 0x564b4d56, kM = 0x4d;  // "KVMKVMKVM\0\0\0"
constexpr uint32_t kSignificant = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;

kvm_cpuid_entry2 leaf(uint32_t function, uint32_t index, uint32_t eax, uint32_t ebx, uint32_t ecx, uint32_t edx,
                      uint32_t flags = 0) {
    kvm_cpuid_entry2 e{};
    e.function = function;
    e.index = index;
    e.flags = flags;
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

// XSAVE sub-leaves shared by both tables: x87, SSE, AVX (256 bytes at 576), PKRU (8 at 2688).
void add_xsave(std::vector<kvm_cpuid_entry2>& t) {
    t.push_back(leaf(0xd, 0, 0x207, 0xa88, 0xa88, 0, kSignificant));  // sizes for the host's XCR0
    t.push_back(leaf(0xd, 1, 0xf, 0, 0, 0, kSignificant));             // XSAVEOPT, XSAVEC, XGETBV1, XSAVES
    t.push_back(leaf(0xd, 2, 0x100, 0x240, 0, 0, kSignificant));
    t.push_back(leaf(0xd, 9, 0x8, 0xa80, 0, 0, kSignificant));
}

std::vector<kvm_cpuid_entry2> intel_supported() {
    std::vector<kvm_cpuid_entry2> t = {
        leaf(0x0, 0, 0x1f, 0x756e6547, 0x6c65746e, 0x49656e69),
        leaf(0x1, 0, 0x000806f8, 0xaa000800, 0x00200001, 0x00000010),  // stale APIC ID 0xaa, CLFLUSH 8, x2APIC
        leaf(0x4, 0, 0xfc004121, 0x01c0003f, 0x3f, 0, kSignificant),    // L1d: 64 cores, sharing bits set
        leaf(0x4, 1, 0xfc004122, 0x01c0003f, 0x3f, 0, kSignificant),    // L1i
        leaf(0x4, 2, 0xfc01c143, 0x03c0003f, 0x7ff, 0, kSignificant),   // L2
        leaf(0x4, 3, 0xfc3fc163, 0x03c0003f, 0x7fff, 4, kSignificant),  // L3
        leaf(0x4, 4, 0, 0, 0, 0, kSignificant),                         // no more caches
        leaf(0x7, 0, 0, 0x1, 0, (1u << 29) | (1u << 4), kSignificant),
        leaf(0x7, 1, 0, 0, 0, 1u << 29, kSignificant),
        leaf(0xb, 0, 9, 9, 9, 9, kSignificant),
        leaf(0xb, 1, 9, 9, 9, 9, kSignificant),
        leaf(0x1f, 0, 9, 9, 9, 9, kSignificant),
        leaf(0x1f, 1, 9, 9, 9, 9, kSignificant),
        leaf(0x1f, 2, 9, 9, 9, 9, kSignificant),
        leaf(0x1f, 3, 9, 9, 9, 9, kSignificant),
        leaf(0x80000000, 0, 0x80000008, 0, 0, 0),
        leaf(0x80000001, 0, 0, 0, 0x00000123, 0x2c100800),  // ECX bit 1 reserved on Intel, set here
        leaf(0x80000008, 0, 0x3027, 0, 0, 0),
    };
    add_xsave(t);
    return t;
}

// Like KVM_GET_SUPPORTED_CPUID on an AMD host with TOPOEXT (0x8000001D/E present).
std::vector<kvm_cpuid_entry2> amd_supported() {
    std::vector<kvm_cpuid_entry2> t = {
        leaf(0x0, 0, 0x10, 0x68747541, 0x444d4163, 0x69746e65),
        leaf(0x1, 0, 0x00a00f11, 0x00000800, 0x76f83203, 0x0f8bfbfd),
        leaf(0x4, 0, 0, 0, 0, 0, kSignificant),  // not used on AMD
        leaf(0xb, 0, 0, 0, 0, 0, kSignificant),
        leaf(0x80000000, 0, 0x80000021, 0x68747541, 0x444d4163, 0x69746e65),
        leaf(0x80000001, 0, 0x00a00f11, 0, 0x00400075, 0xedd3fbfd),  // TOPOEXT
        leaf(0x80000008, 0, 0x3030, 0x0, 0x0001f07f, 0),             // host: 128 cores, 7 core bits, PerfTscSize
        leaf(0x8000001d, 0, 0x00004121, 0x01c0003f, 0x3f, 0, kSignificant),  // L1d, 2 threads
        leaf(0x8000001d, 1, 0x00004122, 0x01c0003f, 0x3f, 0, kSignificant),  // L1i
        leaf(0x8000001d, 2, 0x00004143, 0x01c0003f, 0x3ff, 2, kSignificant),  // L2
        leaf(0x8000001d, 3, 0x0003c163, 0x03c0003f, 0x7fff, 1, kSignificant),  // L3, 16 threads
        leaf(0x8000001d, 4, 0, 0, 0, 0, kSignificant),
        leaf(0x8000001e, 0, 0x12, 0x0109, 0x0303, 0),  // the host's APIC 0x12, 2 threads/core, 4 nodes
    };
    add_xsave(t);
    return t;
}

uint32_t sharing(const kvm_cpuid_entry2& e) { return (e.eax >> 14) & 0xfff; }

}  // namespace

TEST_CASE("cpuid: Intel topology for 1, 2, 3 and 4 vCPUs", "[cpuid]") {
    const auto supported = intel_supported();
    for (const uint32_t count : {1u, 2u, 3u, 4u}) {
        for (uint32_t index = 0; index < count; index++) {
            INFO("vCPU " << index << " of " << count);
            const auto t = vmm::normalize_vcpu_cpuid(supported, {.index = index, .count = count});
            // Leaf 1: APIC ID; addressable logical processor IDs, a power of two (4 for 3 vCPUs);
            // CLFLUSH 8 kept; HTT only with more than one vCPU; hypervisor.
            const uint32_t addressable = count == 3 ? 4 : count;
            const auto l1 = *find(t, 0x1);
            CHECK(l1.ebx == ((index << 24) | (addressable << 16) | 0x0800));
            CHECK(((l1.edx >> 28) & 1) == (count > 1 ? 1u : 0u));
            CHECK((l1.ecx & (1u << 31)) != 0);
            CHECK((l1.ecx & (1u << 24)) == 0);  // no TSC deadline unless asked for
            // Leaves 0xB and 0x1F: SMT level (1 thread), core level (count, shift), end; x2APIC ID.
            const uint32_t shift = count == 1 ? 0 : count == 2 ? 1 : 2;
            for (const uint32_t f : {0xbu, 0x1fu}) {
                CHECK(regs(*find(t, f, 0)) == std::vector<uint32_t>{0, 1, 0x100, index});
                CHECK(regs(*find(t, f, 1)) == std::vector<uint32_t>{shift, count, 0x201, index});
                CHECK(regs(*find(t, f, 2)) == std::vector<uint32_t>{0, 0, 2, index});
                CHECK(!find(t, f, 3));  // the host's die level is gone
                CHECK(find(t, f, 1)->flags == kSignificant);
            }
            // Leaf 4: cores - 1 in [31:26]; L1/L2 private, L3 shared by all; the rest kept.
            for (uint32_t i = 0; i < 4; i++) {
                const auto c = *find(t, 0x4, i);
                CHECK(c.eax >> 26 == count - 1);
                CHECK(sharing(c) == (i == 3 ? count - 1 : 0));
                CHECK((c.eax & 0x3fff) == (supported[2 + i].eax & 0x3fff));
                CHECK(c.ebx == supported[2 + i].ebx);
            }
            CHECK(regs(*find(t, 0x4, 4)) == std::vector<uint32_t>{0, 0, 0, 0});
            // 0x80000008 ECX and 0x80000001 ECX bit 1 (AMD's CmpLegacy) are reserved on Intel: untouched.
            CHECK(regs(*find(t, 0x80000008)) == std::vector<uint32_t>{0x3027, 0, 0, 0});
            CHECK(regs(*find(t, 0x80000001)) == std::vector<uint32_t>{0, 0, 0x123, 0x2c100800});
        }
    }
}

TEST_CASE("cpuid: AMD topology for 1, 2, 3 and 4 vCPUs", "[cpuid]") {
    const auto supported = amd_supported();
    for (const uint32_t count : {1u, 2u, 3u, 4u}) {
        for (uint32_t index = 0; index < count; index++) {
            INFO("vCPU " << index << " of " << count);
            const auto t = vmm::normalize_vcpu_cpuid(supported, {.index = index, .count = count});
            // Leaf 1: LogicalProcessorCount is the count itself on AMD (3 for 3 vCPUs), HTT with
            // more than one; 0x80000001 ECX: CmpLegacy with more than one core, the rest kept.
            CHECK(find(t, 0x1)->ebx == ((index << 24) | (count << 16) | 0x0800));
            CHECK(((find(t, 0x1)->edx >> 28) & 1) == (count > 1 ? 1u : 0u));
            CHECK(find(t, 0x80000001)->ecx == (count > 1 ? 0x00400077u : 0x00400075u));
            CHECK(find(t, 0x80000001)->edx == 0xedd3fbfd);
            // NC = count - 1, APIC ID core bits = ceil(log2(count)); PerfTscSize [17:16] kept.
            const uint32_t bits = count == 1 ? 0 : count == 2 ? 1 : 2;
            CHECK(find(t, 0x80000008)->ecx == (0x00010000 | (bits << 12) | (count - 1)));
            // 0x8000001E: extended APIC ID, core ID = index, one thread per core, one node.
            CHECK(regs(*find(t, 0x8000001e)) == std::vector<uint32_t>{index, index, 0, 0});
            // 0x8000001D: L1/L2 private, L3 shared by all vCPUs; the rest kept.
            for (uint32_t i = 0; i < 4; i++) {
                const auto c = *find(t, 0x8000001d, i);
                CHECK(sharing(c) == (i == 3 ? count - 1 : 0));
                CHECK((c.eax & 0x3fff) == (supported[7 + i].eax & 0x3fff));
                CHECK(c.ecx == supported[7 + i].ecx);
            }
            CHECK(regs(*find(t, 0x8000001d, 4)) == std::vector<uint32_t>{0, 0, 0, 0});
            // Leaf 4 has no caches on AMD: left alone. Leaf 0xB gets the levels; no 0x1F made up.
            CHECK(regs(*find(t, 0x4)) == std::vector<uint32_t>{0, 0, 0, 0});
            CHECK(find(t, 0xb, 1)->ebx == count);
            CHECK(!find(t, 0x1f));
        }
    }
}

TEST_CASE("cpuid: AMD CmpLegacy follows the vCPU count, not the host", "[cpuid]") {
    auto supported = amd_supported();
    supported[5].ecx |= 1u << 1;  // the host's many cores
    REQUIRE(supported[5].function == 0x80000001);
    CHECK(find(vmm::normalize_vcpu_cpuid(supported, {.index = 0, .count = 1}), 0x80000001)->ecx == 0x00400075);
    CHECK(find(vmm::normalize_vcpu_cpuid(supported, {.index = 1, .count = 2}), 0x80000001)->ecx == 0x00400077);
    // Hygon is AMD here too.
    supported[0].ebx = 0x6f677948;
    supported[5].ecx &= ~(1u << 1);
    CHECK(find(vmm::normalize_vcpu_cpuid(supported, {.index = 2, .count = 3}), 0x80000001)->ecx == 0x00400077);
}

TEST_CASE("cpuid: no 0x8000001E or 0x8000001D without them in the supported table", "[cpuid]") {
    auto supported = amd_supported();
    std::erase_if(supported, [](const kvm_cpuid_entry2& e) { return e.function >= 0x8000001d; });
    const auto t = vmm::normalize_vcpu_cpuid(supported, {.index = 1, .count = 2});
    CHECK(!find(t, 0x8000001d));
    CHECK(!find(t, 0x8000001e));
    CHECK(find(t, 0x80000008)->ecx == 0x00011001);
}

TEST_CASE("cpuid: the TSC-deadline bit only when the LAPIC has the mode", "[cpuid]") {
    for (auto supported : {intel_supported(), amd_supported()}) {
        CHECK((find(vmm::normalize_vcpu_cpuid(supported, {.tsc_deadline = true}), 0x1)->ecx & (1u << 24)) != 0);
        CHECK((find(vmm::normalize_vcpu_cpuid(supported, {.tsc_deadline = false}), 0x1)->ecx & (1u << 24)) == 0);
        // Even if the supported table had it (it never does: KVM leaves it to the VMM).
        supported[1].ecx |= 1u << 24;
        CHECK((find(vmm::normalize_vcpu_cpuid(supported, {.tsc_deadline = false}), 0x1)->ecx & (1u << 24)) == 0);
    }
}

TEST_CASE("cpuid: XSAVE sizes follow the offered features", "[cpuid]") {
    auto supported = intel_supported();
    auto t = vmm::normalize_vcpu_cpuid(supported, {});
    // Sub-leaf 0: features kept; EBX for XCR0 = x87 (reset); ECX for all of them (PKRU ends at 2696).
    CHECK(regs(*find(t, 0xd, 0)) == std::vector<uint32_t>{0x207, 576, 2696, 0});
    // Sub-leaf 1: XCR0 | IA32_XSS at reset, compacted: the legacy area and the header.
    CHECK(regs(*find(t, 0xd, 1)) == std::vector<uint32_t>{0xf, 576, 0, 0});
    CHECK(regs(*find(t, 0xd, 2)) == std::vector<uint32_t>{0x100, 0x240, 0, 0});

    // Without PKRU offered, the largest area ends after AVX.
    for (auto& e : supported) {
        if (e.function == 0xd && e.index == 0) e.eax = 0x7;
    }
    t = vmm::normalize_vcpu_cpuid(supported, {});
    CHECK(regs(*find(t, 0xd, 0)) == std::vector<uint32_t>{0x7, 576, 832, 0});
}

TEST_CASE("cpuid: the KVM signature and ARCH_CAPABILITIES", "[cpuid]") {
    auto supported = intel_supported();
    auto t = vmm::normalize_vcpu_cpuid(supported, {});
    CHECK(regs(*find(t, kKvmSignatureLeaf)) == std::vector<uint32_t>{kKvmSignatureLeaf, kKvmKvm, kVmKv, kM});
    CHECK(find(t, 0x7, 0)->edx == 1u << 4);    // hidden in sub-leaf 0 only
    CHECK(find(t, 0x7, 1)->edx == 1u << 29);
    // A signature leaf KVM already has is filled in, its EAX (highest hypervisor leaf) kept.
    supported.push_back(leaf(kKvmSignatureLeaf, 0, 0x40000001, 0, 0, 0));
    t = vmm::normalize_vcpu_cpuid(supported, {});
    CHECK(regs(*find(t, kKvmSignatureLeaf)) == std::vector<uint32_t>{0x40000001, kKvmKvm, kVmKv, kM});
    size_t signatures = 0;
    for (const auto& e : t) signatures += e.function == kKvmSignatureLeaf ? 1 : 0;
    CHECK(signatures == 1);
}

// Property: over random supported tables, every feature bit the result sets was in the input,
// except leaf 1 ECX hypervisor/TSC-deadline and EDX HTT, and AMD's 0x80000001 ECX CmpLegacy;
// leaves outside the topology, XSAVE and KVM-signature ones are copied unchanged; no (function,
// index) appears twice.
TEST_CASE("cpuid: no feature bit the supported table lacks (random tables)", "[cpuid]") {
    std::mt19937 rng(20261205);  // 32-bit results
    const std::vector<uint32_t> functions = {0x0, 0x1, 0x4, 0x6, 0x7, 0xb, 0xd, 0x1f, 0x40000001,
                                             0x80000000, 0x80000001, 0x80000007, 0x80000008,
                                             0x8000001d, 0x8000001e, 0x8000001f};
    // Registers that hold sizes, IDs and counts rather than feature bits.
    auto is_topology_or_size = [](uint32_t f) {
        return f == 0x4 || f == 0xb || f == 0xd || f == 0x1f || f == 0x80000008 || f == 0x8000001d ||
               f == 0x8000001e || f == kKvmSignatureLeaf;
    };
    for (int round = 0; round < 500; round++) {
        std::vector<kvm_cpuid_entry2> supported;
        for (const uint32_t f : functions) {
            const uint32_t subleaves = (f == 0x4 || f == 0xb || f == 0xd || f == 0x1f || f == 0x8000001d) ? 1 + rng() % 4 : 1;
            if (rng() % 4 == 0) continue;
            for (uint32_t i = 0; i < subleaves; i++) {
                supported.push_back(leaf(f, i, rng(), rng(), rng(), rng(), subleaves > 1 ? kSignificant : 0));
            }
        }
        const bool amd = round % 2 == 0;
        if (amd) supported[0] = leaf(0x0, 0, 0x1f, 0x68747541, 0x444d4163, 0x69746e65);
        const uint32_t count = 1 + rng() % 8;
        const vmm::VcpuCpuidParams params{.index = static_cast<uint32_t>(rng() % count), .count = count, .tsc_deadline = rng() % 2 == 0};
        const auto t = vmm::normalize_vcpu_cpuid(supported, params);

        std::set<std::pair<uint32_t, uint32_t>> seen;
        for (const auto& e : t) {
            INFO("round " << round << " leaf " << std::hex << e.function << "." << e.index);
            CHECK(seen.insert({e.function, e.index}).second);
            const auto in = find(supported, e.function, e.index);
            if (e.function == 0xd) {  // feature masks kept, only sizes change
                REQUIRE(in);
                CHECK(e.eax == in->eax);
                CHECK(e.edx == in->edx);
                if (e.index != 0) CHECK(e.ecx == in->ecx);
            }
            if (is_topology_or_size(e.function)) continue;
            REQUIRE(in);
            if (e.function == 0x1) {
                const uint32_t ecx_extra = (1u << 31) | (params.tsc_deadline ? 1u << 24 : 0);
                CHECK((e.ecx & ~in->ecx & ~ecx_extra) == 0);
                CHECK((e.edx & ~in->edx & ~(1u << 28)) == 0);
                CHECK(e.eax == in->eax);
                // The logical processor count: the vCPUs on AMD; on Intel the smallest power of
                // two that is not below them.
                const uint32_t logical = (e.ebx >> 16) & 0xff;
                if (amd) {
                    CHECK(logical == count);
                } else {
                    CHECK(std::has_single_bit(logical));
                    CHECK(logical >= count);
                    CHECK(logical / 2 < count);
                }
            } else if (e.function == 0x80000001) {
                // CmpLegacy (ECX bit 1) on AMD says whether there is more than one core.
                const uint32_t cmp_legacy = 1u << 1;
                const uint32_t want_ecx = !amd ? in->ecx : count > 1 ? (in->ecx | cmp_legacy) : (in->ecx & ~cmp_legacy);
                CHECK(regs(e) == std::vector<uint32_t>{in->eax, in->ebx, want_ecx, in->edx});
            } else if (e.function == 0x7 && e.index == 0) {
                CHECK(regs(e) == std::vector<uint32_t>{in->eax, in->ebx, in->ecx, in->edx & ~(1u << 29)});
            } else {
                CHECK(regs(e) == regs(*in));
            }
        }
        // Every supported (function, index) is still there (0xB/0x1F as their levels 0-2).
        for (const auto& e : supported) {
            if (e.function == 0xb || e.function == 0x1f) continue;
            CHECK(find(t, e.function, e.index));
        }
    }
}

}  // namespace unit_cpuid_test
