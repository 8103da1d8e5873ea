// VMM-side emulation of the x86 instructions KVM's instruction emulator gives up on.
#include "vmm/kvm/insn_emulator.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace embervm::vmm {

namespace {

constexpr size_t kMaxInstructionLength = 15;
constexpr uint64_t kPageSize = 4096;

constexpr uint64_t kFlagCf = 1ULL << 0;
constexpr uint64_t kFlagPf = 1ULL << 2;
constexpr uint64_t kFlagAf = 1ULL << 4;
constexpr uint64_t kFlagZf = 1ULL << 6;
constexpr uint64_t kFlagSf = 1ULL << 7;
constexpr uint64_t kFlagOf = 1ULL << 11;
constexpr uint64_t kFlagRf = 1ULL << 16;
constexpr uint64_t kFlagVm = 1ULL << 17;
constexpr uint64_t kFlagAc = 1ULL << 18;
constexpr uint64_t kStatusFlags = kFlagCf | kFlagPf | kFlagAf | kFlagZf | kFlagSf | kFlagOf;

constexpr uint64_t kCr0Pe = 1ULL << 0;
constexpr uint64_t kCr0Mp = 1ULL << 1;
constexpr uint64_t kCr0Ts = 1ULL << 3;
constexpr uint64_t kCr4La57 = 1ULL << 12;
constexpr uint64_t kCr4FsGsBase = 1ULL << 16;
constexpr uint64_t kEferLma = 1ULL << 10;

constexpr uint8_t kVectorBreakpoint = 3;
constexpr uint8_t kVectorInvalidOpcode = 6;
constexpr uint8_t kVectorDeviceNotAvailable = 7;
constexpr uint8_t kVectorStackFault = 12;
constexpr uint8_t kVectorGeneralProtection = 13;

constexpr uint8_t kRexW = 8;
constexpr uint8_t kRexR = 4;
constexpr uint8_t kRexX = 2;
constexpr uint8_t kRexB = 1;

// Register numbers as encoded in ModRM/SIB (with the REX bit on top).
constexpr unsigned kRegRsp = 4;
constexpr unsigned kRegRbp = 5;

constexpr const char* kNoXsaveHint =
    "XSAVE-family instructions cannot be emulated by the VMM; boot the guest kernel with `noxsave`";

enum class Segment { Es, Cs, Ss, Ds, Fs, Gs };

// The integer type of kvm_regs and kvm_segment fields (__u64, not always uint64_t).
using Reg = decltype(kvm_regs::rax);

Reg& gpr(kvm_regs& regs, unsigned n) {
    switch (n & 15) {
        case 0: return regs.rax;
        case 1: return regs.rcx;
        case 2: return regs.rdx;
        case 3: return regs.rbx;
        case 4: return regs.rsp;
        case 5: return regs.rbp;
        case 6: return regs.rsi;
        case 7: return regs.rdi;
        case 8: return regs.r8;
        case 9: return regs.r9;
        case 10: return regs.r10;
        case 11: return regs.r11;
        case 12: return regs.r12;
        case 13: return regs.r13;
        case 14: return regs.r14;
        default: return regs.r15;
    }
}

uint64_t size_mask(size_t size) { return size >= 8 ? ~0ULL : (1ULL << (size * 8)) - 1; }

uint64_t load_le(std::span<const uint8_t> bytes) {
    uint64_t v = 0;
    for (size_t i = 0; i < bytes.size() && i < 8; i++) {
        v |= static_cast<uint64_t>(bytes[i]) << (8 * i);
    }
    return v;
}

void store_le(std::span<uint8_t> bytes, uint64_t v) {
    for (size_t i = 0; i < bytes.size() && i < 8; i++) {
        bytes[i] = static_cast<uint8_t>(v >> (8 * i));
    }
}

struct Prefixes {
    bool operand_size = false;  // 66
    bool address_size = false;  // 67
    bool lock = false;          // f0
    uint8_t rep = 0;            // the last of f2/f3, 0 if neither
    std::optional<Segment> segment;
    uint8_t rex = 0;  // the REX prefix right before the opcode (64-bit mode), 0 if none

