// GDT, IDT and identity page tables for the boot vCPU.
#include "boot/cpu_tables.h"

namespace embervm::boot {

namespace {
constexpr uint64_t kPtePresent = 1u << 0;
constexpr uint64_t kPteWritable = 1u << 1;
constexpr uint64_t kPteLargePage = 1u << 7;
constexpr uint64_t kPageTableSize = 0x1000;
constexpr size_t kEntriesPerTable = 512;
constexpr size_t kPageDirectories = 4;  // one per GiB, 0-4 GiB
constexpr uint64_t k2MiB = uint64_t{1} << 21;

static_assert(layout::kPdptAddr >= layout::kPml4Addr + kPageTableSize);
static_assert(layout::kPdAddr >= layout::kPdptAddr + kPageTableSize);
static_assert(layout::kPdAddr + kPageDirectories * kPageTableSize <= layout::kCmdlineAddr);
static_assert(layout::kBootStackTop < layout::kPml4Addr && layout::kBootStackTop > layout::kZeroPageAddr + 0x1000);
}  // namespace

std::array<uint64_t, kGdtEntries> boot_gdt(EntryProtocol protocol) {
    const uint64_t code = protocol == EntryProtocol::Pvh ? kCode32Descriptor : kCode64Descriptor;
    return {0, 0, code, kDataDescriptor};
}

kvm_segment segment_from_descriptor(uint64_t d, uint16_t selector) {
    kvm_segment s{};
    s.base = ((d >> 16) & 0x00ffffff) | ((d >> 32) & 0xff000000);
    const uint32_t limit = static_cast<uint32_t>((d & 0xffff) | ((d >> 32) & 0x000f0000));
    s.g = static_cast<uint8_t>((d >> 55) & 1);
    s.limit = s.g != 0 ? (limit << 12) | 0xfff : limit;
    s.selector = selector;
    s.type = static_cast<uint8_t>((d >> 40) & 0xf);
    s.s = static_cast<uint8_t>((d >> 44) & 1);
    s.dpl = static_cast<uint8_t>((d >> 45) & 3);
    s.present = static_cast<uint8_t>((d >> 47) & 1);
    s.avl = static_cast<uint8_t>((d >> 52) & 1);
    s.l = static_cast<uint8_t>((d >> 53) & 1);
    s.db = static_cast<uint8_t>((d >> 54) & 1);
    s.unusable = s.present == 0 ? 1 : 0;
    return s;
}

void write_gdt_and_idt(const memory::GuestMemory& mem, EntryProtocol protocol) {
    mem.write_obj(memory::GuestAddress(layout::kGdtAddr), boot_gdt(protocol));
    mem.write_obj(memory::GuestAddress(layout::kIdtAddr), uint64_t{0});
}

void write_page_tables(const memory::GuestMemory& mem) {
    std::array<uint64_t, kEntriesPerTable> table{};
    table[0] = layout::kPdptAddr | kPtePresent | kPteWritable;
    mem.write_obj(memory::GuestAddress(layout::kPml4Addr), table);

    table = {};
    for (size_t i = 0; i < kPageDirectories; i++) {
        table[i] = (layout::kPdAddr + i * kPageTableSize) | kPtePresent | kPteWritable;
    }
    mem.write_obj(memory::GuestAddress(layout::kPdptAddr), table);

    for (size_t pd = 0; pd < kPageDirectories; pd++) {
        for (size_t i = 0; i < kEntriesPerTable; i++) {
            table[i] = ((pd * kEntriesPerTable + i) * k2MiB) | kPtePresent | kPteWritable | kPteLargePage;
        }
        mem.write_obj(memory::GuestAddress(layout::kPdAddr + pd * kPageTableSize), table);
    }
}

}  // namespace embervm::boot
