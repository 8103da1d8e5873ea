// What the insn_emulator tests share: a fake guest memory, CPU states, common checks.
#pragma once

#include <catch2/catch.hpp>

#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/kvm/insn_emulator.h"

namespace embervm::vmm::insn_test {

using Status = EmulationResult::Status;

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

inline CpuState long_mode_cpu() {
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

inline CpuState protected32_cpu() {
    CpuState cpu{};
    cpu.regs.rip = 0x100000;
    cpu.regs.rflags = 0x2;
    cpu.sregs.cs.selector = 0x08;
    cpu.sregs.cs.db = 1;
    cpu.sregs.cr0 = 0x11;  // ET PE
    return cpu;
}

inline CpuState real_mode_cpu() {
    CpuState cpu{};
    cpu.regs.rip = 0x7c00;
    cpu.regs.rflags = 0x2;
    return cpu;
}

inline EmulationResult run(const std::vector<uint8_t>& bytes, CpuState& cpu, EmulatorMemory& mem) {
    return emulate_instruction(bytes, cpu, mem);
}

inline bool same_state(const CpuState& a, const CpuState& b) {
    return std::memcmp(&a.regs, &b.regs, sizeof(a.regs)) == 0 &&
           std::memcmp(&a.sregs, &b.sregs, sizeof(a.sregs)) == 0 && a.kernel_gs_base == b.kernel_gs_base;
}

// Emulated, RIP advanced by `length`, nothing else but RIP changed.
inline void check_no_op(const std::vector<uint8_t>& bytes, size_t length, const std::string& mnemonic) {
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
inline void check_fault(const std::vector<uint8_t>& bytes, CpuState cpu, FakeMemory& mem, uint8_t vector,
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
inline void check_unsupported(const std::vector<uint8_t>& bytes, CpuState cpu, const std::string& detail_part) {
    INFO(format_instruction_bytes(bytes));
    FakeMemory mem;
    const CpuState before = cpu;
    const EmulationResult r = run(bytes, cpu, mem);
    CHECK(r.status == Status::Unsupported);
    CHECK_FALSE(r.exception_vector);
    CHECK_THAT(r.detail, Catch::Contains(detail_part));
    CHECK(same_state(cpu, before));
}


}  // namespace embervm::vmm::insn_test