    bool rex_has(uint8_t bit) const { return (rex & bit) != 0; }
    // 66, f2 or f3: "NP" instructions are undefined with them.
    bool any_simd_prefix() const { return operand_size || rep != 0; }
};

struct ModRm {
    uint8_t mod;
    uint8_t reg;  // without REX.R
    uint8_t rm;   // without REX.B
};

// The r/m operand of a ModRM byte: a register, or the parts of a memory address.
struct RmOperand {
    bool is_register = false;
    unsigned reg = 0;  // register form, REX.B applied
    std::optional<unsigned> base;
    std::optional<unsigned> index;
    unsigned scale_shift = 0;
    uint64_t displacement = 0;  // sign-extended
    bool rip_relative = false;
};

struct LinearAddress {
    uint64_t address;
    Segment segment;
};

// Thrown inside Emulation to end it early with a result (decode errors, faults).
struct Stop {
    EmulationResult result;
};

// One instruction: decodes from `bytes`, works on a copy of the CPU state.
class Emulation {
public:
    Emulation(std::span<const uint8_t> bytes, const CpuState& cpu, EmulatorMemory& mem)
        : bytes_(bytes),
          original_(cpu),
          cpu_(cpu),
          mem_(mem),
          long_mode_((cpu.sregs.efer & kEferLma) != 0 && cpu.sregs.cs.l != 0) {}

    EmulationResult run() {
        try {
            decode_prefixes();
            return execute_one_byte(opcode_);
        } catch (Stop& stop) {
            return std::move(stop.result);
        }
    }

    const CpuState& state() const { return cpu_; }

private:
    // ---- results ----

    EmulationResult make_result(EmulationResult::Status status, std::string detail = {}) const {
        EmulationResult r;
        r.status = status;
        r.mnemonic = mnemonic_;
        r.detail = std::move(detail);
        return r;
    }

    // The instruction ran to completion: advance RIP past it (RF clears, as on hardware).
    EmulationResult complete() {
        uint64_t next = cpu_.regs.rip + length_;
        if (!long_mode_) {
            next &= cpu_.sregs.cs.db != 0 ? 0xffffffffULL : 0xffffULL;
        }
        cpu_.regs.rip = next;
        cpu_.regs.rflags &= ~kFlagRf;
        return make_result(EmulationResult::Status::Emulated);
    }

    // A fault: the state stays as before the instruction and the exception is to be injected.
    [[noreturn]] void fault(uint8_t vector, std::optional<uint32_t> error_code, std::string detail) {
        cpu_ = original_;
        EmulationResult r = make_result(EmulationResult::Status::Emulated, std::move(detail));
        r.exception_vector = vector;
        r.exception_error_code = error_code;
        throw Stop{std::move(r)};
    }

    [[noreturn]] void invalid_opcode(const std::string& why) {
        fault(kVectorInvalidOpcode, std::nullopt, "#UD: " + why);
    }

    [[noreturn]] void unsupported(std::string detail) {
        throw Stop{make_result(EmulationResult::Status::Unsupported, std::move(detail))};
    }

    [[noreturn]] void memory_fault(const char* what, uint64_t address, size_t size) {
        throw Stop{make_result(EmulationResult::Status::MemoryFault,
                               fmt::format("cannot {} {} bytes at linear address {:#x}", what, size, address))};
    }

    // ---- decoding ----

    uint8_t fetch() {
        if (length_ >= kMaxInstructionLength) {
            unsupported("instruction is longer than the 15-byte x86 limit (#GP on hardware)");
        }
        if (length_ >= bytes_.size()) {
            unsupported(fmt::format("instruction bytes truncated after {} byte(s)", bytes_.size()));
        }
        return bytes_[length_++];
    }

    uint64_t fetch_disp8() { return static_cast<uint64_t>(static_cast<int64_t>(static_cast<int8_t>(fetch()))); }

