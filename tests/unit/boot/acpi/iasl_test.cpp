// Checks embervm's ACPI tables with ACPICA's own tools, iasl and acpiexec.
//
// acpica-tools is required, these tests are never skipped: `iasl -d` must disassemble every
// table without errors or checksum complaints and
// show what was put in, the DSDT's disassembly must compile again cleanly, and `acpiexec`
// must load the tables and evaluate \_S5 and the devices' _CRS.
#include <catch2/catch.hpp>

#include <fmt/format.h>

#include "boot/acpi/acpi.h"
#include "boot/acpi/dsdt.h"
#include "boot/acpi/tables.h"
#include "tests/unit/boot/acpi/acpi_test_util.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_iasl_test {

using namespace embervm::boot;
using namespace embervm::boot::acpi;
using namespace embervm::acpi_test;
using Catch::Matchers::Contains;
using embervm::test::TempDir;

namespace {

size_t count(const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) {
        n++;
    }
    return n;
}

uint64_t table_addr(const AcpiTables& t, const std::string& sig) { return find_table(t, sig).addr; }

void check_clean(const Disassembly& d) {
    INFO(d.run.output);
    CHECK_THAT(d.run.output, !Contains("Error") && !Contains("Warning"));
    CHECK_THAT(d.dsl, !Contains("Incorrect checksum") && !Contains("****"));
}

// The _UID as iasl prints it.
std::string uid_text(unsigned i) { return i == 0 ? "Zero" : i == 1 ? "One" : fmt::format("0x{:02X}", i); }

}  // namespace

TEST_CASE("iasl disassembles the DSDT for 0, 1 and 8 virtio devices with what was put in", "[acpi][iasl]") {
    for (unsigned devices : {0u, 1u, 8u}) {
        CAPTURE(devices);
        TempDir dir;
        const AcpiLayout g = guest_with(2, devices);
        const Disassembly d = iasl_disassemble(dir, "DSDT", build_dsdt(g));
        INFO(d.dsl);
        check_clean(d);
        CHECK_THAT(d.run.output, Contains("Disassembly completed"));
        CHECK_THAT(d.dsl, Contains("DefinitionBlock (\"\", \"DSDT\", 2, \"EMBRVM\", \"EVMDSDT \", 0x00000001)"));
        CHECK_THAT(d.dsl, Contains("Scope (\\_SB)"));
        CHECK(count(d.dsl, "\"LNRO0005\"") == devices);
        CHECK(count(d.dsl, "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )") == devices);
        for (unsigned i = 0; i < devices; i++) {
            CAPTURE(i);
            CHECK_THAT(d.dsl, Contains(fmt::format("Device (VR{:02X})", i)));
            CHECK_THAT(d.dsl, Contains(fmt::format("Name (_UID, {})  // _UID: Unique ID", uid_text(i))));
            CHECK_THAT(d.dsl, Contains(fmt::format("0x{:08X},         // Address Base", g.virtio[i].addr)));
            CHECK_THAT(d.dsl, Contains(fmt::format("0x{:08X},         // Address Length", g.virtio[i].size)));
            CHECK_THAT(d.dsl, Contains(fmt::format("    0x{:08X},\n", g.virtio[i].gsi)));
        }
        CHECK_THAT(d.dsl, Contains("Device (COM1)") && Contains("EisaId (\"PNP0501\")"));
        CHECK_THAT(d.dsl, Contains("0x03F8,             // Range Minimum") && Contains("{4}"));
        CHECK_THAT(d.dsl, Contains("Device (PS2K)") && Contains("EisaId (\"PNP0303\")"));
        CHECK_THAT(d.dsl, Contains("0x0060,             // Range Minimum") &&
                              Contains("0x0064,             // Range Minimum") && Contains("{1}"));
        CHECK_THAT(d.dsl, Contains("Name (\\_S5, Package (0x04)"));

        // The disassembly compiles back without errors, warnings or remarks.
        const CommandResult compiled = run_in(dir.path(), std::string(kIasl) + " -p recompiled DSDT.dsl");
        INFO(compiled.output);
        CHECK(compiled.status == 0);
        CHECK_THAT(compiled.output, Contains("Compilation successful. 0 Errors, 0 Warnings, 0 Remarks"));
    }
}

