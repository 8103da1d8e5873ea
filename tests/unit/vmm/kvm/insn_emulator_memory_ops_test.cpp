// Tests for vmm/insn_emulator's instructions with memory operands: popcnt, cmpxchg8b/16b.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "insn_emulator_test_support.h"
#include "vmm/kvm/insn_emulator.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_insn_emulator_memory_ops_test {

using namespace embervm::vmm;
using namespace embervm::vmm::insn_test;

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

}  // namespace unit_insn_emulator_memory_ops_test