    uint64_t fetch_disp32() {
        uint32_t v = 0;
        for (unsigned i = 0; i < 4; i++) {
            v |= static_cast<uint32_t>(fetch()) << (8 * i);
        }
        return static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(v)));
    }

    void decode_prefixes() {
        for (;;) {
            const uint8_t b = fetch();
            switch (b) {
                case 0x66: p_.operand_size = true; break;
                case 0x67: p_.address_size = true; break;
                case 0xf0: p_.lock = true; break;
                case 0xf2:
                case 0xf3: p_.rep = b; break;
                case 0x26: p_.segment = Segment::Es; break;
                case 0x2e: p_.segment = Segment::Cs; break;
                case 0x36: p_.segment = Segment::Ss; break;
                case 0x3e: p_.segment = Segment::Ds; break;
                case 0x64: p_.segment = Segment::Fs; break;
                case 0x65: p_.segment = Segment::Gs; break;
                default:
                    if (long_mode_ && (b & 0xf0) == 0x40) {
                        p_.rex = b;
                        continue;
                    }
                    opcode_ = b;
                    return;
            }
            p_.rex = 0;  // a REX prefix followed by a legacy prefix is ignored
        }
    }

    ModRm fetch_modrm() {
        const uint8_t b = fetch();
        return ModRm{static_cast<uint8_t>(b >> 6), static_cast<uint8_t>((b >> 3) & 7), static_cast<uint8_t>(b & 7)};
    }

    unsigned reg_operand(const ModRm& m) const { return m.reg | (p_.rex_has(kRexR) ? 8u : 0u); }

    // Decodes the SIB and displacement bytes after a ModRM byte (64-bit addressing).
    RmOperand decode_rm(const ModRm& m) {
        RmOperand op;
        const unsigned rex_b = p_.rex_has(kRexB) ? 8 : 0;
        if (m.mod == 3) {
            op.is_register = true;
            op.reg = m.rm | rex_b;
            return op;
        }
        if (m.rm == 4) {
            const uint8_t sib = fetch();
            op.scale_shift = sib >> 6;
            const unsigned index = ((sib >> 3) & 7) | (p_.rex_has(kRexX) ? 8u : 0u);
            if (index != kRegRsp) {  // 100b without REX.X means "no index"; r12 is a valid index
                op.index = index;
            }
            if ((sib & 7) == 5 && m.mod == 0) {
                op.displacement = fetch_disp32();  // no base
            } else {
                op.base = (sib & 7) | rex_b;
            }
        } else if (m.rm == 5 && m.mod == 0) {
            op.rip_relative = true;
            op.displacement = fetch_disp32();
        } else {
            op.base = m.rm | rex_b;
        }
        if (m.mod == 1) {
            op.displacement = fetch_disp8();
        } else if (m.mod == 2) {
            op.displacement = fetch_disp32();
        }
        return op;
    }

    // The linear address of a memory operand; call once the whole instruction is decoded
    // (RIP-relative addresses count from the next instruction).
    LinearAddress linear_address(const RmOperand& op) {
        uint64_t ea = op.displacement;
        if (op.rip_relative) {
            ea += cpu_.regs.rip + length_;
        }
        if (op.base) {
            ea += gpr(cpu_.regs, *op.base);
        }
        if (op.index) {
            ea += gpr(cpu_.regs, *op.index) << op.scale_shift;
        }
        if (p_.address_size) {
            ea &= 0xffffffffULL;
        }
        const bool stack = op.base && (*op.base == kRegRsp || *op.base == kRegRbp);
        const Segment segment = p_.segment.value_or(stack ? Segment::Ss : Segment::Ds);
        // In 64-bit mode only FS and GS have a base.
        if (segment == Segment::Fs) {
            ea += cpu_.sregs.fs.base;
        } else if (segment == Segment::Gs) {
            ea += cpu_.sregs.gs.base;
        }
        return LinearAddress{ea, segment};
    }

    bool canonical(uint64_t address) const {
        const unsigned width = (cpu_.sregs.cr4 & kCr4La57) != 0 ? 57 : 48;
        const unsigned shift = 64 - width;
        return static_cast<uint64_t>(static_cast<int64_t>(address << shift) >> shift) == address;
    }

    void check_canonical(const LinearAddress& a, size_t size) {
        if (!canonical(a.address) || !canonical(a.address + size - 1)) {
            const bool stack = a.segment == Segment::Ss;
            fault(stack ? kVectorStackFault : kVectorGeneralProtection, 0,
                  fmt::format("{}: non-canonical address {:#x}", stack ? "#SS" : "#GP", a.address));
        }
    }

    // ---- state helpers ----

    unsigned cpl() const {
        if ((cpu_.sregs.cr0 & kCr0Pe) == 0) {
            return 0;
        }
        if ((cpu_.regs.rflags & kFlagVm) != 0) {
            return 3;
        }
        return cpu_.sregs.ss.dpl;  // what KVM itself takes as the CPL
    }

    uint64_t read_reg(unsigned n, size_t size) { return gpr(cpu_.regs, n) & size_mask(size); }

    // Register writes as on hardware: 32-bit results zero-extend, 16-bit ones merge.
    void write_reg(unsigned n, size_t size, uint64_t value) {
        Reg& r = gpr(cpu_.regs, n);
        if (size == 2) {
            r = (r & ~0xffffULL) | (value & 0xffffULL);
        } else {
            r = value & size_mask(size);
        }
    }

    uint64_t read_memory(const LinearAddress& a, size_t size) {
        check_canonical(a, size);
        std::array<uint8_t, 8> buf{};
        const auto data = std::span<uint8_t>(buf).first(std::min<size_t>(size, buf.size()));
        if (!mem_.read(a.address, data)) {
            memory_fault("read", a.address, size);
        }
        return load_le(data);
    }

    void set_zf(bool zf) { cpu_.regs.rflags = zf ? (cpu_.regs.rflags | kFlagZf) : (cpu_.regs.rflags & ~kFlagZf); }

    void reject_lock() {
        if (p_.lock) {
            invalid_opcode("lock prefix on " + mnemonic_);
        }
    }

    void reject_simd_prefixes() {
        if (p_.any_simd_prefix()) {
            unsupported("66/f2/f3 prefix on " + mnemonic_);
        }
    }

    void require_long_mode() {
        if (!long_mode_) {
            unsupported("only emulated in 64-bit mode");
        }
    }

    // ---- instructions ----

    EmulationResult execute_one_byte(uint8_t opcode) {
        switch (opcode) {
            case 0x90: return nop_or_pause();
            case 0x9b: return fwait();
            case 0xcc: return int3();
            case 0x0f: return execute_two_byte(fetch());
            default: unsupported(fmt::format("opcode {:02x} is not emulated", opcode));
        }
    }

    EmulationResult execute_two_byte(uint8_t opcode) {
        switch (opcode) {
            case 0x01: return group7();
            case 0x0d: return prefetch_amd();
            case 0x18: return prefetch_hint();
            case 0x1e: return endbr();
            case 0x1f: return nop_rm();
            case 0xae: return group15();
            case 0xb8: return popcnt();
            case 0xc7: return group9();
            default: unsupported(fmt::format("opcode 0f {:02x} is not emulated", opcode));
        }
    }

    EmulationResult nop_or_pause() {
        if (p_.rex_has(kRexB)) {
            mnemonic_ = "xchg";
            unsupported("xchg r8, rax is not emulated");
        }
        mnemonic_ = p_.rep == 0xf3 ? "pause" : "nop";
        reject_lock();
        return complete();
    }

    // No x87 state is visible here: a pending unmasked x87 exception (#MF) is not modelled.
    EmulationResult fwait() {
        mnemonic_ = "fwait";
        reject_lock();
        if ((cpu_.sregs.cr0 & kCr0Ts) != 0 && (cpu_.sregs.cr0 & kCr0Mp) != 0) {
            fault(kVectorDeviceNotAvailable, std::nullopt, "#NM: CR0.TS and CR0.MP are set");
        }
        return complete();
    }

    // A trap: RIP moves past the int3 and #BP is injected with that return address. Only in
    // 64-bit mode: in real mode KVM's emulator handles int3 itself, and other modes have no
    // kernel that needs it here.
    EmulationResult int3() {
        mnemonic_ = "int3";
        reject_lock();
        require_long_mode();
        EmulationResult r = complete();
        r.exception_vector = kVectorBreakpoint;
        return r;
    }

    // 0f 01 with a fixed ModRM byte: clac, stac, swapgs and the ones we refuse by name.
    EmulationResult group7() {
        const uint8_t modrm = fetch();
        switch (modrm) {
            case 0xca:
            case 0xcb: return clac_stac(modrm == 0xcb);
            case 0xf8: return swapgs();
            case 0xd0: mnemonic_ = "xgetbv"; unsupported(kNoXsaveHint);
            case 0xd1: mnemonic_ = "xsetbv"; unsupported(kNoXsaveHint);
            case 0xf9: mnemonic_ = "rdtscp"; unsupported("rdtscp is not emulated");
            default: unsupported(fmt::format("opcode 0f 01 {:02x} is not emulated", modrm));
        }
    }

    EmulationResult clac_stac(bool set) {
        mnemonic_ = set ? "stac" : "clac";
        reject_simd_prefixes();
        reject_lock();
        if (cpl() != 0) {
            invalid_opcode(mnemonic_ + " at CPL > 0");
        }
        cpu_.regs.rflags = set ? (cpu_.regs.rflags | kFlagAc) : (cpu_.regs.rflags & ~kFlagAc);
        return complete();
    }

    EmulationResult swapgs() {
        mnemonic_ = "swapgs";
        require_long_mode();
        reject_simd_prefixes();
        reject_lock();
        if (cpl() != 0) {
            fault(kVectorGeneralProtection, 0, "#GP: swapgs at CPL > 0");
        }
        const uint64_t gs_base = cpu_.sregs.gs.base;
        cpu_.sregs.gs.base = cpu_.kernel_gs_base;
        cpu_.kernel_gs_base = gs_base;
        return complete();
    }

    // 0f 1f /r: the multi-byte NOP. The memory operand is decoded but never accessed.
    EmulationResult nop_rm() {
        mnemonic_ = "nop";
        require_long_mode();
        reject_lock();
        decode_rm(fetch_modrm());
        return complete();
    }

    // f3 0f 1e fa / fb: endbr64 / endbr32, NOPs as far as emulation goes.
    EmulationResult endbr() {
        const ModRm m = fetch_modrm();
        if (p_.rep != 0xf3 || m.mod != 3 || m.reg != 7 || (m.rm != 2 && m.rm != 3)) {
            unsupported("opcode 0f 1e is only emulated as endbr64/endbr32");
        }
        mnemonic_ = m.rm == 2 ? "endbr64" : "endbr32";
        require_long_mode();
        reject_lock();
        return complete();
    }

    // 0f 18 /0-/3: prefetchnta/t0/t1/t2 m8. Hints: nothing to do.
    EmulationResult prefetch_hint() {
        mnemonic_ = "prefetch";
        require_long_mode();
        const ModRm m = fetch_modrm();
        if (m.mod == 3 || m.reg > 3) {
            unsupported("opcode 0f 18 is only emulated as prefetch{nta,t0,t1,t2} m8");
        }
        reject_lock();
        decode_rm(m);
        return complete();
    }

    // 0f 0d /0, /1: prefetch / prefetchw m8.
    EmulationResult prefetch_amd() {
        mnemonic_ = "prefetchw";
        require_long_mode();
        const ModRm m = fetch_modrm();
        if (m.mod == 3 || m.reg > 1) {
            unsupported("opcode 0f 0d is only emulated as prefetch/prefetchw m8");
        }
        reject_lock();
        decode_rm(m);
        return complete();
    }

    // 0f ae: fences and rd/wr{fs,gs}base (register forms); the XSAVE family is refused.
    EmulationResult group15() {
        const ModRm m = fetch_modrm();
        if (m.mod != 3) {
            static constexpr std::array<const char*, 8> kNames = {"fxsave", "fxrstor", "ldmxcsr", "stmxcsr",
                                                                  "xsave",  "xrstor",  "xsaveopt", "clflush"};
            mnemonic_ = kNames[m.reg];
            if (m.reg >= 4 && m.reg <= 6) {
                unsupported(kNoXsaveHint);
            }
            unsupported(mnemonic_ + " is not emulated");
        }
        if (p_.rep == 0xf3 && !p_.operand_size && m.reg <= 3) {
            return fsgsbase(m);
        }
        switch (m.reg) {
            case 5: mnemonic_ = "lfence"; break;
            case 6: mnemonic_ = "mfence"; break;
            case 7: mnemonic_ = "sfence"; break;
            default: unsupported(fmt::format("opcode 0f ae /{} (register form) is not emulated", m.reg));
        }
        reject_simd_prefixes();
        reject_lock();
        // The fences order this vCPU's accesses; the KVM exit and re-entry already serialize.
        return complete();
    }

    EmulationResult fsgsbase(const ModRm& m) {
        static constexpr std::array<const char*, 4> kNames = {"rdfsbase", "rdgsbase", "wrfsbase", "wrgsbase"};
        mnemonic_ = kNames[m.reg];
        require_long_mode();
        reject_lock();
        if ((cpu_.sregs.cr4 & kCr4FsGsBase) == 0) {
            invalid_opcode(mnemonic_ + " with CR4.FSGSBASE clear");
        }
        const size_t size = p_.rex_has(kRexW) ? 8 : 4;
        const unsigned reg = m.rm | (p_.rex_has(kRexB) ? 8u : 0u);
        auto& base = (m.reg & 1) != 0 ? cpu_.sregs.gs.base : cpu_.sregs.fs.base;
        if (m.reg < 2) {
            write_reg(reg, size, base);
        } else {
            const uint64_t value = read_reg(reg, size);
            if (!canonical(value)) {
                fault(kVectorGeneralProtection, 0, fmt::format("#GP: non-canonical base {:#x}", value));
            }
            base = value;
        }
        return complete();
    }

    // f3 0f b8 /r: popcnt r, r/m (16, 32 or 64 bits). ZF = (source == 0); CF, PF, AF, SF, OF clear.
    EmulationResult popcnt() {
        mnemonic_ = "popcnt";
        if (p_.rep != 0xf3) {
            unsupported("opcode 0f b8 without an f3 prefix is not popcnt");
        }
        require_long_mode();
        reject_lock();
        const ModRm m = fetch_modrm();
        const RmOperand src = decode_rm(m);
        const size_t size = p_.rex_has(kRexW) ? 8 : (p_.operand_size ? 2 : 4);
        const uint64_t value = src.is_register ? read_reg(src.reg, size) : read_memory(linear_address(src), size);
        write_reg(reg_operand(m), size, static_cast<uint64_t>(std::popcount(value)));
        cpu_.regs.rflags = (cpu_.regs.rflags & ~kStatusFlags) | (value == 0 ? kFlagZf : 0);
        return complete();
    }

    // 0f c7: cmpxchg8b/16b (memory /1); the XSAVE family is refused; the rest is not emulated.
    EmulationResult group9() {
        const ModRm m = fetch_modrm();
        if (m.reg == 1) {
            return cmpxchg8b_16b(m);
        }
        if (m.mod != 3 && m.reg >= 3 && m.reg <= 5) {
            static constexpr std::array<const char*, 3> kNames = {"xrstors", "xsavec", "xsaves"};
            mnemonic_ = kNames[m.reg - 3];
            unsupported(kNoXsaveHint);
        }
        unsupported(fmt::format("opcode 0f c7 /{} is not emulated", m.reg));
    }

    // Compares rDX:rAX with the memory operand: equal -> store rCX:rBX, ZF=1; else load it into
    // rDX:rAX, ZF=0. cmpxchg16b needs a 16-byte aligned operand (#GP otherwise).
    EmulationResult cmpxchg8b_16b(const ModRm& m) {
        const bool wide = p_.rex_has(kRexW);
        mnemonic_ = std::string(p_.lock ? "lock " : "") + (wide ? "cmpxchg16b" : "cmpxchg8b");
        require_long_mode();
        if (m.mod == 3) {
            invalid_opcode(mnemonic_ + " with a register operand");
        }
        const RmOperand dst = decode_rm(m);
        const LinearAddress a = linear_address(dst);
        const size_t half = wide ? 8 : 4;
        check_canonical(a, 2 * half);
        if (wide && a.address % 16 != 0) {
            fault(kVectorGeneralProtection, 0,
                  fmt::format("#GP: cmpxchg16b operand {:#x} is not 16-byte aligned", a.address));
        }
        std::array<uint8_t, 16> expected{};
        std::array<uint8_t, 16> desired{};
        const auto exp = std::span<uint8_t>(expected).first(2 * half);
        const auto des = std::span<uint8_t>(desired).first(2 * half);
        store_le(exp.first(half), read_reg(0, half));      // rAX
        store_le(exp.subspan(half), read_reg(2, half));    // rDX
        store_le(des.first(half), read_reg(3, half));      // rBX
        store_le(des.subspan(half), read_reg(1, half));    // rCX
        const std::optional<bool> swapped = mem_.compare_exchange(a.address, exp, des);
        if (!swapped) {
            memory_fault("compare-exchange", a.address, 2 * half);
        }
        set_zf(*swapped);
        if (!*swapped) {
            write_reg(0, half, load_le(exp.first(half)));
            write_reg(2, half, load_le(exp.subspan(half)));
        }
        return complete();
    }

    std::span<const uint8_t> bytes_;
    const CpuState original_;
    CpuState cpu_;
    EmulatorMemory& mem_;
    const bool long_mode_;
    size_t length_ = 0;
    Prefixes p_;
    uint8_t opcode_ = 0;
    std::string mnemonic_;
};

