// Tests for vmm/insn_emulator: decoding (prefixes, REX, ModRM/SIB, RIP-relative, segment
// overrides, length limits), the semantics of each emulated instruction, faults, and the
// VcpuEmulatorMemory over a translator (page splitting, atomic compare-exchange).
#include <catch2/catch.hpp>

#include <array>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "memory/guest_memory.h"
#include "vmm/kvm/insn_emulator.h"

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using embervm::vmm::CpuState;
using embervm::vmm::EmulationResult;
using embervm::vmm::EmulatorMemory;
using embervm::vmm::emulate_instruction;
using embervm::vmm::format_instruction_bytes;
using Status = EmulationResult::Status;

namespace {

constexpr uint64_t kRip = 0x1000000;
constexpr uint64_t kCf = 1 << 0, kPf = 1 << 2, kAf = 1 << 4, kZf = 1 << 6, kSf = 1 << 7, kOf = 1 << 11;
constexpr uint64_t kRf = 1 << 16, kAc = 1 << 18;
constexpr uint64_t kStatusFlags = kCf | kPf | kAf | kZf | kSf | kOf;

// Sparse byte-addressed guest memory: only mapped bytes exist; counts accesses.
class FakeMemory : public EmulatorMemory {
public:
    void map(uint64_t addr, size_t len, uint8_t fill = 0) {
        for (size_t i = 0; i < len; i++) bytes_[addr + i] = fill;
    }
    void put64(uint64_t addr, uint64_t v) {
        for (size_t i = 0; i < 8; i++) bytes_[addr + i] = static_cast<uint8_t>(v >> (8 * i));
    }
    uint64_t get64(uint64_t addr) const {
        uint64_t v = 0;
        for (size_t i = 0; i < 8; i++) v |= static_cast<uint64_t>(bytes_.at(addr + i)) << (8 * i);
        return v;
    }
    bool read(uint64_t linear, std::span<uint8_t> out) override {
        accesses++;
        for (size_t i = 0; i < out.size(); i++) {
            auto it = bytes_.find(linear + i);
            if (it == bytes_.end()) return false;
            out[i] = it->second;
        }
        return true;
    }
    bool write(uint64_t linear, std::span<const uint8_t> in) override {
        accesses++;
        for (size_t i = 0; i < in.size(); i++) {
            if (bytes_.find(linear + i) == bytes_.end()) return false;
        }
        for (size_t i = 0; i < in.size(); i++) bytes_[linear + i] = in[i];
        return true;
    }
    int accesses = 0;

private:
    std::map<uint64_t, uint8_t> bytes_;
};

CpuState long_mode_cpu() {
    CpuState cpu{};
    cpu.regs.rip = kRip;
    cpu.regs.rflags = 0x2;
    cpu.sregs.cs.selector = 0x10;
    cpu.sregs.cs.l = 1;
    cpu.sregs.ss.selector = 0x18;
    cpu.sregs.cr0 = 0x80050033;  // PG AM WP NE ET MP PE
    cpu.sregs.cr4 = 0x20;        // PAE
    cpu.sregs.efer = 0xd01;      // NXE LMA LME SCE
    return cpu;
}

CpuState protected32_cpu() {
    CpuState cpu{};
    cpu.regs.rip = 0x100000;
    cpu.regs.rflags = 0x2;
    cpu.sregs.cs.selector = 0x08;
    cpu.sregs.cs.db = 1;
    cpu.sregs.cr0 = 0x11;  // ET PE
    return cpu;
}

CpuState real_mode_cpu() {
    CpuState cpu{};
    cpu.regs.rip = 0x7c00;
    cpu.regs.rflags = 0x2;
    return cpu;
}

EmulationResult run(const std::vector<uint8_t>& bytes, CpuState& cpu, EmulatorMemory& mem) {
    return emulate_instruction(bytes, cpu, mem);
}

bool same_state(const CpuState& a, const CpuState& b) {
    return std::memcmp(&a.regs, &b.regs, sizeof(a.regs)) == 0 &&
           std::memcmp(&a.sregs, &b.sregs, sizeof(a.sregs)) == 0 && a.kernel_gs_base == b.kernel_gs_base;
}

// Emulated, RIP advanced by `length`, nothing else but RIP changed.
void check_no_op(const std::vector<uint8_t>& bytes, size_t length, const std::string& mnemonic) {
    INFO(format_instruction_bytes(bytes));
    FakeMemory mem;
    CpuState cpu = long_mode_cpu();
    CpuState expected = cpu;
    expected.regs.rip += length;
    const EmulationResult r = run(bytes, cpu, mem);
    REQUIRE(r.status == Status::Emulated);
    CHECK(r.mnemonic == mnemonic);
    CHECK_FALSE(r.exception_vector);
    CHECK(same_state(cpu, expected));
    CHECK(mem.accesses == 0);
}

// Emulated with an exception and an unchanged state (a fault).
void check_fault(const std::vector<uint8_t>& bytes, CpuState cpu, FakeMemory& mem, uint8_t vector,
                 std::optional<uint32_t> error_code = std::nullopt) {
    INFO(format_instruction_bytes(bytes));
    const CpuState before = cpu;
    const EmulationResult r = run(bytes, cpu, mem);
    REQUIRE(r.status == Status::Emulated);
    REQUIRE(r.exception_vector);
    CHECK(*r.exception_vector == vector);
    CHECK(r.exception_error_code == error_code);
    CHECK(same_state(cpu, before));
}

// Not emulated, state untouched; the detail mentions `detail_part`.
void check_unsupported(const std::vector<uint8_t>& bytes, CpuState cpu, const std::string& detail_part) {
    INFO(format_instruction_bytes(bytes));
    FakeMemory mem;
    const CpuState before = cpu;
    const EmulationResult r = run(bytes, cpu, mem);
    CHECK(r.status == Status::Unsupported);
    CHECK_FALSE(r.exception_vector);
    CHECK_THAT(r.detail, Catch::Contains(detail_part));
    CHECK(same_state(cpu, before));
}

}  // namespace

