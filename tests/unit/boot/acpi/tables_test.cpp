// Tests for boot/acpi/tables and boot/acpi/acpi: the tables' contents and where they land.
//
// Every table's length and checksum, the RSDP's two checksums, the pointers between the tables,
// the MADT for 1..8 vCPUs and where the block of tables lands in guest memory.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>

#include "boot/acpi/acpi.h"
#include "boot/acpi/checksum.h"
#include "boot/acpi/dsdt.h"
#include "boot/acpi/tables.h"
#include "boot/memory_map.h"
#include "boot/mptable.h"
#include "tests/unit/boot/acpi/acpi_test_util.h"
#include "tests/unit/boot/test_images.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_tables_test {

using namespace embervm::boot;
using namespace embervm::boot::acpi;
using embervm::boot::test::peek;
using embervm::boot::test::val;
using embervm::acpi_test::byte_sum;
using embervm::acpi_test::find_table;
using embervm::acpi_test::guest_with;
using embervm::memory::GuestAddress;

namespace {

const AcpiTablePlacement& find(const AcpiTables& t, const std::string& sig) { return find_table(t, sig); }

std::span<const uint8_t> bytes_of(const AcpiTables& t, const AcpiTablePlacement& p) {
    return std::span<const uint8_t>(t.bytes).subspan(p.addr - t.base_gpa, p.length);
}

template <typename T>
T table_obj(const AcpiTables& t, const std::string& sig, size_t offset = 0) {
    const auto& p = find(t, sig);
    return peek<T>(t.bytes, p.addr - t.base_gpa + offset);
}

}  // namespace

TEST_CASE("checksum makes a table sum to zero", "[acpi]") {
    std::vector<uint8_t> b{1, 2, 3, 0, 250};
    fix_checksum(b, 3);
    CHECK(byte_sum(b) == 0);
    CHECK(b[3] == static_cast<uint8_t>(-(1 + 2 + 3 + 250)));
    fix_checksum(b, 3);  // again: the old checksum does not count
    CHECK(byte_sum(b) == 0);
}

TEST_CASE("every table has its length, a zero byte sum and a 16-byte aligned place of its own", "[acpi]") {
    for (unsigned devices : {0u, 1u, 8u, 19u}) {
        CAPTURE(devices);
        const AcpiTables t = build_acpi_tables(guest_with(4, devices), kAcpiTablesStart);
        CHECK(t.base_gpa == kAcpiTablesStart);
        CHECK(t.rsdp_addr == kAcpiTablesStart);
        REQUIRE(t.tables.size() == 5);
        CHECK(t.tables[0].signature == "RSD PTR ");
        CHECK(t.bytes.size() <= kAcpiTablesMaxSize);
        for (const auto& p : t.tables) {
            CAPTURE(p.signature);
            CHECK(p.addr % 16 == 0);
            REQUIRE(p.addr >= t.base_gpa);
            REQUIRE(p.addr + p.length <= t.base_gpa + t.bytes.size());
            const auto bytes = bytes_of(t, p);
            CHECK(std::memcmp(bytes.data(), p.signature.data(), p.signature.size()) == 0);
            if (p.signature != "RSD PTR ") {
                CHECK(peek<uint32_t>(t.bytes, p.addr - t.base_gpa + offsetof(SdtHeader, length)) == p.length);
                CHECK(byte_sum(bytes) == 0);
            }
            for (const auto& q : t.tables) {
                if (&p != &q) {
                    CHECK((p.addr + p.length <= q.addr || q.addr + q.length <= p.addr));
                }
            }
        }
    }
}

TEST_CASE("the RSDP carries both checksums and points at the XSDT", "[acpi]") {
    const AcpiTables t = build_acpi_tables(guest_with(1, 1), 0x100000);
    const auto rsdp = table_obj<Rsdp>(t, "RSD PTR ");
    const auto bytes = bytes_of(t, find(t, "RSD PTR "));
    CHECK(std::memcmp(rsdp.signature, "RSD PTR ", 8) == 0);
    CHECK(rsdp.revision == 2);
    CHECK(rsdp.length == 36);
    CHECK(rsdp.rsdt_address == 0);
    CHECK(byte_sum(bytes.first(20)) == 0);
    CHECK(byte_sum(bytes) == 0);
    CHECK(val(rsdp.xsdt_address) == find(t, "XSDT").addr);

    const Rsdp other = build_rsdp(0x123456789a);
    const auto* p = reinterpret_cast<const uint8_t*>(&other);
    CHECK(byte_sum(std::span<const uint8_t>(p, 20)) == 0);
    CHECK(byte_sum(std::span<const uint8_t>(p, 36)) == 0);
}

