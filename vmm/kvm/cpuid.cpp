// CPUID normalisation for one vCPU: topology, hypervisor and TSC-deadline bits, XSAVE sizes, KVM's leaves.
#include "vmm/kvm/cpuid.h"

#include <algorithm>
#include <bit>

namespace embervm::vmm {

namespace {
constexpr uint32_t kLeafVendor = 0x0;
constexpr uint32_t kLeafFeatures = 0x1;
constexpr uint32_t kLeafCacheParams = 0x4;
constexpr uint32_t kLeafExtFeatures = 0x7;
constexpr uint32_t kLeafTopology = 0xb;
constexpr uint32_t kLeafXsave = 0xd;
constexpr uint32_t kLeafTopologyV2 = 0x1f;
constexpr uint32_t kLeafKvmSignature = 0x40000000;
constexpr uint32_t kLeafAmdExtFeatures = 0x80000001;
constexpr uint32_t kLeafAmdAddressSizes = 0x80000008;
constexpr uint32_t kLeafAmdCacheTopology = 0x8000001d;
constexpr uint32_t kLeafAmdExtApicId = 0x8000001e;

constexpr uint32_t kEcxTscDeadline = 1u << 24;
constexpr uint32_t kEcxHypervisor = 1u << 31;
constexpr uint32_t kEdxHtt = 1u << 28;
constexpr uint32_t kEdxArchCapabilities = 1u << 29;
constexpr uint32_t kEcxCmpLegacy = 1u << 1;  // leaf 0x80000001 ECX (AMD)

// Leaf 0xB/0x1F level types (ECX[15:8]).
constexpr uint32_t kLevelSmt = 1;
constexpr uint32_t kLevelCore = 2;

// XSAVE: the legacy region and the header, the whole area when XCR0 holds only x87 (and SSE),
// in either format.
constexpr uint32_t kXsaveLegacyAndHeader = 512 + 64;

// "KVMKVMKVM\0\0\0" in EBX, ECX, EDX: lets the guest find its paravirtual features.
constexpr uint32_t kKvmSigEbx = 0x4b4d564b, kKvmSigEcx = 0x564b4d56, kKvmSigEdx = 0x4d;

// Bits needed for `n` distinct IDs (0 for n <= 1).
uint32_t id_bits(uint32_t n) { return n <= 1 ? 0 : static_cast<uint32_t>(std::bit_width(n - 1)); }

const kvm_cpuid_entry2* find_entry(const std::vector<kvm_cpuid_entry2>& table, uint32_t function, uint32_t index) {
    for (const auto& e : table) {
        if (e.function == function && e.index == index) return &e;
    }
    return nullptr;
}

kvm_cpuid_entry2 topology_level(uint32_t function, uint32_t level, const VcpuCpuidParams& p) {
    kvm_cpuid_entry2 e{};
    e.function = function;
    e.index = level;
    e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    e.edx = p.index;  // x2APIC ID, at every level
    if (level == 0) {
        e.eax = 0;  // no thread bits: one thread per core
        e.ebx = 1;
        e.ecx = (kLevelSmt << 8) | level;
    } else if (level == 1) {
        e.eax = id_bits(p.count);  // shift to the package ID
        e.ebx = p.count;
        e.ecx = (kLevelCore << 8) | level;
    } else {
        e.ecx = level;  // invalid level: ends the enumeration
    }
    return e;
}

// Leaf 1 EBX[23:16] with HTT. Intel: the addressable logical processor IDs of the package, a
// power of two (what the APIC ID bits of the package span; 4 for 3 vCPUs, as leaf 0xB's core
// shift says). AMD: LogicalProcessorCount, the number of logical processors itself (AMD parts
// report 12 on 12 threads), i.e. 0x80000008 ECX NC + 1.
uint32_t leaf1_logical_count(uint32_t count, bool amd) {
    const uint32_t n = amd ? count : std::bit_ceil(count);
    return std::min<uint32_t>(n, 0xff);
}

// Cache leaves 4 and 0x8000001D: EAX[7:5] level; [25:14] logical processors sharing it - 1.
// With one thread per core, L1 and L2 are private, L3 (and beyond) shared by the package.
uint32_t with_cache_sharing(uint32_t eax, uint32_t count) {
    const uint32_t level = (eax >> 5) & 7;
    const uint32_t sharing = level >= 3 ? count - 1 : 0;
    return (eax & ~(0xfffu << 14)) | ((sharing & 0xfff) << 14);
}

// Standard-format XSAVE area size for the user features in `mask`: the end of the furthest
// component (sub-leaf i: EAX size, EBX offset).
uint32_t xsave_size(const std::vector<kvm_cpuid_entry2>& table, uint64_t mask) {
    uint32_t size = kXsaveLegacyAndHeader;
    for (uint32_t i = 2; i < 64; i++) {
        if ((mask & (uint64_t{1} << i)) == 0) continue;
        const auto* sub = find_entry(table, kLeafXsave, i);
        if (sub != nullptr) size = std::max(size, sub->ebx + sub->eax);
    }
    return size;
}

void normalize_xsave(std::vector<kvm_cpuid_entry2>& table) {
    const auto* sub0 = find_entry(table, kLeafXsave, 0);
    if (sub0 == nullptr) return;
    const uint64_t user = sub0->eax | (uint64_t{sub0->edx} << 32);
    const uint32_t all_user = xsave_size(table, user);
    for (auto& e : table) {
        if (e.function != kLeafXsave) continue;
        if (e.index == 0) {
            e.ebx = kXsaveLegacyAndHeader;  // XCR0 at reset: x87 only
            e.ecx = all_user;
        } else if (e.index == 1) {
            e.ebx = kXsaveLegacyAndHeader;  // XCR0 | IA32_XSS at reset: x87 only, compacted
        }
    }
}

bool is_amd_like(const std::vector<kvm_cpuid_entry2>& table) {
    const auto* v = find_entry(table, kLeafVendor, 0);
    if (v == nullptr) return false;
    // "AuthenticAMD", "HygonGenuine": EBX "Auth" / "Hygo".
    return v->ebx == 0x68747541 || v->ebx == 0x6f677948;
}
}  // namespace

std::vector<kvm_cpuid_entry2> normalize_vcpu_cpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                                   const VcpuCpuidParams& p) {
    const bool amd = is_amd_like(supported);
    std::vector<kvm_cpuid_entry2> out;
    out.reserve(supported.size() + 8);
    bool topology_done[2] = {false, false};
    for (const auto& in : supported) {
        kvm_cpuid_entry2 e = in;
        switch (e.function) {
            case kLeafFeatures:
                // EBX: [31:24] initial APIC ID, [23:16] logical processors per package; CLFLUSH
                // size and brand index kept.
                e.ebx = (p.index << 24) | (leaf1_logical_count(p.count, amd) << 16) | (e.ebx & 0xffff);
                e.ecx |= kEcxHypervisor;
                e.ecx = p.tsc_deadline ? (e.ecx | kEcxTscDeadline) : (e.ecx & ~kEcxTscDeadline);
                e.edx = p.count > 1 ? (e.edx | kEdxHtt) : (e.edx & ~kEdxHtt);
                break;
            case kLeafCacheParams:
                if ((e.eax & 0x1f) != 0) {  // a cache (type != 0): [31:26] cores per package - 1
                    e.eax = (with_cache_sharing(e.eax, p.count) & 0x3ffffff) | (((p.count - 1) & 0x3f) << 26);
                }
                break;
            case kLeafExtFeatures:
                if (e.index == 0) e.edx &= ~kEdxArchCapabilities;
                break;
            case kLeafTopology:
            case kLeafTopologyV2: {
                // Replaced as a whole by the levels of this topology, once.
                bool& done = topology_done[e.function == kLeafTopologyV2 ? 1 : 0];
                if (!done) {
                    for (uint32_t level = 0; level < 3; level++) out.push_back(topology_level(e.function, level, p));
                    done = true;
                }
                continue;
            }
            case kLeafAmdExtFeatures:
                // AMD's CmpLegacy: set with more than one core in the package (the logical
                // processors leaf 1's HTT and count announce are cores, not SMT threads; Linux
                // then does not take that count for threads per core), clear with one.
                // Reserved on Intel: left as it is.
                if (amd) e.ecx = p.count > 1 ? (e.ecx | kEcxCmpLegacy) : (e.ecx & ~kEcxCmpLegacy);
                break;
            case kLeafAmdAddressSizes:
                if (amd) {
                    // ECX: [15:12] APIC ID bits for the core, [7:0] cores - 1; the rest kept.
                    e.ecx = (e.ecx & ~0xf0ffu) | (id_bits(p.count) << 12) | ((p.count - 1) & 0xff);
                }
                break;
            case kLeafAmdCacheTopology:
                if ((e.eax & 0x1f) != 0) e.eax = with_cache_sharing(e.eax, p.count);
                break;
            case kLeafAmdExtApicId:
                e.eax = p.index;            // extended APIC ID
                e.ebx = p.index & 0xff;     // [15:8] threads per core - 1 = 0, [7:0] core ID
                e.ecx = 0;                  // [10:8] nodes per processor - 1 = 0, [7:0] node ID 0
                e.edx = 0;
                break;
            case kLeafKvmSignature:
                e.ebx = kKvmSigEbx;
                e.ecx = kKvmSigEcx;
                e.edx = kKvmSigEdx;
                break;
            default:
                break;
        }
        out.push_back(e);
    }
    normalize_xsave(out);
    if (find_entry(out, kLeafKvmSignature, 0) == nullptr) {
        kvm_cpuid_entry2 sig{};
        sig.function = kLeafKvmSignature;
        sig.eax = kLeafKvmSignature;
        sig.ebx = kKvmSigEbx;
        sig.ecx = kKvmSigEcx;
        sig.edx = kKvmSigEdx;
        out.push_back(sig);
    }
    return out;
}

}  // namespace embervm::vmm