TEST_CASE("format_instruction_bytes prints space-separated lowercase hex", "[insn_emulator]") {
    const std::vector<uint8_t> popcnt = {0xf3, 0x0f, 0xb8, 0xc1};
    CHECK(format_instruction_bytes(popcnt) == "f3 0f b8 c1");
    const std::vector<uint8_t> one = {0x0a};
    CHECK(format_instruction_bytes(one) == "0a");
    CHECK(format_instruction_bytes({}) == "(none)");
}

TEST_CASE("nop forms, pause, fences, endbr and prefetch only advance RIP", "[insn_emulator]") {
    check_no_op({0x90}, 1, "nop");
    check_no_op({0x66, 0x90}, 2, "nop");
    check_no_op({0xf3, 0x90}, 2, "pause");
    check_no_op({0x0f, 0x1f, 0x00}, 3, "nop");                                            // nop [rax]
    check_no_op({0x0f, 0x1f, 0x44, 0x00, 0x00}, 5, "nop");                                // nop [rax+rax+0]
    check_no_op({0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00}, 7, "nop");                    // nop [rax+disp32]
    check_no_op({0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00}, 11, "nop");  // cs nopw
    check_no_op({0x0f, 0x1f, 0x05, 0x00, 0x00, 0x00, 0x00}, 7, "nop");  // rip-relative, not accessed
    check_no_op({0x0f, 0xae, 0xe8}, 3, "lfence");
    check_no_op({0x0f, 0xae, 0xf0}, 3, "mfence");
    check_no_op({0x0f, 0xae, 0xf8}, 3, "sfence");
    check_no_op({0xf3, 0x0f, 0x1e, 0xfa}, 4, "endbr64");
    check_no_op({0x0f, 0x0d, 0x0f}, 3, "prefetchw");
    check_no_op({0x0f, 0x18, 0x4e, 0x40}, 4, "prefetch");
    // Trailing bytes of the next instruction are ignored.
    check_no_op({0x90, 0xf3, 0x0f}, 1, "nop");
}

TEST_CASE("a completed instruction clears RFLAGS.RF", "[insn_emulator]") {
    FakeMemory mem;
    CpuState cpu = long_mode_cpu();
    cpu.regs.rflags |= kRf;
    REQUIRE(run({0x90}, cpu, mem).status == Status::Emulated);
    CHECK((cpu.regs.rflags & kRf) == 0);
    CHECK(cpu.regs.rflags == 0x2);
}

TEST_CASE("fwait is a no-op unless CR0.TS and CR0.MP are both set", "[insn_emulator]") {
    check_no_op({0x9b}, 1, "fwait");
    FakeMemory mem;
    CpuState cpu = long_mode_cpu();
    cpu.sregs.cr0 |= 0x8;  // TS (MP is set)
    check_fault({0x9b}, cpu, mem, 7);
    cpu.sregs.cr0 &= ~uint64_t{0x2};  // TS without MP: no #NM
    const EmulationResult r = run({0x9b}, cpu, mem);
    CHECK(r.status == Status::Emulated);
    CHECK_FALSE(r.exception_vector);
}

TEST_CASE("int3 advances RIP past itself and reports the #BP trap", "[insn_emulator]") {
    FakeMemory mem;
    CpuState cpu = long_mode_cpu();
    const EmulationResult r = run({0xcc}, cpu, mem);
    REQUIRE(r.status == Status::Emulated);
    CHECK(r.mnemonic == "int3");
    REQUIRE(r.exception_vector);
    CHECK(*r.exception_vector == 3);
    CHECK_FALSE(r.exception_error_code);
    CHECK(cpu.regs.rip == kRip + 1);
}

TEST_CASE("lock on an instruction that does not allow it is #UD", "[insn_emulator]") {
    FakeMemory mem;
    check_fault({0xf0, 0x90}, long_mode_cpu(), mem, 6);
    check_fault({0xf0, 0xcc}, long_mode_cpu(), mem, 6);
    check_fault({0xf0, 0x0f, 0xae, 0xe8}, long_mode_cpu(), mem, 6);
    check_fault({0xf0, 0xf3, 0x0f, 0xb8, 0xc1}, long_mode_cpu(), mem, 6);
}

TEST_CASE("clac and stac change only RFLAGS.AC, at CPL 0", "[insn_emulator]") {
    FakeMemory mem;
    CpuState cpu = long_mode_cpu();
    REQUIRE(run({0x0f, 0x01, 0xcb}, cpu, mem).status == Status::Emulated);
    CHECK(cpu.regs.rflags == (0x2 | kAc));
    CHECK(cpu.regs.rip == kRip + 3);
    const EmulationResult r = run({0x0f, 0x01, 0xca}, cpu, mem);
    REQUIRE(r.status == Status::Emulated);
    CHECK(r.mnemonic == "clac");
    CHECK(cpu.regs.rflags == 0x2);
    CHECK(cpu.regs.rip == kRip + 6);

    CpuState user = long_mode_cpu();
    user.sregs.ss.dpl = 3;
    user.sregs.cs.selector = 0x33;
    check_fault({0x0f, 0x01, 0xcb}, user, mem, 6);
}