TEST_CASE("the XSDT points at the FADT and the MADT, the FADT at the DSDT", "[acpi]") {
    const AcpiTables t = build_acpi_tables(guest_with(2, 3), kAcpiTablesStart);
    const auto& xsdt = find(t, "XSDT");
    REQUIRE(xsdt.length == sizeof(SdtHeader) + 2 * 8);
    const size_t off = xsdt.addr - t.base_gpa + sizeof(SdtHeader);
    CHECK(peek<uint64_t>(t.bytes, off) == find(t, "FACP").addr);
    CHECK(peek<uint64_t>(t.bytes, off + 8) == find(t, "APIC").addr);

    const auto fadt = table_obj<Fadt>(t, "FACP");
    CHECK(find(t, "FACP").length == 276);
    CHECK(fadt.header.revision == 6);
    CHECK(fadt.minor_version == 5);
    CHECK(val(fadt.x_dsdt) == find(t, "DSDT").addr);
    CHECK(val(fadt.dsdt) == find(t, "DSDT").addr);
    CHECK(val(fadt.x_firmware_ctrl) == 0);  // no FACS on a hardware-reduced platform
    CHECK((val(fadt.flags) & kFadtHardwareReduced) != 0);
    CHECK((val(fadt.flags) & kFadtResetRegSupported) != 0);
    CHECK(val(fadt.sci_int) == 0);
    CHECK(val(fadt.pm1a_cnt_blk) == 0);
    CHECK(val(fadt.hypervisor_vendor_id) != 0);

    const auto check_port = [](GenericAddress gas, uint16_t port) {
        CHECK(gas.space_id == kGasSystemIo);
        CHECK(gas.bit_width == 8);
        CHECK(gas.bit_offset == 0);
        CHECK(gas.access_size == kGasAccessByte);
        CHECK(val(gas.address) == port);
    };
    check_port(fadt.sleep_control_reg, kSleepControlPort);
    check_port(fadt.sleep_status_reg, kSleepStatusPort);
    check_port(fadt.reset_reg, kResetPort);
    CHECK(fadt.reset_value == kResetValue);
    // The value Linux writes for \_S5 on a hardware-reduced platform.
    CHECK((((kSleepTypeS5 << kSleepTypeShift) & kSleepTypeMask) | kSleepEnable) == 0x34);
    CHECK(is_poweroff_request(0x34));
    CHECK_FALSE(is_poweroff_request(0x14));  // SLP_TYP 5 without SLP_EN
    CHECK_FALSE(is_poweroff_request(0x2c));  // SLP_EN with SLP_TYP 3
    CHECK_FALSE(is_poweroff_request(kSleepStatusWake));
}

TEST_CASE("the FADT's boot flags announce the i8042 only when the guest has one", "[acpi]") {
    AcpiLayout g = guest_with(1, 0);
    CHECK((val(table_obj<Fadt>(build_acpi_tables(g), "FACP").iapc_boot_arch) & kIapcI8042) != 0);
    g.i8042 = false;
    const uint16_t flags = table_obj<Fadt>(build_acpi_tables(g), "FACP").iapc_boot_arch;
    CHECK((flags & kIapcI8042) == 0);
    CHECK((flags & kIapcVgaNotPresent) != 0);
    CHECK((flags & kIapcNoCmosRtc) != 0);
}

