// Fuzz target insn_decode: the instruction emulator (decoder and the instructions it executes)
// on fuzzed instruction bytes, vCPU state and guest memory, through the vCPU's own
// EmulatorMemory (VcpuEmulatorMemory: page-by-page translation into bounds-checked guest RAM).
//
// Input layout (tests/fuzz/make_insn_corpus.py writes it; missing bytes read as zero):
//   byte 0        instruction length L (taken modulo 17: up to one byte more than the 15 the
//                 decoder may use); bytes 1..L the instruction, handed over in a buffer of
//                 exactly L bytes so that a read past it is caught
//   FuzzCpu       mode bits, CPL, which linear page is unmapped, the registers (see below)
//   the rest      guest RAM contents from physical address 0 (RAM is 1 MiB; linear address A
//                 maps to physical A mod 2 MiB, so half of the linear space is outside RAM)
//
// Checks (insn_emulator.h's contract): an instruction not emulated (Unsupported, MemoryFault)
// or one that faults (#UD, #NM, #SS, #GP) leaves the vCPU state exactly as it was; an error
// code comes with #SS and #GP and with nothing else; a completed instruction (or int3's trap)
// moves RIP forward by 1 to 15 bytes, wrapped to the code segment's size outside 64-bit mode.
#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <optional>
#include <vector>

#include "memory/guest_memory.h"
#include "tests/fuzz/boot_harness.h"
#include "vmm/kvm/insn_emulator.h"

using namespace embervm;

namespace {

struct FuzzCpu {
    uint8_t mode;         // bit 0 cs.l, 1 cs.db, 2 EFER.LMA, 3 CR0.PE, 4 CR0.TS, 5 CR0.MP, 6 CR4.FSGSBASE, 7 CR4.LA57
    uint8_t cpl;          // bits 0-1: SS.DPL (the CPL); bit 2: RFLAGS.VM
    uint8_t unmapped;     // linear pages with (address >> 12) % 8 == this are not mapped (>= 8: none)
    uint8_t pad[5];
    uint64_t regs[18];    // rax rbx rcx rdx rsi rdi rsp rbp r8-r15 rip rflags (kvm_regs' order)
    uint64_t fs_base;
    uint64_t gs_base;
    uint64_t kernel_gs_base;
};
static_assert(sizeof(FuzzCpu) == 8 + 18 * 8 + 3 * 8);
static_assert(sizeof(kvm_regs) == 18 * 8);

constexpr uint64_t kRamBytes = uint64_t{1} << 20;
constexpr uint64_t kLinearToPhysMask = (uint64_t{2} << 20) - 1;

const memory::GuestMemory& guest_ram() {
    static const memory::GuestMemory mem({{memory::GuestAddress(0), kRamBytes}});
    return mem;
}

// What an input may have changed in guest_ram(): its own bytes at the start and the pages the
// emulator reached (every access goes through the input's translator, which marks the page).
// Only these are cleared before the next input, with memset: GuestMemory::zero of all 1 MiB
// (madvise, then a page fault per page touched again) cost more than emulating.
struct DirtyRam {
    size_t input_bytes = 0;
    bool pages[kRamBytes / 4096] = {};