TEST_CASE("popcnt register forms", "[insn_emulator]") {
    FakeMemory mem;
    CpuState cpu = long_mode_cpu();
    cpu.regs.rax = 0xdeadbeefcafef00d;

    SECTION("32-bit: count, zero-extended destination, all status flags but ZF cleared") {
        cpu.regs.rcx = 0xffffffff000000ff;  // upper half ignored
        cpu.regs.rflags |= kStatusFlags;
        const EmulationResult r = run({0xf3, 0x0f, 0xb8, 0xc1}, cpu, mem);  // popcnt eax, ecx
        REQUIRE(r.status == Status::Emulated);
        CHECK(r.mnemonic == "popcnt");
        CHECK(cpu.regs.rax == 8);
        CHECK((cpu.regs.rflags & kStatusFlags) == 0);
        CHECK(cpu.regs.rip == kRip + 4);
        CHECK(cpu.regs.rcx == 0xffffffff000000ff);
    }
    SECTION("zero source sets ZF and clears the other status flags") {
        cpu.regs.rcx = 0xffffffff00000000;
        cpu.regs.rflags |= kCf | kSf | kOf | kPf | kAf;
        REQUIRE(run({0xf3, 0x0f, 0xb8, 0xc1}, cpu, mem).status == Status::Emulated);
        CHECK(cpu.regs.rax == 0);
        CHECK((cpu.regs.rflags & kStatusFlags) == kZf);
    }
    SECTION("64-bit") {
        cpu.regs.rcx = 0xffffffffffffffff;
        REQUIRE(run({0xf3, 0x48, 0x0f, 0xb8, 0xc1}, cpu, mem).status == Status::Emulated);  // popcnt rax, rcx
        CHECK(cpu.regs.rax == 64);
        CHECK(cpu.regs.rip == kRip + 5);
    }
    SECTION("16-bit keeps the upper bits of the destination") {
        cpu.regs.rcx = 0xffff0007;
        REQUIRE(run({0x66, 0xf3, 0x0f, 0xb8, 0xc1}, cpu, mem).status == Status::Emulated);  // popcnt ax, cx
        CHECK(cpu.regs.rax == 0xdeadbeefcafe0003);
    }
    SECTION("REX.R/REX.B select r8-r15") {
        cpu.regs.r9 = 0x0f;
        REQUIRE(run({0xf3, 0x4d, 0x0f, 0xb8, 0xf9}, cpu, mem).status == Status::Emulated);  // popcnt r15, r9
        CHECK(cpu.regs.r15 == 4);
    }
    SECTION("a REX prefix followed by a legacy prefix is ignored") {
        cpu.regs.rcx = 0xffffffffffffffff;
        REQUIRE(run({0x48, 0xf3, 0x0f, 0xb8, 0xc1}, cpu, mem).status == Status::Emulated);  // 32-bit popcnt
        CHECK(cpu.regs.rax == 32);
    }
    SECTION("without f3 it is not popcnt") {
        check_unsupported({0x0f, 0xb8, 0xc1}, cpu, "f3");
    }
}

