// Tests for boot/mptable: structure, entries and checksums of the MP table.
#include <catch2/catch.hpp>

#include <cstring>
#include <numeric>

#include "boot/boot.h"
#include "boot/mptable.h"
#include "tests/unit/boot/test_images.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_mptable_test {

using namespace embervm::boot;
using namespace embervm::boot::test;
using Catch::Matchers::Contains;
using embervm::memory::GuestAddress;

namespace {

uint8_t byte_sum(const std::vector<uint8_t>& bytes, size_t off, size_t len) {
    return std::accumulate(bytes.begin() + static_cast<ptrdiff_t>(off),
                           bytes.begin() + static_cast<ptrdiff_t>(off + len), uint8_t{0},
                           [](uint8_t a, uint8_t b) { return static_cast<uint8_t>(a + b); });
}

// Parses the MP table the way a guest does: floating pointer at kEbdaStart, then the config
// table it points to; checks both checksums and returns the entries by type.
struct ParsedMpTable {
    std::vector<MpProcessorEntry> cpus;
    std::vector<MpBusEntry> buses;
    std::vector<MpIoapicEntry> ioapics;
    std::vector<MpInterruptEntry> io_ints;
    std::vector<MpInterruptEntry> local_ints;
    uint16_t entry_count = 0;
    uint32_t lapic = 0;
};

ParsedMpTable parse(const embervm::memory::GuestMemory& mem) {
    ParsedMpTable out;
    std::vector<uint8_t> fp_bytes(16);
    mem.read(GuestAddress(layout::kEbdaStart), fp_bytes);
    const auto fp = peek<MpFloatingPointer>(fp_bytes, 0);
    REQUIRE(std::memcmp(fp.signature, "_MP_", 4) == 0);
    CHECK(fp.length == 1);
    CHECK(fp.spec_rev == 4);
    CHECK(fp.feature1 == 0);
    CHECK(byte_sum(fp_bytes, 0, 16) == 0);

    const auto hdr = mem.read_obj<MpConfigHeader>(GuestAddress(fp.config_table));
    REQUIRE(std::memcmp(hdr.signature, "PCMP", 4) == 0);
    CHECK(hdr.spec_rev == 4);
    std::vector<uint8_t> table(hdr.base_length);
    mem.read(GuestAddress(fp.config_table), table);
    CHECK(byte_sum(table, 0, table.size()) == 0);
    // The whole table lies in the EBDA reservation.
    CHECK(val(fp.config_table) >= layout::kEbdaStart);
    CHECK(val(fp.config_table) + val(hdr.base_length) <= layout::kEbdaStart + 0x400);
    out.entry_count = hdr.entry_count;
    out.lapic = hdr.lapic_addr;

    size_t off = sizeof(MpConfigHeader);
    for (unsigned i = 0; i < hdr.entry_count; i++) {
        REQUIRE(off < table.size());
        switch (table[off]) {
            case kMpProcessor: out.cpus.push_back(peek<MpProcessorEntry>(table, off)); off += 20; break;
            case kMpBus: out.buses.push_back(peek<MpBusEntry>(table, off)); off += 8; break;
            case kMpIoapic: out.ioapics.push_back(peek<MpIoapicEntry>(table, off)); off += 8; break;
            case kMpIoInterrupt: out.io_ints.push_back(peek<MpInterruptEntry>(table, off)); off += 8; break;
            case kMpLocalInterrupt: out.local_ints.push_back(peek<MpInterruptEntry>(table, off)); off += 8; break;
            default: FAIL("unknown MP entry type " << int{table[off]} << " at offset " << off);
        }
    }
    CHECK(off == table.size());
    return out;
}

}  // namespace

TEST_CASE("MP table for 1 and 4 vCPUs", "[boot][mptable]") {
    const unsigned vcpus = GENERATE(1u, 4u);
    INFO(vcpus << " vCPUs");
    auto mem = make_guest_memory(16 * kMiB);
    write_mptable(mem, vcpus);
    const ParsedMpTable t = parse(mem);

    CHECK(t.entry_count == vcpus + 1 + 1 + 24 + 2);
    CHECK(t.lapic == layout::kLapicAddr);
    REQUIRE(t.cpus.size() == vcpus);
    for (unsigned i = 0; i < vcpus; i++) {
        CHECK(t.cpus[i].apic_id == i);
        CHECK((t.cpus[i].cpu_flags & 1) == 1);                  // enabled
        CHECK((t.cpus[i].cpu_flags & 2) == (i == 0 ? 2 : 0));   // BSP
        CHECK(t.cpus[i].apic_version == kMpApicVersion);
    }
    REQUIRE(t.buses.size() == 1);
    CHECK(std::memcmp(t.buses[0].bus_type, "ISA   ", 6) == 0);
    REQUIRE(t.ioapics.size() == 1);
    CHECK(t.ioapics[0].id == vcpus);
    CHECK(t.ioapics[0].flags == 1);
    CHECK(val(t.ioapics[0].address) == layout::kIoapicAddr);
    REQUIRE(t.io_ints.size() == 24);
    for (unsigned i = 0; i < 24; i++) {
        CHECK(t.io_ints[i].irq_type == kMpIntInt);
        CHECK(t.io_ints[i].src_bus == t.buses[0].bus_id);
        CHECK(t.io_ints[i].src_irq == i);
        CHECK(t.io_ints[i].dst_id == vcpus);
        CHECK(t.io_ints[i].dst_pin == i);
    }
    REQUIRE(t.local_ints.size() == 2);
    CHECK(t.local_ints[0].irq_type == kMpIntExtInt);
    CHECK(t.local_ints[0].dst_pin == 0);
    CHECK(t.local_ints[1].irq_type == kMpIntNmi);
    CHECK(t.local_ints[1].dst_pin == 1);
}

TEST_CASE("MP table size limits the vCPU count", "[boot][mptable]") {
    CHECK(mptable_size(1) == 16 + 44 + 20 + 8 + 8 + 24 * 8 + 2 * 8);
    CHECK(mptable_max_vcpus() == 37);
    CHECK(mptable_size(mptable_max_vcpus()) <= kMpTableMaxSize);
    CHECK(mptable_size(mptable_max_vcpus() + 1) > kMpTableMaxSize);
    CHECK_NOTHROW(build_mptable(32, layout::kEbdaStart));
    CHECK_THROWS_WITH(build_mptable(38, layout::kEbdaStart), Contains("38 vCPUs need 1044 bytes"));
    CHECK_THROWS_WITH(build_mptable(0, layout::kEbdaStart), Contains("at least one vCPU"));

    auto mem = make_guest_memory(16 * kMiB);
    write_mptable(mem, 32);
    CHECK(parse(mem).cpus.size() == 32);
}

TEST_CASE("setup_boot checks the vCPU count", "[boot][mptable]") {
    auto mem = make_guest_memory(16 * kMiB);
    const auto kernel = elf_kernel(false).build();
    BootOptions o;
    o.kernel = kernel;
    o.vcpu_count = 0;
    CHECK_THROWS_WITH(setup_boot(mem, o), Contains("0 vCPUs requested, the MP table supports 1 to 37"));
    o.vcpu_count = 4;
    setup_boot(mem, o);
    CHECK(parse(mem).cpus.size() == 4);
}

}  // namespace unit_mptable_test
