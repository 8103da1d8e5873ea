// Tests for devices/acpi_pm: S5 and reset writes end the VM, everything else is ignored.
#include <catch2/catch.hpp>

#include <array>
#include <fstream>
#include <memory>
#include <string>

#include "boot/acpi/platform.h"
#include "boot/layout.h"
#include "devices/acpi_pm.h"
#include "devices/bus.h"
#include "tests/unit/temp_dir.h"
#include "tests/unit/vmm/test_support.h"
#include "vmm/sys/log.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_acpi_pm_test {

using embervm::devices::AcpiPm;
namespace acpi = embervm::boot::acpi;
namespace layout = embervm::boot::layout;

namespace {

struct Counts {
    int poweroff = 0;
    int reset = 0;
};

std::shared_ptr<AcpiPm> make_device(Counts& c) {
    return std::make_shared<AcpiPm>([&c] { ++c.poweroff; }, [&c] { ++c.reset; });
}

void write_byte(AcpiPm& dev, uint64_t offset, uint8_t value) {
    const std::array<uint8_t, 1> b{value};
    dev.write(offset, b);
}

}  // namespace

TEST_CASE("ACPI PM: the registers sit where the FADT says", "[devices][acpi_pm]") {
    CHECK(layout::kAcpiSleepControlPort + AcpiPm::kSleepControl == acpi::kSleepControlPort);
    CHECK(layout::kAcpiSleepControlPort + AcpiPm::kSleepStatus == acpi::kSleepStatusPort);
    CHECK(layout::kAcpiSleepControlPort + AcpiPm::kReset == acpi::kResetPort);
    CHECK(AcpiPm::kSize == 3);
}

TEST_CASE("ACPI PM: an S5 request to sleep control powers off", "[devices][acpi_pm]") {
    Counts c;
    auto dev = make_device(c);
    // What Linux's ACPICA writes for `poweroff`: SLP_TYP 5 from \_S5, then SLP_EN.
    write_byte(*dev, AcpiPm::kSleepControl, (acpi::kSleepTypeS5 << acpi::kSleepTypeShift));  // 0x14, no SLP_EN
    CHECK(c.poweroff == 0);
    write_byte(*dev, AcpiPm::kSleepControl, 0x34);
    CHECK(c.poweroff == 1);
    CHECK(c.reset == 0);
    // Other sleep types (S1 and S3 with SLP_EN) are not a power-off.
    write_byte(*dev, AcpiPm::kSleepControl, 0x24);
    write_byte(*dev, AcpiPm::kSleepControl, 0x2c);
    CHECK(c.poweroff == 1);
}

TEST_CASE("ACPI PM: the reset value to the reset register resets", "[devices][acpi_pm]") {
    Counts c;
    auto dev = make_device(c);
    write_byte(*dev, AcpiPm::kReset, 0x00);
    write_byte(*dev, AcpiPm::kReset, 0x06);
    CHECK(c.reset == 0);
    write_byte(*dev, AcpiPm::kReset, acpi::kResetValue);
    CHECK(c.reset == 1);
    CHECK(c.poweroff == 0);
    // The reset value at the sleep registers is nothing.
    write_byte(*dev, AcpiPm::kSleepControl, acpi::kResetValue);
    write_byte(*dev, AcpiPm::kSleepStatus, acpi::kResetValue);
    CHECK(c.reset == 1);
}

TEST_CASE("ACPI PM: sleep status and every other read give 0; status writes are ignored", "[devices][acpi_pm]") {
    Counts c;
    auto dev = make_device(c);
    write_byte(*dev, AcpiPm::kSleepStatus, acpi::kSleepStatusWake);  // ACPICA clears WAK_STS first
    write_byte(*dev, AcpiPm::kSleepStatus, 0x34);
    for (uint64_t off = 0; off < AcpiPm::kSize; off++) {
        std::array<uint8_t, 1> b{0xaa};
        dev->read(off, b);
        CHECK(b[0] == 0);
    }
    std::array<uint8_t, 2> w{0xaa, 0xaa};
    dev->read(0, w);
    CHECK(w == std::array<uint8_t, 2>{0, 0});
    CHECK(c.poweroff == 0);
    CHECK(c.reset == 0);
}

TEST_CASE("ACPI PM: reached through the port bus at its layout address", "[devices][acpi_pm]") {
    Counts c;
    embervm::vmm::Bus pio("pio");
    pio.insert(make_device(c), layout::kAcpiSleepControlPort, AcpiPm::kSize);
    std::array<uint8_t, 1> status{0xff};
    CHECK(pio.read(acpi::kSleepStatusPort, status));
    CHECK(status[0] == 0);
    const std::array<uint8_t, 1> reset{acpi::kResetValue};
    CHECK(pio.write(acpi::kResetPort, reset));
    CHECK(c.reset == 1);
    const std::array<uint8_t, 1> s5{0x34};
    CHECK(pio.write(acpi::kSleepControlPort, s5));
    CHECK(c.poweroff == 1);
    CHECK_FALSE(pio.write(acpi::kResetPort + 1, reset));  // nothing past the three registers
}

TEST_CASE("ACPI PM: power-off and reset are logged at INFO", "[devices][acpi_pm]") {
    const embervm::test::LoggerRestore restore;
    const embervm::test::TempDir dir;
    embervm::log::set_output_path(dir.file("log"));
    Counts c;
    auto dev = make_device(c);
    write_byte(*dev, AcpiPm::kSleepControl, 0x34);
    write_byte(*dev, AcpiPm::kReset, acpi::kResetValue);
    embervm::log::set_output_stderr();  // flushes and closes the log file
    std::ifstream in(dir.file("log"));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK_THAT(text, Catch::Contains("INFO") && Catch::Contains("guest powered off (ACPI S5)"));
    CHECK_THAT(text, Catch::Contains("guest reset (ACPI reset)"));
}

}  // namespace unit_acpi_pm_test