TEST_CASE("popcnt memory addressing forms", "[insn_emulator]") {
    FakeMemory mem;
    CpuState cpu = long_mode_cpu();
    cpu.regs.rbx = 0x200000;
    cpu.regs.rsi = 3;
    cpu.regs.rdx = 0x40;
    cpu.regs.r13 = 0x300000;
    cpu.regs.r12 = 0x20;
    cpu.regs.rsp = 0x7000;
    cpu.sregs.fs.base = 0x500000;
    cpu.sregs.gs.base = 0x600000;

    auto expect_read = [&](const std::vector<uint8_t>& bytes, uint64_t address, uint64_t rax, size_t length) {
        INFO(format_instruction_bytes(bytes));
        mem.map(address, 8);
        mem.put64(address, 0x0000000100000007);  // popcount 3 (low dword), 4 (qword)
        CpuState c = cpu;
        const EmulationResult r = run(bytes, c, mem);
        REQUIRE(r.status == Status::Emulated);
        CHECK(c.regs.rax == rax);
        CHECK(c.regs.rip == kRip + length);
    };

    SECTION("[base]") { expect_read({0xf3, 0x0f, 0xb8, 0x03}, 0x200000, 3, 4); }
    SECTION("[base] into a REX.R register, 64-bit") {
        mem.map(0x200000, 8);
        mem.put64(0x200000, 0xff);
        REQUIRE(run({0xf3, 0x4c, 0x0f, 0xb8, 0x0b}, cpu, mem).status == Status::Emulated);  // popcnt r9, [rbx]
        CHECK(cpu.regs.r9 == 8);
    }
    SECTION("[base+index*4+disp8]") { expect_read({0xf3, 0x0f, 0xb8, 0x44, 0xb3, 0x10}, 0x200000 + 12 + 0x10, 3, 6); }
    SECTION("[base+index*8-disp32]") {
        expect_read({0xf3, 0x0f, 0xb8, 0x84, 0xf3, 0x00, 0xff, 0xff, 0xff}, 0x200000 + 24 - 0x100, 3, 9);
    }
    SECTION("rip-relative counts from the next instruction") {
        expect_read({0xf3, 0x0f, 0xb8, 0x05, 0x20, 0x00, 0x00, 0x00}, kRip + 8 + 0x20, 3, 8);
    }
    SECTION("negative rip-relative displacement") {
        expect_read({0xf3, 0x0f, 0xb8, 0x05, 0xf0, 0xff, 0xff, 0xff}, kRip + 8 - 0x10, 3, 8);
    }
    SECTION("gs override with an absolute disp32 (SIB without base and index)") {
        expect_read({0x65, 0xf3, 0x0f, 0xb8, 0x04, 0x25, 0x00, 0x01, 0x00, 0x00}, 0x600000 + 0x100, 3, 10);
    }
    SECTION("fs override, 64-bit operand") {
        expect_read({0x64, 0xf3, 0x48, 0x0f, 0xb8, 0x02}, 0x500000 + 0x40, 4, 6);
    }
    SECTION("other segment overrides add no base in 64-bit mode") {
        expect_read({0x2e, 0xf3, 0x0f, 0xb8, 0x03}, 0x200000, 3, 5);
        expect_read({0x26, 0xf3, 0x0f, 0xb8, 0x03}, 0x200000, 3, 5);
    }
    SECTION("[r13+0]: rm=101 with REX.B still needs mod=01") {
        expect_read({0xf3, 0x41, 0x0f, 0xb8, 0x45, 0x00}, 0x300000, 3, 6);
    }
    SECTION("[rax+r12]: index 100 with REX.X is r12") {
        cpu.regs.rax = 0x400000;
        expect_read({0xf3, 0x42, 0x0f, 0xb8, 0x04, 0x20}, 0x400020, 3, 6);
    }
    SECTION("[r12] needs a SIB byte") { expect_read({0xf3, 0x41, 0x0f, 0xb8, 0x04, 0x24}, 0x20, 3, 6); }
    SECTION("[rsp+8]") { expect_read({0xf3, 0x0f, 0xb8, 0x44, 0x24, 0x08}, 0x7008, 3, 6); }
    SECTION("67 prefix truncates the effective address to 32 bits") {
        cpu.regs.rbx = 0xffffffff00001000;
        expect_read({0x67, 0xf3, 0x0f, 0xb8, 0x03}, 0x1000, 3, 5);
    }
}

TEST_CASE("popcnt memory faults leave the state alone", "[insn_emulator]") {
    FakeMemory mem;
    CpuState cpu = long_mode_cpu();
    cpu.regs.rbx = 0x200000;
    const CpuState before = cpu;

    SECTION("unmapped operand") {
        const EmulationResult r = run({0xf3, 0x0f, 0xb8, 0x03}, cpu, mem);
        CHECK(r.status == Status::MemoryFault);
        CHECK(r.mnemonic == "popcnt");
        CHECK_THAT(r.detail, Catch::Contains("0x200000"));
        CHECK(same_state(cpu, before));
    }
    SECTION("operand partly mapped") {
        mem.map(0x200000, 4);
        CHECK(run({0xf3, 0x48, 0x0f, 0xb8, 0x03}, cpu, mem).status == Status::MemoryFault);
        CHECK(same_state(cpu, before));
    }
    SECTION("non-canonical address is #GP(0), or #SS(0) through rsp/rbp") {
        cpu.regs.rbx = 0x0000800000000000;
        check_fault({0xf3, 0x0f, 0xb8, 0x03}, cpu, mem, 13, 0);
        cpu.regs.rbp = 0x0000800000000000;
        check_fault({0xf3, 0x0f, 0xb8, 0x45, 0x00}, cpu, mem, 12, 0);
        // An access ending past the canonical boundary faults too.
        cpu.regs.rbx = 0x00007ffffffffffc;
        check_fault({0xf3, 0x48, 0x0f, 0xb8, 0x03}, cpu, mem, 13, 0);
        // With LA57, 0x0000800000000000 is canonical (and here merely unmapped).
        cpu.regs.rbx = 0x0000800000000000;
        cpu.sregs.cr4 |= 1 << 12;
        CHECK(run({0xf3, 0x0f, 0xb8, 0x03}, cpu, mem).status == Status::MemoryFault);
    }
}