TEST_CASE("the FADT allows MSI only when the guest has PCI", "[acpi]") {
    AcpiLayout g = guest_with(1, 0);
    CHECK((val(table_obj<Fadt>(build_acpi_tables(g), "FACP").iapc_boot_arch) & kIapcMsiNotSupported) != 0);
    g.pci = PciRootInfo{};
    const uint16_t flags = table_obj<Fadt>(build_acpi_tables(g), "FACP").iapc_boot_arch;
    CHECK((flags & kIapcMsiNotSupported) == 0);
    CHECK((flags & kIapcI8042) != 0);
    CHECK((flags & kIapcVgaNotPresent) != 0);
}

TEST_CASE("with PCI the XSDT points at an MCFG with bus 0's ECAM window", "[acpi]") {
    AcpiLayout g = guest_with(1, 0);
    for (const auto& p : build_acpi_tables(g).tables) CHECK(p.signature != "MCFG");
    g.pci = PciRootInfo{};
    const AcpiTables t = build_acpi_tables(g);
    REQUIRE(t.tables.size() == 6);
    const auto& xsdt = find(t, "XSDT");
    REQUIRE(xsdt.length == sizeof(SdtHeader) + 3 * 8);
    CHECK(peek<uint64_t>(t.bytes, xsdt.addr - t.base_gpa + sizeof(SdtHeader) + 16) == find(t, "MCFG").addr);
    const auto& mcfg = find(t, "MCFG");
    REQUIRE(mcfg.length == sizeof(McfgHeader) + sizeof(McfgAllocation));
    CHECK(byte_sum(bytes_of(t, mcfg)) == 0);
    CHECK(table_obj<McfgHeader>(t, "MCFG").header.revision == kMcfgRevision);
    const auto a = table_obj<McfgAllocation>(t, "MCFG", sizeof(McfgHeader));
    CHECK(val(a.base_address) == layout::kPciEcamStart);
    CHECK(val(a.segment) == 0);
    CHECK(a.start_bus == 0);
    CHECK(a.end_bus == 0);
    // A window Linux could not use is refused.
    CHECK_THROWS_AS(build_mcfg(PciRootInfo{0xc0000000, 0x10000000, 0xe0001000}), embervm::Error);
    CHECK_THROWS_AS(build_mcfg(PciRootInfo{0xc0000000, 0x10000000, 0x100000000}), embervm::Error);
}

TEST_CASE("the MADT describes 1 to 8 vCPUs, the I/O APIC and LINT1 as the MP table does", "[acpi]") {
    for (unsigned vcpus = 1; vcpus <= 8; vcpus++) {
        CAPTURE(vcpus);
        AcpiLayout g = guest_with(vcpus, 0);
        const std::vector<uint8_t> madt = build_madt(g);
        REQUIRE(madt.size() == sizeof(MadtHeader) + vcpus * 8 + 12 + 6);
        CHECK(byte_sum(madt) == 0);
        const auto h = peek<MadtHeader>(madt, 0);
        CHECK(std::memcmp(h.header.signature, "APIC", 4) == 0);
        CHECK(val(h.header.length) == madt.size());
        CHECK(val(h.local_apic_address) == layout::kLapicAddr);
        CHECK(val(h.flags) == kMadtPcatCompat);

        size_t off = sizeof(MadtHeader);
        for (unsigned i = 0; i < vcpus; i++) {
            const auto lapic = peek<MadtLocalApic>(madt, off);
            CHECK(lapic.type == kMadtLocalApic);
            CHECK(lapic.length == 8);
            CHECK(lapic.processor_uid == i);
            CHECK(lapic.apic_id == i);
            CHECK(val(lapic.flags) == kMadtLocalApicEnabled);
            off += lapic.length;
        }
        const auto ioapic = peek<MadtIoApic>(madt, off);
        CHECK(ioapic.type == kMadtIoApic);
        CHECK(ioapic.length == 12);
        CHECK(ioapic.io_apic_id == vcpus);  // the MP table's I/O APIC id
        CHECK(val(ioapic.address) == layout::kIoapicAddr);
        CHECK(val(ioapic.gsi_base) == 0);
        off += ioapic.length;
        const auto nmi = peek<MadtLocalApicNmi>(madt, off);
        CHECK(nmi.type == kMadtLocalApicNmi);
        CHECK(nmi.processor_uid == 0xff);
        CHECK(nmi.lint == 1);
        CHECK(off + nmi.length == madt.size());

        // Same I/O APIC id as in the MP table, which the guest may read instead.
        const std::vector<uint8_t> mp = build_mptable(vcpus, layout::kEbdaStart);
        const size_t mp_ioapic = sizeof(MpFloatingPointer) + sizeof(MpConfigHeader) +
                                 vcpus * sizeof(MpProcessorEntry) + sizeof(MpBusEntry);
        CHECK(peek<MpIoapicEntry>(mp, mp_ioapic).id == ioapic.io_apic_id);
    }
}