    void mark(uint64_t phys) {
        if (phys < kRamBytes) pages[phys / 4096] = true;
    }
    void clear(const memory::GuestMemory& mem) {
        mem.fill(memory::GuestAddress(0), input_bytes, 0);
        for (size_t p = 0; p < std::size(pages); p++) {
            if (pages[p]) mem.fill(memory::GuestAddress(p * 4096), 4096, 0);
            pages[p] = false;
        }
    }
};

bool same_state(const vmm::CpuState& a, const vmm::CpuState& b) {
    return std::memcmp(&a.regs, &b.regs, sizeof a.regs) == 0 && std::memcmp(&a.sregs, &b.sregs, sizeof a.sregs) == 0 &&
           a.kernel_gs_base == b.kernel_gs_base;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const size_t len = std::min<size_t>(data[0] % 17, size - 1);
    const std::vector<uint8_t> insn(data + 1, data + 1 + len);
    size_t at = 1 + len;
    FuzzCpu f{};
    const size_t fn = std::min(sizeof f, size - at);
    std::memcpy(&f, data + at, fn);
    at += fn;

    const memory::GuestMemory& mem = guest_ram();
    static DirtyRam dirty;
    dirty.clear(mem);
    dirty.input_bytes = std::min<size_t>(size - at, kRamBytes);
    mem.write(memory::GuestAddress(0), std::span<const uint8_t>(data + at, dirty.input_bytes));

    vmm::CpuState cpu{};
    std::memcpy(&cpu.regs, f.regs, sizeof cpu.regs);
    cpu.sregs.cs.l = f.mode & 1;
    cpu.sregs.cs.db = (f.mode >> 1) & 1;
    cpu.sregs.efer = (f.mode & 4) ? (1ULL << 10) | (1ULL << 8) : 0;
    cpu.sregs.cr0 = ((f.mode & 8) ? 1 : 0) | ((f.mode & 16) ? 8 : 0) | ((f.mode & 32) ? 2 : 0) |
                    ((f.mode & 8) && (f.mode & 4) ? 1ULL << 31 : 0);
    cpu.sregs.cr4 = ((f.mode & 64) ? 1ULL << 16 : 0) | ((f.mode & 128) ? 1ULL << 12 : 0) | 0x20;
    cpu.sregs.ss.dpl = f.cpl & 3;
    cpu.sregs.cs.dpl = f.cpl & 3;
    cpu.sregs.cs.selector = static_cast<uint16_t>(0x10 | (f.cpl & 3));
    if (f.cpl & 4) cpu.regs.rflags |= 1ULL << 17;
    cpu.sregs.fs.base = f.fs_base;
    cpu.sregs.gs.base = f.gs_base;
    cpu.kernel_gs_base = f.kernel_gs_base;
    const vmm::CpuState before = cpu;

    vmm::VcpuEmulatorMemory emem(
        [&f](uint64_t linear) -> std::optional<uint64_t> {
            if (((linear >> 12) & 7) == f.unmapped) return std::nullopt;
            dirty.mark(linear & kLinearToPhysMask);
            return linear & kLinearToPhysMask;
        },
        mem);
    const vmm::EmulationResult r = vmm::emulate_instruction(insn, cpu, emem);
    (void)vmm::format_instruction_bytes(insn);

    using Status = vmm::EmulationResult::Status;
    if (r.status != Status::Emulated) {
        fuzz::fuzz_check(same_state(cpu, before), "insn: state changed by an instruction not emulated");
        fuzz::fuzz_check(!r.exception_vector, "insn: exception without emulation");
        return 0;
    }
    const std::optional<uint8_t> v = r.exception_vector;
    fuzz::fuzz_check(r.exception_error_code.has_value() == (v == 12 || v == 13),
                     "insn: error code without #SS/#GP or #SS/#GP without one");
    if (v && *v != 3) {
        fuzz::fuzz_check(*v == 6 || *v == 7 || *v == 12 || *v == 13, "insn: unexpected exception vector");
        fuzz::fuzz_check(same_state(cpu, before), "insn: a fault changed the state");
        return 0;
    }
    const bool long_mode = (before.sregs.efer & (1ULL << 10)) && before.sregs.cs.l;
    const uint64_t mask = long_mode ? ~0ULL : (before.sregs.cs.db ? 0xffffffffULL : 0xffffULL);
    bool advanced = false;
    for (uint64_t k = 1; k <= 15 && k <= insn.size(); k++) advanced |= cpu.regs.rip == ((before.regs.rip + k) & mask);
    fuzz::fuzz_check(advanced, "insn: RIP not moved past the instruction");
    fuzz::fuzz_check(!r.mnemonic.empty(), "insn: emulated without a mnemonic");
    return 0;
}