TEST_CASE("cmpxchg16b", "[insn_emulator]") {
    FakeMemory mem;
    CpuState cpu = long_mode_cpu();
    cpu.regs.rsi = 0x10000;
    cpu.regs.rax = 0x1111111111111111;
    cpu.regs.rdx = 0x2222222222222222;
    cpu.regs.rbx = 0x3333333333333333;
    cpu.regs.rcx = 0x4444444444444444;
    mem.map(0x10000, 16);
    const std::vector<uint8_t> lock_cmpxchg16b_rsi = {0xf0, 0x48, 0x0f, 0xc7, 0x0e};

    SECTION("equal: stores rcx:rbx and sets ZF") {
        mem.put64(0x10000, 0x1111111111111111);
        mem.put64(0x10008, 0x2222222222222222);
        const EmulationResult r = run(lock_cmpxchg16b_rsi, cpu, mem);
        REQUIRE(r.status == Status::Emulated);
        CHECK(r.mnemonic == "lock cmpxchg16b");
        CHECK_FALSE(r.exception_vector);
        CHECK(mem.get64(0x10000) == 0x3333333333333333);
        CHECK(mem.get64(0x10008) == 0x4444444444444444);
        CHECK((cpu.regs.rflags & kZf) != 0);
        CHECK(cpu.regs.rax == 0x1111111111111111);
        CHECK(cpu.regs.rdx == 0x2222222222222222);
        CHECK(cpu.regs.rip == kRip + 5);
    }
    SECTION("unequal: loads memory into rdx:rax, clears ZF, leaves memory alone") {
        mem.put64(0x10000, 0x1111111111111111);
        mem.put64(0x10008, 0x5555555555555555);
        cpu.regs.rflags |= kZf | kCf;
        const EmulationResult r = run(lock_cmpxchg16b_rsi, cpu, mem);
        REQUIRE(r.status == Status::Emulated);
        CHECK(mem.get64(0x10000) == 0x1111111111111111);
        CHECK(mem.get64(0x10008) == 0x5555555555555555);
        CHECK((cpu.regs.rflags & kZf) == 0);
        CHECK((cpu.regs.rflags & kCf) != 0);  // only ZF is affected
        CHECK(cpu.regs.rax == 0x1111111111111111);
        CHECK(cpu.regs.rdx == 0x5555555555555555);
        CHECK(cpu.regs.rip == kRip + 5);
    }
    SECTION("alignment is checked on the linear address, gs base included") {
        cpu.sregs.gs.base = 0x10000;
        cpu.regs.rax = 0;
        mem.map(0x10008, 16);
        check_fault({0x65, 0x48, 0x0f, 0xc7, 0x48, 0x08}, cpu, mem, 13, 0);  // cmpxchg16b gs:[rax+8]
    }
    SECTION("misaligned operand is #GP(0) without a memory access or RIP change") {
        cpu.regs.rsi = 0x10008;
        mem.map(0x10008, 16);
        mem.accesses = 0;
        check_fault(lock_cmpxchg16b_rsi, cpu, mem, 13, 0);
        CHECK(mem.accesses == 0);
    }
    SECTION("register operand is #UD") {
        check_fault({0x48, 0x0f, 0xc7, 0xc9}, cpu, mem, 6);
    }
    SECTION("unmapped operand is a memory fault") {
        cpu.regs.rsi = 0x20000;
        const CpuState before = cpu;
        const EmulationResult r = run(lock_cmpxchg16b_rsi, cpu, mem);
        CHECK(r.status == Status::MemoryFault);
        CHECK(same_state(cpu, before));
    }
}

TEST_CASE("cmpxchg16b through gs is 16-byte aligned on the linear address", "[insn_emulator]") {
    FakeMemory mem;
    CpuState cpu = long_mode_cpu();
    cpu.sregs.gs.base = 0x10008;
    cpu.regs.rax = 0;  // gs:[rax+8] = 0x10010
    cpu.regs.rbx = 0xaa;
    cpu.regs.rcx = 0xbb;
    cpu.regs.rdx = 0;
    mem.map(0x10010, 16);
    const EmulationResult r = run({0x65, 0x48, 0x0f, 0xc7, 0x48, 0x08}, cpu, mem);
    REQUIRE(r.status == Status::Emulated);
    CHECK_FALSE(r.exception_vector);
    CHECK((cpu.regs.rflags & kZf) != 0);
    CHECK(mem.get64(0x10010) == 0xaa);
    CHECK(mem.get64(0x10018) == 0xbb);
    CHECK(cpu.regs.rip == kRip + 6);
}

TEST_CASE("cmpxchg8b uses the low halves of rdx:rax and rcx:rbx", "[insn_emulator]") {
    FakeMemory mem;
    CpuState cpu = long_mode_cpu();
    cpu.regs.rdi = 0x10004;  // no alignment requirement
    cpu.regs.rax = 0xffffffff11111111;
    cpu.regs.rdx = 0xffffffff22222222;
    cpu.regs.rbx = 0xffffffff33333333;
    cpu.regs.rcx = 0xffffffff44444444;
    mem.map(0x10004, 8);
    const std::vector<uint8_t> lock_cmpxchg8b_rdi = {0xf0, 0x0f, 0xc7, 0x0f};

    SECTION("equal") {
        mem.put64(0x10004, 0x2222222211111111);
        const EmulationResult r = run(lock_cmpxchg8b_rdi, cpu, mem);
        REQUIRE(r.status == Status::Emulated);
        CHECK(r.mnemonic == "lock cmpxchg8b");
        CHECK(mem.get64(0x10004) == 0x4444444433333333);
        CHECK((cpu.regs.rflags & kZf) != 0);
        CHECK(cpu.regs.rax == 0xffffffff11111111);  // not written on success
        CHECK(cpu.regs.rip == kRip + 4);
    }
    SECTION("unequal: edx:eax loaded, upper halves zeroed") {
        mem.put64(0x10004, 0x8765432112345678);
        REQUIRE(run(lock_cmpxchg8b_rdi, cpu, mem).status == Status::Emulated);
        CHECK(mem.get64(0x10004) == 0x8765432112345678);
        CHECK((cpu.regs.rflags & kZf) == 0);
        CHECK(cpu.regs.rax == 0x12345678);
        CHECK(cpu.regs.rdx == 0x87654321);
    }
}

