// Boot vCPU register state for the Linux 64-bit and PVH entry protocols.
#include <cstring>

#include "boot/boot.h"
#include "boot/cpu_tables.h"
#include "boot/layout.h"

namespace embervm::boot {

namespace {
constexpr uint64_t kCr0Pe = 1ull << 0;   // protected mode
constexpr uint64_t kCr0Et = 1ull << 4;   // extension type (always 1 on modern CPUs)
constexpr uint64_t kCr0Pg = 1ull << 31;  // paging
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kEferLme = 1ull << 8;
constexpr uint64_t kEferLma = 1ull << 10;
constexpr uint64_t kRflagsReserved = 1ull << 1;  // bit 1 always reads as 1

void set_segments(kvm_sregs& sregs, EntryProtocol protocol) {
    const auto gdt = boot_gdt(protocol);
    sregs.cs = segment_from_descriptor(gdt[kBootCodeSelector / 8], kBootCodeSelector);
    const kvm_segment data = segment_from_descriptor(gdt[kBootDataSelector / 8], kBootDataSelector);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = layout::kGdtAddr;
    sregs.gdt.limit = kGdtLimit;
    std::memset(sregs.gdt.padding, 0, sizeof(sregs.gdt.padding));
    sregs.idt.base = layout::kIdtAddr;
    sregs.idt.limit = kIdtLimit;
    std::memset(sregs.idt.padding, 0, sizeof(sregs.idt.padding));
}
}  // namespace

void setup_boot_registers(const BootSetup& setup, kvm_regs& regs, kvm_sregs& sregs) {
    regs = kvm_regs{};
    regs.rflags = kRflagsReserved;
    regs.rip = setup.entry;
    set_segments(sregs, setup.protocol);

    if (setup.protocol == EntryProtocol::Linux64) {
        // Long mode with the identity page tables; RSI points to the zero page.
        sregs.cr0 = kCr0Pe | kCr0Et | kCr0Pg;
        sregs.cr3 = layout::kPml4Addr;
        sregs.cr4 = kCr4Pae;
        sregs.efer = kEferLme | kEferLma;
        regs.rsi = setup.boot_info_addr;
        regs.rsp = layout::kBootStackTop;
        regs.rbp = layout::kBootStackTop;
    } else {
        // 32-bit protected mode, paging off; EBX points to hvm_start_info.
        sregs.cr0 = kCr0Pe | kCr0Et;
        sregs.cr3 = 0;
        sregs.cr4 = 0;
        sregs.efer = 0;
        regs.rbx = setup.boot_info_addr;
    }
}

}  // namespace embervm::boot