// Locked compare-exchange on guest RAM (a checked slice of a GuestRegion mapping).
bool atomic_compare_exchange(std::span<uint8_t> target, std::span<uint8_t> expected, std::span<const uint8_t> desired) {
    if (target.size() == 8) {
        uint64_t exp;
        uint64_t des;
        std::memcpy(&exp, expected.data(), 8);
        std::memcpy(&des, desired.data(), 8);
        auto* p = reinterpret_cast<uint64_t*>(target.data());
        const bool ok = __atomic_compare_exchange_n(p, &exp, des, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        if (!ok) {
            std::memcpy(expected.data(), &exp, 8);
        }
        return ok;
    }
    struct alignas(16) Pair {
        uint64_t lo;
        uint64_t hi;
    };
    uint64_t lo;
    uint64_t hi;
    uint64_t new_lo;
    uint64_t new_hi;
    std::memcpy(&lo, expected.data(), 8);
    std::memcpy(&hi, expected.data() + 8, 8);
    std::memcpy(&new_lo, desired.data(), 8);
    std::memcpy(&new_hi, desired.data() + 8, 8);
    bool ok;
    asm volatile("lock cmpxchg16b %[mem]"
                 : "=@ccz"(ok), [mem] "+m"(*reinterpret_cast<Pair*>(target.data())), "+a"(lo), "+d"(hi)
                 : "b"(new_lo), "c"(new_hi)
                 : "memory");
    if (!ok) {
        std::memcpy(expected.data(), &lo, 8);
        std::memcpy(expected.data() + 8, &hi, 8);
    }
    return ok;
}

}  // namespace