TEST_CASE("swapgs exchanges GS.base and KERNEL_GS_BASE at CPL 0", "[insn_emulator]") {
    FakeMemory mem;
    CpuState cpu = long_mode_cpu();
    cpu.sregs.gs.base = 0x1234;
    cpu.kernel_gs_base = 0xffff888000000000;
    const EmulationResult r = run({0x0f, 0x01, 0xf8}, cpu, mem);
    REQUIRE(r.status == Status::Emulated);
    CHECK(r.mnemonic == "swapgs");
    CHECK(cpu.sregs.gs.base == 0xffff888000000000);
    CHECK(cpu.kernel_gs_base == 0x1234);
    CHECK(cpu.regs.rip == kRip + 3);

    CpuState user = long_mode_cpu();
    user.sregs.ss.dpl = 3;
    check_fault({0x0f, 0x01, 0xf8}, user, mem, 13, 0);

    CpuState compat = long_mode_cpu();
    compat.sregs.cs.l = 0;
    compat.sregs.cs.db = 1;
    check_unsupported({0x0f, 0x01, 0xf8}, compat, "64-bit mode");
}

TEST_CASE("rd/wr fs/gs base", "[insn_emulator]") {
    FakeMemory mem;
    CpuState cpu = long_mode_cpu();
    cpu.sregs.cr4 |= 1 << 16;  // FSGSBASE
    cpu.sregs.fs.base = 0x7f0000001000;
    cpu.sregs.gs.base = 0xffff888000001000;

    SECTION("rdgsbase rax") {
        REQUIRE(run({0xf3, 0x48, 0x0f, 0xae, 0xc8}, cpu, mem).status == Status::Emulated);
        CHECK(cpu.regs.rax == 0xffff888000001000);
        CHECK(cpu.regs.rip == kRip + 5);
    }
    SECTION("rdfsbase ecx zero-extends the low half") {
        cpu.regs.rcx = ~uint64_t{0};
        REQUIRE(run({0xf3, 0x0f, 0xae, 0xc1}, cpu, mem).status == Status::Emulated);
        CHECK(cpu.regs.rcx == 0x00001000);
    }
    SECTION("wrfsbase rcx") {
        cpu.regs.rcx = 0x7f0000002000;
        REQUIRE(run({0xf3, 0x48, 0x0f, 0xae, 0xd1}, cpu, mem).status == Status::Emulated);
        CHECK(cpu.sregs.fs.base == 0x7f0000002000);
    }
    SECTION("wrgsbase r8 with a non-canonical value is #GP(0)") {
        cpu.regs.r8 = 0x8000000000000000 >> 1;
        check_fault({0xf3, 0x49, 0x0f, 0xae, 0xd8}, cpu, mem, 13, 0);
    }
    SECTION("#UD while CR4.FSGSBASE is clear") {
        cpu.sregs.cr4 &= ~uint64_t{1 << 16};
        check_fault({0xf3, 0x48, 0x0f, 0xae, 0xc8}, cpu, mem, 6);
    }
}

TEST_CASE("the XSAVE family is refused with a hint to boot with noxsave", "[insn_emulator]") {
    const CpuState cpu = long_mode_cpu();
    check_unsupported({0x0f, 0xae, 0x2f}, cpu, "noxsave");        // xrstor [rdi]
    check_unsupported({0x48, 0x0f, 0xae, 0x2f}, cpu, "noxsave");  // xrstor64 [rdi]
    check_unsupported({0x0f, 0xae, 0x27}, cpu, "noxsave");        // xsave [rdi]
    check_unsupported({0x0f, 0x01, 0xd1}, cpu, "noxsave");        // xsetbv
    check_unsupported({0x0f, 0xc7, 0x2f}, cpu, "noxsave");        // xsaves [rdi]
    FakeMemory mem;
    CpuState c = cpu;
    CHECK(run({0x0f, 0xae, 0x2f}, c, mem).mnemonic == "xrstor");
}

TEST_CASE("unknown opcodes are Unsupported and change nothing", "[insn_emulator]") {
    const CpuState cpu = long_mode_cpu();
    check_unsupported({0x0f, 0x0b}, cpu, "0f 0b");   // ud2
    check_unsupported({0xc3}, cpu, "c3");            // ret
    check_unsupported({0x48, 0xcf}, cpu, "cf");      // iretq
    check_unsupported({0x41, 0x90}, cpu, "xchg");    // xchg r8, rax, not nop
    check_unsupported({0x0f, 0x01, 0xf9}, cpu, "rdtscp");
    check_unsupported({0x0f, 0x01, 0x10}, cpu, "0f 01 10");  // lgdt [rax]
    check_unsupported({0x0f, 0xc7, 0xf0}, cpu, "0f c7 /6");  // rdrand eax
    check_unsupported({0x0f, 0x1e, 0xc0}, cpu, "endbr");
    check_unsupported({0x66, 0x0f, 0xae, 0xe8}, cpu, "prefix");
}

