// Tests for boot/cpu_tables and boot/registers: GDT, page tables and the boot vCPU state.
#include <catch2/catch.hpp>

#include "boot/boot.h"
#include "boot/cpu_tables.h"
#include "tests/unit/boot/test_images.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_cpu_tables_test {

using namespace embervm::boot;
using namespace embervm::boot::test;
using embervm::memory::GuestAddress;

namespace {

// Translates a guest virtual address through the page tables in guest memory (4-level,
// 2 MiB pages only), as the CPU would with CR3 = kPml4Addr.
std::optional<uint64_t> translate(const embervm::memory::GuestMemory& mem, uint64_t va) {
    const auto pml4e = mem.read_obj<uint64_t>(GuestAddress(layout::kPml4Addr + ((va >> 39) & 0x1ff) * 8));
    if ((pml4e & 1) == 0) return std::nullopt;
    const auto pdpte = mem.read_obj<uint64_t>(GuestAddress((pml4e & ~0xfffULL) + ((va >> 30) & 0x1ff) * 8));
    if ((pdpte & 1) == 0) return std::nullopt;
    const auto pde = mem.read_obj<uint64_t>(GuestAddress((pdpte & ~0xfffULL) + ((va >> 21) & 0x1ff) * 8));
    if ((pde & 1) == 0 || (pde & 0x80) == 0 || (pde & 2) == 0) return std::nullopt;
    return (pde & ~0x1fffffULL) + (va & 0x1fffff);
}

void check_flat(const kvm_segment& s, uint16_t selector, uint8_t type) {
    CHECK(s.selector == selector);
    CHECK(s.base == 0);
    CHECK(s.limit == 0xffffffff);
    CHECK(s.type == type);
    CHECK(s.present == 1);
    CHECK(s.dpl == 0);
    CHECK(s.s == 1);
    CHECK(s.g == 1);
    CHECK(s.unusable == 0);
}

}  // namespace

TEST_CASE("GDT descriptors decode to the expected segments", "[boot][cpu]") {
    CHECK(kCode64Descriptor == 0x00af9b000000ffffULL);
    CHECK(kCode32Descriptor == 0x00cf9b000000ffffULL);
    CHECK(kDataDescriptor == 0x00cf93000000ffffULL);
    const kvm_segment code64 = segment_from_descriptor(kCode64Descriptor, 0x10);
    check_flat(code64, 0x10, 0xb);
    CHECK(code64.l == 1);
    CHECK(code64.db == 0);
    const kvm_segment code32 = segment_from_descriptor(kCode32Descriptor, 0x10);
    CHECK(code32.l == 0);
    CHECK(code32.db == 1);
    const kvm_segment null = segment_from_descriptor(0, 0);
    CHECK(null.unusable == 1);
    const kvm_segment odd = segment_from_descriptor(gdt_entry(0x0093, 0x12345678, 0x1234), 0x28);
    CHECK(odd.base == 0x12345678);
    CHECK(odd.limit == 0x1234);
    CHECK(odd.g == 0);
}

TEST_CASE("The GDT in guest memory matches the entry protocol", "[boot][cpu]") {
    auto mem = make_guest_memory(16 * kMiB);
    write_gdt_and_idt(mem, EntryProtocol::Linux64);
    auto gdt = mem.read_obj<std::array<uint64_t, 4>>(GuestAddress(layout::kGdtAddr));
    CHECK(gdt == std::array<uint64_t, 4>{0, 0, kCode64Descriptor, kDataDescriptor});
    write_gdt_and_idt(mem, EntryProtocol::Pvh);
    gdt = mem.read_obj<std::array<uint64_t, 4>>(GuestAddress(layout::kGdtAddr));
    CHECK(gdt == std::array<uint64_t, 4>{0, 0, kCode32Descriptor, kDataDescriptor});
    CHECK(mem.read_obj<uint64_t>(GuestAddress(layout::kIdtAddr)) == 0);
}