std::optional<bool> EmulatorMemory::compare_exchange(uint64_t linear, std::span<uint8_t> expected,
                                                     std::span<const uint8_t> desired) {
    if (expected.size() != desired.size()) {
        throw std::invalid_argument("EmulatorMemory::compare_exchange: operand sizes differ");
    }
    std::vector<uint8_t> current(expected.size());
    if (!read(linear, current)) {
        return std::nullopt;
    }
    if (std::equal(current.begin(), current.end(), expected.begin())) {
        if (!write(linear, desired)) {
            return std::nullopt;
        }
        return true;
    }
    std::copy(current.begin(), current.end(), expected.begin());
    return false;
}

EmulationResult emulate_instruction(std::span<const uint8_t> bytes, CpuState& cpu, EmulatorMemory& mem) {
    Emulation emulation(bytes, cpu, mem);
    EmulationResult result = emulation.run();
    if (result.status == EmulationResult::Status::Emulated) {
        cpu = emulation.state();
    }
    return result;
}

std::string format_instruction_bytes(std::span<const uint8_t> bytes) {
    if (bytes.empty()) {
        return "(none)";
    }
    std::string out;
    for (const uint8_t b : bytes) {
        if (!out.empty()) {
            out += ' ';
        }
        out += fmt::format("{:02x}", b);
    }
    return out;
}