TEST_CASE("truncated and over-long instructions are Unsupported", "[insn_emulator]") {
    const CpuState cpu = long_mode_cpu();
    check_unsupported({}, cpu, "truncated");
    check_unsupported({0xf3}, cpu, "truncated");
    check_unsupported({0xf3, 0x0f, 0xb8}, cpu, "truncated after 3");                    // no ModRM
    check_unsupported({0xf3, 0x0f, 0xb8, 0x44, 0xb3}, cpu, "truncated");                // no disp8
    check_unsupported({0xf3, 0x0f, 0xb8, 0x05, 0x20, 0x00, 0x00}, cpu, "truncated");    // short disp32
    check_unsupported({0xf0, 0x48, 0x0f, 0xc7}, cpu, "truncated");
    check_unsupported({0x0f, 0x01}, cpu, "truncated");

    std::vector<uint8_t> fifteen(14, 0x66);
    fifteen.push_back(0x90);
    check_no_op(fifteen, 15, "nop");

    std::vector<uint8_t> sixteen(15, 0x66);
    sixteen.push_back(0x90);
    check_unsupported(sixteen, cpu, "15-byte");
    // A 15-byte span that is all prefixes hits the limit too.
    check_unsupported(std::vector<uint8_t>(15, 0x2e), cpu, "15-byte");
}

TEST_CASE("outside 64-bit mode only operand-less instructions are emulated", "[insn_emulator]") {
    FakeMemory mem;
    SECTION("32-bit protected mode") {
        CpuState cpu = protected32_cpu();
        REQUIRE(run({0x90}, cpu, mem).status == Status::Emulated);
        REQUIRE(run({0xf3, 0x90}, cpu, mem).status == Status::Emulated);
        REQUIRE(run({0x9b}, cpu, mem).status == Status::Emulated);
        REQUIRE(run({0x0f, 0xae, 0xe8}, cpu, mem).status == Status::Emulated);
        REQUIRE(run({0x0f, 0x01, 0xcb}, cpu, mem).status == Status::Emulated);
        CHECK(cpu.regs.rip == 0x100000 + 1 + 2 + 1 + 3 + 3);
        CHECK((cpu.regs.rflags & kAc) != 0);
        check_unsupported({0xf3, 0x0f, 0xb8, 0xc1}, cpu, "64-bit mode");
        check_unsupported({0xf0, 0x0f, 0xc7, 0x0f}, cpu, "64-bit mode");
        check_unsupported({0x0f, 0x1f, 0x00}, cpu, "64-bit mode");
        check_unsupported({0xcc}, cpu, "64-bit mode");
        check_unsupported({0x48, 0x90}, cpu, "opcode 48");  // dec eax: no REX outside 64-bit mode
    }
    SECTION("32-bit EIP wraps at 4 GiB") {
        CpuState cpu = protected32_cpu();
        cpu.regs.rip = 0xffffffff;
        REQUIRE(run({0x90}, cpu, mem).status == Status::Emulated);
        CHECK(cpu.regs.rip == 0);
    }
    SECTION("real mode: IP wraps at 64 KiB") {
        CpuState cpu = real_mode_cpu();
        cpu.regs.rip = 0xfffe;
        REQUIRE(run({0x0f, 0xae, 0xf0}, cpu, mem).status == Status::Emulated);
        CHECK(cpu.regs.rip == 0x0001);
        REQUIRE(run({0x0f, 0x01, 0xca}, cpu, mem).status == Status::Emulated);  // CPL 0 in real mode
    }
    SECTION("compatibility mode (LMA, CS.L=0) is not 64-bit mode") {
        CpuState cpu = long_mode_cpu();
        cpu.sregs.cs.l = 0;
        cpu.sregs.cs.db = 1;
        check_unsupported({0xf3, 0x0f, 0xb8, 0xc1}, cpu, "64-bit mode");
    }
}

TEST_CASE("random bytes never escape the span or corrupt a refused state", "[insn_emulator]") {
    std::mt19937_64 rng(12345);
    // Bytes biased towards prefixes and the opcodes the emulator knows, to go deep.
    const std::vector<uint8_t> interesting = {0x0f, 0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x48, 0x4f, 0x41, 0x65, 0x64,
                                              0x2e, 0x90, 0x9b, 0xcc, 0x01, 0xae, 0xb8, 0xc7, 0x1f, 0x1e, 0x18,
                                              0x0d, 0x04, 0x05, 0x44, 0x84, 0x24, 0x25, 0xc8, 0xf8, 0xca, 0xe8};
    FakeMemory mem;
    mem.map(0, 0x1000);
    for (int i = 0; i < 50000; i++) {
        std::vector<uint8_t> bytes(rng() % 18);
        for (auto& b : bytes) {
            b = (rng() % 2) != 0 ? interesting[rng() % interesting.size()] : static_cast<uint8_t>(rng());
        }
        CpuState cpu = (i % 5 == 0) ? protected32_cpu() : long_mode_cpu();
        cpu.regs.rax = rng() % 0x1000;
        cpu.regs.rbx = rng();
        cpu.regs.rsi = rng() % 0x1000;
        cpu.sregs.cr4 |= (i % 2) != 0 ? (1 << 16) : 0;
        const CpuState before = cpu;
        const EmulationResult r = emulate_instruction(bytes, cpu, mem);
        if (r.status != Status::Emulated || (r.exception_vector && *r.exception_vector != 3)) {
            INFO(format_instruction_bytes(bytes));
            REQUIRE(same_state(cpu, before));
        }
        if (r.status == Status::Emulated && !r.exception_vector) {
            REQUIRE(cpu.regs.rip != before.regs.rip);
        }
    }
}