TEST_CASE("Page tables identity-map the first 4 GiB with 2 MiB pages", "[boot][cpu]") {
    auto mem = make_guest_memory(16 * kMiB);
    write_page_tables(mem);
    for (uint64_t va : std::initializer_list<uint64_t>{0, 0x7000, 0x1234567, 0x3fffffff, 0x40000000, 0xbfffffff, 0xd0000000,
                        layout::kIoapicAddr, layout::kLapicAddr + 0x20, 0xffffffff}) {
        INFO("va " << std::hex << va);
        CHECK(translate(mem, va) == std::optional<uint64_t>(va));
    }
    CHECK_FALSE(translate(mem, 0x100000000ULL).has_value());
}

TEST_CASE("Registers for the Linux 64-bit entry", "[boot][cpu]") {
    BootSetup setup;
    setup.protocol = EntryProtocol::Linux64;
    setup.entry = 0x1000000;
    setup.boot_info_addr = layout::kZeroPageAddr;
    kvm_regs regs{};
    regs.rax = 0x1234;  // overwritten
    kvm_sregs sregs{};
    sregs.cr0 = 0x60000010;  // reset value: CD | NW | ET
    sregs.apic_base = 0xfee00900;
    sregs.tr.selector = 0x77;  // kept
    setup_boot_registers(setup, regs, sregs);

    CHECK(regs.rip == 0x1000000);
    CHECK(regs.rsi == layout::kZeroPageAddr);
    CHECK(regs.rsp == layout::kBootStackTop);
    CHECK(regs.rbp == layout::kBootStackTop);
    CHECK(regs.rflags == 0x2);
    CHECK(regs.rax == 0);
    CHECK(sregs.cr0 == 0x80000011);  // PG | ET | PE
    CHECK(sregs.cr3 == layout::kPml4Addr);
    CHECK(sregs.cr4 == 0x20);        // PAE
    CHECK(sregs.efer == 0x500);      // LME | LMA
    check_flat(sregs.cs, 0x10, 0xb);
    CHECK(sregs.cs.l == 1);
    CHECK(sregs.cs.db == 0);
    for (const kvm_segment* s : {&sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss}) {
        check_flat(*s, 0x18, 0x3);
        CHECK(s->db == 1);
        CHECK(s->l == 0);
    }
    CHECK(sregs.gdt.base == layout::kGdtAddr);
    CHECK(sregs.gdt.limit == 31);
    CHECK(sregs.idt.base == layout::kIdtAddr);
    CHECK(sregs.idt.limit == 0);
    CHECK(sregs.apic_base == 0xfee00900);
    CHECK(sregs.tr.selector == 0x77);
}

TEST_CASE("Registers for the PVH entry", "[boot][cpu][pvh]") {
    BootSetup setup;
    setup.protocol = EntryProtocol::Pvh;
    setup.entry = 0x1000500;
    setup.boot_info_addr = layout::kPvhInfoAddr;
    kvm_regs regs{};
    kvm_sregs sregs{};
    sregs.cr0 = 0x60000010;
    sregs.efer = 0x500;  // left over: must be cleared
    sregs.cr4 = 0x20;
    setup_boot_registers(setup, regs, sregs);

    CHECK(regs.rip == 0x1000500);
    CHECK(regs.rbx == layout::kPvhInfoAddr);
    CHECK(regs.rflags == 0x2);
    CHECK(regs.rsi == 0);
    CHECK(sregs.cr0 == 0x11);  // ET | PE, paging off
    CHECK(sregs.cr4 == 0);
    CHECK(sregs.efer == 0);
    check_flat(sregs.cs, 0x10, 0xb);
    CHECK(sregs.cs.db == 1);
    CHECK(sregs.cs.l == 0);
    for (const kvm_segment* s : {&sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss}) {
        check_flat(*s, 0x18, 0x3);
        CHECK(s->db == 1);
    }
    CHECK(sregs.gdt.base == layout::kGdtAddr);
}

}  // namespace unit_cpu_tables_test
