// VMM-side emulation of the few x86 instructions KVM's own instruction emulator gives up on.
//
// With KVM_CAP_EXIT_ON_EMULATION_FAILURE, KVM reports such an instruction as
// KVM_EXIT_INTERNAL_ERROR / KVM_INTERNAL_ERROR_EMULATION together with its bytes. The
// decoder here is deliberately small: legacy prefixes, REX, ModRM/SIB/displacement and
// RIP-relative addressing in 64-bit mode, and a short list of instructions with simple
// semantics (popcnt, cmpxchg8b/16b, swapgs, rd/wr{fs,gs}base, clac/stac, fences, pause, the
// NOP family, fwait, int3). Everything else is reported as Unsupported so the VMM can stop
// the guest with a clear message instead of guessing.
//
// The instruction bytes and all register and memory values are guest-controlled: decoding
// never reads past the span, never past 15 bytes, and guest memory is reached only through
// EmulatorMemory.
//
// Not modelled: segment limits outside 64-bit mode (only operand-less instructions are
// emulated there), page-level write/user permissions (the translation does not report them),
// pending x87 exceptions for fwait (no FPU state here), RFLAGS.TF single-step traps and the
// interrupt shadow.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>

#include "memory/guest_memory.h"

namespace embervm::vmm {

// The vCPU state an instruction can read or change.
struct CpuState {
    kvm_regs regs;
    kvm_sregs sregs;
    uint64_t kernel_gs_base;  // MSR_KERNEL_GS_BASE, for swapgs
};

// Access to guest memory by *linear* (virtual) address, as the guest's instruction sees it.
class EmulatorMemory {
public:
    virtual ~EmulatorMemory() = default;
    // Return false when any byte of the range cannot be reached (unmapped, outside RAM).
    virtual bool read(uint64_t linear, std::span<uint8_t> out) = 0;
    virtual bool write(uint64_t linear, std::span<const uint8_t> in) = 0;
    // Compares the bytes at `linear` with `expected`: if equal, stores `desired` and returns
    // true; if not, copies the current bytes into `expected` and returns false. nullopt on a
    // memory fault. `expected` and `desired` have the same size. The default is a plain read,
    // compare and write; implementations backed by shared memory make it atomic.
    virtual std::optional<bool> compare_exchange(uint64_t linear, std::span<uint8_t> expected,
                                                 std::span<const uint8_t> desired);
};

struct EmulationResult {
    enum class Status {
        Emulated,     // cpu (and maybe memory) updated; inject exception_vector if set
        Unsupported,  // not an instruction this emulator knows (or a form it refuses); cpu untouched
        MemoryFault,  // an operand's linear address could not be reached; cpu untouched
    };
    Status status = Status::Unsupported;
    std::string mnemonic;  // e.g. "lock cmpxchg16b", empty if the opcode was not recognised
    // An exception to inject after the state update. Faults (#UD 6, #NM 7, #SS 12, #GP 13)
    // leave RIP at the instruction; the #BP trap of int3 (3) leaves RIP after it, which is the
    // return address the guest's handler expects.
    std::optional<uint8_t> exception_vector;
    std::string detail;  // why an instruction is Unsupported / where memory faulted
    // The error code to push with exception_vector; set exactly for the vectors that push
    // one (#SS and #GP here). Injecting these without an error code is invalid on VMX.
    std::optional<uint32_t> exception_error_code;
};

// Decodes and executes one instruction at cpu.regs.rip whose bytes are `bytes` (extra
// trailing bytes are ignored). On Status::Emulated, `cpu` holds the new state (RIP advanced
// unless a fault is reported); otherwise `cpu` is left as it was.
EmulationResult emulate_instruction(std::span<const uint8_t> bytes, CpuState& cpu, EmulatorMemory& mem);

// Hex bytes separated by spaces, e.g. "f3 0f b8 c1"; "(none)" for an empty span.
std::string format_instruction_bytes(std::span<const uint8_t> bytes);

// Translates a linear address to the guest-physical address it maps to in the vCPU's current
// paging mode, or nullopt if its page is not mapped. The vCPU supplies it (KvmVcpu::translate),
// so that this emulator never talks to KVM itself.
using LinearTranslator = std::function<std::optional<uint64_t>(uint64_t linear)>;

// EmulatorMemory of a vCPU: linear addresses are translated to guest-physical ones page by
// page (an access that crosses a page boundary is split), and guest RAM is accessed only
// through the bounds-checked GuestMemory API.
class VcpuEmulatorMemory : public EmulatorMemory {
public:
    VcpuEmulatorMemory(LinearTranslator translator, const memory::GuestMemory& mem);

    bool read(uint64_t linear, std::span<uint8_t> out) override;
    bool write(uint64_t linear, std::span<const uint8_t> in) override;
    // Atomic (a locked cmpxchg on the guest RAM mapping) for naturally aligned 8- and 16-byte
    // operands, so that lock cmpxchg8b/16b stay atomic against other vCPUs; the default
    // otherwise.
    std::optional<bool> compare_exchange(uint64_t linear, std::span<uint8_t> expected,
                                         std::span<const uint8_t> desired) override;

    // The guest-physical address of `linear`, or nullopt if its page is not mapped.
    std::optional<memory::GuestAddress> translate(uint64_t linear) const;

private:
    LinearTranslator translator_;
    const memory::GuestMemory& mem_;
};

}  // namespace embervm::vmm