TEST_CASE("iasl disassembles the DSDT of a guest without COM1 and i8042", "[acpi][iasl]") {
    TempDir dir;
    AcpiLayout g = guest_with(1, 1);
    g.com1 = false;
    g.i8042 = false;
    const Disassembly d = iasl_disassemble(dir, "DSDT", build_dsdt(g));
    INFO(d.dsl);
    check_clean(d);
    CHECK_THAT(d.dsl, !Contains("PNP0501") && !Contains("PNP0303") && Contains("LNRO0005"));
}

TEST_CASE("iasl disassembles the DSDT's PCI root bridge, present only with PCI", "[acpi][iasl]") {
    TempDir dir;
    AcpiLayout g = guest_with(1, 0);
    const Disassembly without = iasl_disassemble(dir, "DSDT", build_dsdt(g));
    CHECK_THAT(without.dsl, !Contains("PCI0") && !Contains("PNP0A03"));

    g.pci = PciRootInfo{0xc0000000, 0x10000000};
    const Disassembly d = iasl_disassemble(dir, "DSDT", build_dsdt(g));
    INFO(d.dsl);
    check_clean(d);
    CHECK_THAT(d.dsl, Contains("Device (PCI0)") && Contains("Name (_HID, EisaId (\"PNP0A03\") /* PCI Bus */)"));
    CHECK_THAT(d.dsl, Contains("Name (_SEG, Zero)") && Contains("Name (_BBN, Zero)") && Contains("Name (_UID, Zero)"));
    CHECK_THAT(d.dsl, Contains("WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,"));
    CHECK_THAT(d.dsl, Contains("0x0CF8,             // Range Minimum") && Contains("0x08,               // Length"));
    CHECK_THAT(d.dsl, Contains("DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,"));
    CHECK_THAT(d.dsl, Contains("0xC0000000,         // Range Minimum") && Contains("0xCFFFFFFF,         // Range Maximum") &&
                          Contains("0x10000000,         // Length"));
    CHECK_THAT(d.dsl, !Contains("_PRT"));

    const CommandResult compiled = run_in(dir.path(), std::string(kIasl) + " -p recompiled DSDT.dsl");
    INFO(compiled.output);
    CHECK_THAT(compiled.output, Contains("Compilation successful. 0 Errors, 0 Warnings, 0 Remarks"));

    // acpiexec evaluates the bridge's _CRS.
    require_acpica_tool(kAcpiExec);
    write_bytes(dir.file("DSDT.dat"), build_dsdt(g));
    const CommandResult r = run_in(
        dir.path(), fmt::format("timeout 120 {} -b \"Evaluate \\_SB.PCI0._CRS; Evaluate \\_SB.PCI0._HID\" DSDT.dat",
                                kAcpiExec));
    INFO(r.output);
    CHECK(r.status == 0);
    CHECK_THAT(r.output, !Contains("Error") && !Contains("Exception") && !Contains("Warning"));
    CHECK_THAT(r.output, Contains("_CRS returned object") && Contains("[Integer] = 00000000030AD041"));
}

