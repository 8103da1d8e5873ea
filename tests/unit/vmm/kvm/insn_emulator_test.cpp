// Tests for vmm/insn_emulator: decoding (prefixes, REX, ModRM/SIB, RIP-relative, segment
// overrides, length limits), the operand-less and system instructions (no-ops, fwait, int3,
// clac/stac, swapgs, fs/gs base), what is refused, and random bytes. The memory-operand
// instructions are in insn_emulator_memory_ops_test.cpp, VcpuEmulatorMemory in
// vcpu_emulator_memory_test.cpp.
#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include "insn_emulator_test_support.h"
#include "vmm/kvm/insn_emulator.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_insn_emulator_test {

using namespace embervm::vmm;
using namespace embervm::vmm::insn_test;

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

}  // namespace unit_insn_emulator_test