TEST_CASE("guests the tables cannot describe are refused", "[acpi]") {
    CHECK_THROWS_AS(build_madt(guest_with(0, 0)), embervm::Error);
    CHECK_THROWS_AS(build_madt(guest_with(kMadtMaxVcpus + 1, 0)), embervm::Error);
    CHECK(build_madt(guest_with(kMadtMaxVcpus, 0)).size() == sizeof(MadtHeader) + kMadtMaxVcpus * 8 + 18);

    AcpiLayout high = guest_with(1, 1);
    high.virtio[0].addr = 0xfffff800;  // its 4 KiB window crosses 4 GiB
    CHECK_THROWS_AS(build_dsdt(high), embervm::Error);
    high.virtio[0] = {0x100000000, 0x1000, 5};
    CHECK_THROWS_AS(build_dsdt(high), embervm::Error);
    CHECK_THROWS_AS(build_dsdt(guest_with(1, kDsdtMaxVirtioDevices + 1)), embervm::Error);
    CHECK_NOTHROW(build_dsdt(guest_with(1, kDsdtMaxVirtioDevices)));
    AcpiLayout pci = guest_with(1, 0);
    pci.pci = PciRootInfo{0xf0000000, 0x10000000};  // ends exactly at 4 GiB
    CHECK_NOTHROW(build_dsdt(pci));
    pci.pci = PciRootInfo{0xf0000000, 0x10001000};
    CHECK_THROWS_AS(build_dsdt(pci), embervm::Error);
    pci.pci = PciRootInfo{0xc0000000, 0};
    CHECK_THROWS_AS(build_dsdt(pci), embervm::Error);
    CHECK_THROWS_AS(build_acpi_tables(guest_with(1, 0), kAcpiTablesStart + 8), embervm::Error);
}

TEST_CASE("the tables go to the e820-reserved BIOS area, where a guest's scan finds the RSDP", "[acpi]") {
    const auto mem = embervm::boot::test::make_guest_memory(64 << 20);
    write_mptable(mem, 2);
    const AcpiLayout g = guest_with(2, 3);
    const uint64_t rsdp = write_acpi_tables(mem, g);
    CHECK(rsdp == kAcpiTablesStart);

    // The scan Linux does without acpi_rsdp_addr: every 16 bytes of [0xe0000, 1 MiB).
    uint64_t found = 0;
    for (uint64_t a = 0xe0000; a < 0x100000 && found == 0; a += 16) {
        char sig[8];
        mem.read(GuestAddress(a), std::span<uint8_t>(reinterpret_cast<uint8_t*>(sig), 8));
        if (std::memcmp(sig, "RSD PTR ", 8) == 0) {
            found = a;
        }
    }
    CHECK(found == rsdp);

    // What was written is what build_acpi_tables returns, and it does not touch the MP table.
    const AcpiTables t = build_acpi_tables(g);
    std::vector<uint8_t> back(t.bytes.size());
    mem.read(GuestAddress(kAcpiTablesStart), back);
    CHECK(back == t.bytes);
    CHECK(layout::kEbdaStart + kMpTableMaxSize <= kAcpiTablesStart);

    // The whole block lies in a range the e820 map reports as reserved: no map change needed.
    bool reserved = false;
    for (const auto& e : guest_memory_map(mem)) {
        if (e.addr <= kAcpiTablesStart && kAcpiTablesStart + kAcpiTablesMaxSize <= e.addr + e.size) {
            reserved = e.type == MemoryType::Reserved;
        }
    }
    CHECK(reserved);
}

}  // namespace unit_tables_test