VcpuEmulatorMemory::VcpuEmulatorMemory(LinearTranslator translator, const memory::GuestMemory& mem)
    : translator_(std::move(translator)), mem_(mem) {}

std::optional<memory::GuestAddress> VcpuEmulatorMemory::translate(uint64_t linear) const {
    const std::optional<uint64_t> page = translator_(linear & ~(kPageSize - 1));
    if (!page) {
        return std::nullopt;
    }
    return memory::GuestAddress(*page & ~(kPageSize - 1)).checked_add(linear & (kPageSize - 1));
}

namespace {

// One page-sized piece of a linear access: where it goes and which bytes of the access it is.
struct Piece {
    memory::GuestAddress gpa;
    size_t offset;
    size_t length;
};

// Translates every page of [linear, linear+size) up front, so a write that fails on its
// second page has not done half of its work.
std::optional<std::vector<Piece>> split_by_page(const VcpuEmulatorMemory& m, const memory::GuestMemory& mem,
                                                uint64_t linear, size_t size) {
    std::vector<Piece> pieces;
    size_t done = 0;
    while (done < size) {
        const uint64_t addr = linear + done;  // wraps modulo 2^64, like the CPU's linear addresses
        const uint64_t to_page_end = kPageSize - (addr & (kPageSize - 1));
        const size_t length = static_cast<size_t>(std::min<uint64_t>(size - done, to_page_end));
        const std::optional<memory::GuestAddress> gpa = m.translate(addr);
        if (!gpa || !mem.check_range(*gpa, length)) {
            return std::nullopt;
        }
        pieces.push_back(Piece{*gpa, done, length});
        done += length;
    }
    return pieces;
}

}  // namespace