TEST_CASE("iasl decodes the FADT, MADT and XSDT with their checksums and pointers", "[acpi][iasl]") {
    for (unsigned vcpus : {1u, 8u}) {
        CAPTURE(vcpus);
        TempDir dir;
        const AcpiTables t = build_acpi_tables(guest_with(vcpus, 2));

        const Disassembly fadt = iasl_disassemble(dir, "FACP", table_bytes(t, "FACP"));
        INFO(fadt.dsl);
        check_clean(fadt);
        CHECK_THAT(fadt.dsl, Contains("Revision : 06") && Contains("FADT Minor Revision : 05"));
        CHECK_THAT(fadt.dsl, Contains(fmt::format("DSDT Address : {:016X}", table_addr(t, "DSDT"))));
        CHECK_THAT(fadt.dsl, Contains("Hardware Reduced (V5) : 1") && Contains("Reset Register Supported (V2) : 1"));
        CHECK_THAT(fadt.dsl, Contains("8042 Present on ports 60/64 (V2) : 1"));
        CHECK_THAT(fadt.dsl, Contains("Space ID : 01 [SystemIO]"));
        for (uint16_t port : {kSleepControlPort, kSleepStatusPort, kResetPort}) {
            CHECK_THAT(fadt.dsl, Contains(fmt::format("Address : {:016X}", port)));
        }
        CHECK_THAT(fadt.dsl, Contains("Value to cause reset : 01"));

        const Disassembly madt = iasl_disassemble(dir, "APIC", table_bytes(t, "APIC"));
        INFO(madt.dsl);
        check_clean(madt);
        CHECK(count(madt.dsl, "[Processor Local APIC]") == vcpus);
        CHECK(count(madt.dsl, "Processor Enabled : 1") == vcpus);
        CHECK_THAT(madt.dsl, Contains(fmt::format("Local Apic ID : {:02X}", vcpus - 1)));
        CHECK_THAT(madt.dsl, Contains("Local Apic Address : FEE00000"));
        CHECK_THAT(madt.dsl, Contains(fmt::format("I/O Apic ID : {:02X}", vcpus)) && Contains("Address : FEC00000"));
        CHECK_THAT(madt.dsl, Contains("[Local APIC NMI]") && Contains("Interrupt Input LINT : 01"));

        const Disassembly xsdt = iasl_disassemble(dir, "XSDT", table_bytes(t, "XSDT"));
        INFO(xsdt.dsl);
        check_clean(xsdt);
        CHECK_THAT(xsdt.dsl, Contains(fmt::format("ACPI Table Address   0 : {:016X}", table_addr(t, "FACP"))));
        CHECK_THAT(xsdt.dsl, Contains(fmt::format("ACPI Table Address   1 : {:016X}", table_addr(t, "APIC"))));
    }
}

TEST_CASE("iasl decodes the MCFG: bus 0's ECAM window in segment 0", "[acpi][iasl]") {
    TempDir dir;
    AcpiLayout g = guest_with(1, 0);
    g.pci = PciRootInfo{};
    const AcpiTables t = build_acpi_tables(g);
    const Disassembly mcfg = iasl_disassemble(dir, "MCFG", table_bytes(t, "MCFG"));
    INFO(mcfg.dsl);
    check_clean(mcfg);
    CHECK_THAT(mcfg.dsl, Contains("Signature : \"MCFG\"") && Contains("Table Length : 0000003C"));
    CHECK_THAT(mcfg.dsl, Contains("Base Address : 00000000E0000000") && Contains("Segment Group Number : 0000"));
    CHECK_THAT(mcfg.dsl, Contains("Start Bus Number : 00") && Contains("End Bus Number : 00"));
    const Disassembly xsdt = iasl_disassemble(dir, "XSDT", table_bytes(t, "XSDT"));
    CHECK_THAT(xsdt.dsl, Contains(fmt::format("ACPI Table Address   2 : {:016X}", table_addr(t, "MCFG"))));
}

TEST_CASE("acpiexec loads the tables and evaluates \\_S5 and every device's _CRS", "[acpi][iasl]") {
    require_acpica_tool(kAcpiExec);
    TempDir dir;
    const AcpiTables t = build_acpi_tables(guest_with(8, 8));
    for (const char* sig : {"FACP", "APIC", "DSDT"}) {
        write_bytes(dir.file(std::string(sig) + ".dat"), table_bytes(t, sig));
    }
    std::string commands = "Evaluate \\_S5; Evaluate \\_SB.COM1._CRS; Evaluate \\_SB.PS2K._CRS";
    for (unsigned i = 0; i < 8; i++) {
        commands += fmt::format("; Evaluate \\_SB.VR{:02X}._CRS; Evaluate \\_SB.VR{:02X}._HID", i, i);
    }
    const CommandResult r =
        run_in(dir.path(), fmt::format("timeout 120 {} -b \"{}\" FACP.dat APIC.dat DSDT.dat", kAcpiExec, commands));
    INFO(r.output);
    CHECK(r.status == 0);
    CHECK_THAT(r.output, !Contains("Error") && !Contains("Exception") && !Contains("Warning"));
    CHECK_THAT(r.output, Contains("[Package] Contains 4 Elements:") && Contains("[Integer] = 0000000000000005"));
    CHECK(count(r.output, "[String] Length 08 = \"LNRO0005\"") == 8);
    CHECK(count(r.output, "_CRS returned object") == 10);
}

}  // namespace unit_iasl_test
