// Tests for boot/reset_vector: the stub a "BIOS reboot" runs, and that setup_boot writes it.
#include <catch2/catch.hpp>

#include <array>

#include "boot/acpi/platform.h"
#include "boot/boot.h"
#include "boot/reset_vector.h"
#include "tests/unit/boot/test_images.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_reset_vector_test {

using namespace embervm::boot;
using namespace embervm::boot::test;
using embervm::memory::GuestAddress;

TEST_CASE("reset vector stub: ACPI reset, then the i8042 reset line, then hlt", "[boot][reset-vector]") {
    const std::array<uint8_t, 16> code = reset_vector_stub();
    const std::array<uint8_t, 16> expected{
        0xba, 0x02, 0x06,  // mov dx, 0x602 (the FADT's reset register)
        0xb0, 0x01,        // mov al, 1 (its reset value)
        0xee,              // out dx, al
        0xb0, 0xfe,        // mov al, 0xfe (pulse the reset line)
        0xe6, 0x64,        // out 0x64, al
        0xfa, 0xf4,        // cli; hlt
        0xeb, 0xfd,        // jmp back to hlt
        0x00, 0x00};
    CHECK(code == expected);
    CHECK(acpi::kResetPort == 0x602);
    CHECK(acpi::kResetValue == 0x01);
    // The 16 bytes end exactly at 1 MiB: F000:FFF0 = 0xffff0.
    CHECK(layout::kResetVectorAddr + code.size() == layout::kHighMemStart);
}

TEST_CASE("setup_boot writes the reset vector stub with and without ACPI", "[boot][reset-vector]") {
    const auto kernel = elf_kernel(false).build();
    for (const bool with_acpi : {true, false}) {
        auto mem = make_guest_memory(64 * kMiB);
        BootOptions o;
        o.kernel = kernel;
        o.cmdline = "x";
        if (with_acpi) o.acpi = acpi::AcpiLayout{};
        setup_boot(mem, o);
        std::array<uint8_t, 16> got{};
        mem.read(GuestAddress(layout::kResetVectorAddr), got);
        CHECK(got == reset_vector_stub());
    }
}

}  // namespace unit_reset_vector_test