bool VcpuEmulatorMemory::read(uint64_t linear, std::span<uint8_t> out) {
    const auto pieces = split_by_page(*this, mem_, linear, out.size());
    if (!pieces) {
        return false;
    }
    for (const Piece& piece : *pieces) {
        if (!mem_.try_read(piece.gpa, out.subspan(piece.offset, piece.length))) {
            return false;
        }
    }
    return true;
}

bool VcpuEmulatorMemory::write(uint64_t linear, std::span<const uint8_t> in) {
    const auto pieces = split_by_page(*this, mem_, linear, in.size());
    if (!pieces) {
        return false;
    }
    for (const Piece& piece : *pieces) {
        if (!mem_.try_write(piece.gpa, in.subspan(piece.offset, piece.length))) {
            return false;
        }
    }
    return true;
}

std::optional<bool> VcpuEmulatorMemory::compare_exchange(uint64_t linear, std::span<uint8_t> expected,
                                                         std::span<const uint8_t> desired) {
    const size_t size = expected.size();
    if (desired.size() == size && (size == 8 || size == 16) && linear % size == 0) {
        // Naturally aligned: within one page, and (regions being page aligned) one region.
        const std::optional<memory::GuestAddress> gpa = translate(linear);
        if (!gpa) {
            return std::nullopt;
        }
        const std::optional<std::span<uint8_t>> slice = mem_.get_slice(*gpa, size);
        if (!slice) {
            return std::nullopt;
        }
        if (reinterpret_cast<uintptr_t>(slice->data()) % size == 0) {
            return atomic_compare_exchange(*slice, expected, desired);
        }
    }
    return EmulatorMemory::compare_exchange(linear, expected, desired);
}

}  // namespace embervm::vmm