TEST_CASE("VcpuEmulatorMemory translates page by page and splits at page boundaries", "[insn_emulator]") {
    // Linear pages 0 and 1 are swapped in guest-physical memory, page 2 is not mapped; the
    // translator sees only page-aligned addresses.
    const GuestMemory ram({{GuestAddress(0), 0x2000}});
    std::vector<uint64_t> asked;
    embervm::vmm::VcpuEmulatorMemory mem(
        [&](uint64_t linear) -> std::optional<uint64_t> {
            asked.push_back(linear);
            switch (linear) {
                case 0x0000: return 0x1000;
                case 0x1000: return 0x0000;
                case 0x5000: return 0x1000;  // mapped, but the access runs on to page 0x6000
                default: return std::nullopt;
            }
        },
        ram);

    const auto gpa = mem.translate(0x1234);
    REQUIRE(gpa);
    CHECK(gpa->value == 0x0234);
    CHECK(asked == std::vector<uint64_t>{0x1000});
    CHECK_FALSE(mem.translate(0x2000));
    // Where a linear address of pages 0 and 1 lands.
    const auto phys = [](uint64_t linear) { return GuestAddress(linear ^ 0x1000); };

    SECTION("an access crossing a page boundary goes to both pages") {
        const std::vector<uint8_t> data = {1, 2, 3, 4, 5, 6, 7, 8};
        REQUIRE(mem.write(0xffc, data));
        CHECK(ram.read_obj<uint32_t>(GuestAddress(0x1ffc)) == 0x04030201);  // end of linear page 0
        CHECK(ram.read_obj<uint32_t>(GuestAddress(0x0000)) == 0x08070605);  // start of linear page 1
        std::vector<uint8_t> back(8);
        REQUIRE(mem.read(0xffc, back));
        CHECK(back == data);
    }
    SECTION("an access reaching an unmapped page fails and writes nothing") {
        std::vector<uint8_t> buf(8, 0xee);
        CHECK_FALSE(mem.read(0x1ffc, buf));
        CHECK_FALSE(mem.write(0x1ffc, buf));
        CHECK(ram.read_obj<uint32_t>(GuestAddress(0x0ffc)) == 0);  // linear 0x1ffc is untouched
        CHECK_FALSE(mem.write(0x5ffc, buf));
        CHECK(ram.read_obj<uint32_t>(GuestAddress(0x1ffc)) == 0);
        CHECK_FALSE(mem.read(0x3000, buf));
    }
    SECTION("a page mapped outside guest RAM is a fault") {
        embervm::vmm::VcpuEmulatorMemory outside([](uint64_t linear) { return linear + 0x10000; }, ram);
        std::vector<uint8_t> buf(4);
        CHECK_FALSE(outside.read(0, buf));
        CHECK_FALSE(outside.write(0, buf));
    }
    SECTION("compare_exchange, atomic and fallback paths") {
        ram.write_obj<uint64_t>(phys(0x1000), 0x1111);
        ram.write_obj<uint64_t>(phys(0x1008), 0x2222);
        std::array<uint8_t, 16> expected{};
        std::array<uint8_t, 16> desired{};
        expected[0] = 0x11; expected[1] = 0x11; expected[8] = 0x22; expected[9] = 0x22;
        desired[0] = 0xaa; desired[8] = 0xbb;
        auto r = mem.compare_exchange(0x1000, expected, desired);
        REQUIRE(r);
        CHECK(*r);
        CHECK(ram.read_obj<uint64_t>(phys(0x1000)) == 0xaa);
        CHECK(ram.read_obj<uint64_t>(phys(0x1008)) == 0xbb);
        r = mem.compare_exchange(0x1000, expected, desired);  // now unequal
        REQUIRE(r);
        CHECK_FALSE(*r);
        CHECK(expected[0] == 0xaa);
        CHECK(expected[8] == 0xbb);

        std::array<uint8_t, 8> e8{};
        REQUIRE(mem.read(0xffd, e8));  // 00 00 00 aa 00 00 00 00
        std::array<uint8_t, 8> d8 = {9, 9, 9, 9, 9, 9, 9, 9};
        r = mem.compare_exchange(0xffd, e8, d8);  // misaligned across the page: plain path
        REQUIRE(r);
        CHECK(*r);
        std::array<uint8_t, 3> on_page0{};
        std::array<uint8_t, 5> on_page1{};
        REQUIRE(ram.try_read(GuestAddress(0x1ffd), on_page0));
        REQUIRE(ram.try_read(GuestAddress(0x0000), on_page1));
        CHECK(on_page0 == std::array<uint8_t, 3>{9, 9, 9});
        CHECK(on_page1 == std::array<uint8_t, 5>{9, 9, 9, 9, 9});
        REQUIRE(mem.read(0xffd, e8));
        CHECK(e8 == d8);
        CHECK_FALSE(mem.compare_exchange(0x2000, e8, d8));  // not mapped
    }
    SECTION("end to end: lock cmpxchg16b on guest RAM") {
        CpuState cpu = long_mode_cpu();
        cpu.regs.rsi = 0x1010;
        cpu.regs.rbx = 0x5555;
        cpu.regs.rcx = 0x6666;
        const EmulationResult r = emulate_instruction(std::vector<uint8_t>{0xf0, 0x48, 0x0f, 0xc7, 0x0e}, cpu, mem);
        REQUIRE(r.status == Status::Emulated);
        CHECK((cpu.regs.rflags & kZf) != 0);
        CHECK(ram.read_obj<uint64_t>(phys(0x1010)) == 0x5555);
        CHECK(ram.read_obj<uint64_t>(phys(0x1018)) == 0x6666);
    }
}
