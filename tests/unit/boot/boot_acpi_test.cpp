// Tests for the ACPI part of setup_boot(): the tables written next to the MP table and the
// RSDP's address handed to the kernel (zero page acpi_rsdp_addr, PVH rsdp_paddr).
#include <catch2/catch.hpp>

#include <asm/bootparam.h>

#include <cstring>

#include "boot/acpi/acpi.h"
#include "boot/boot.h"
#include "boot/pvh.h"
#include "tests/unit/boot/test_images.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_boot_acpi_test {

using namespace embervm::boot;
using namespace embervm::boot::test;
using Catch::Matchers::Contains;
using embervm::memory::GuestAddress;

namespace {

acpi::AcpiLayout two_devices(uint32_t vcpus) {
    acpi::AcpiLayout guest;
    guest.vcpus = vcpus;
    guest.virtio.push_back({layout::kVirtioMmioStart, layout::kVirtioMmioSize, 5});
    guest.virtio.push_back({layout::kVirtioMmioStart + layout::kVirtioMmioSize, layout::kVirtioMmioSize, 6});
    return guest;
}

BootOptions options_for(const std::vector<uint8_t>& kernel, bool pvh, std::optional<acpi::AcpiLayout> guest) {
    BootOptions o;
    o.kernel = kernel;
    o.cmdline = "console=ttyS0";
    o.vcpu_count = guest ? guest->vcpus : 1;
    o.prefer_pvh = pvh;
    o.acpi = std::move(guest);
    return o;
}

bool rsdp_at(const embervm::memory::GuestMemory& mem, uint64_t addr) {
    char sig[8];
    mem.read(GuestAddress(addr), std::span(reinterpret_cast<uint8_t*>(sig), sizeof sig));
    return std::memcmp(sig, "RSD PTR ", 8) == 0;
}

uint64_t zero_page_rsdp(const embervm::memory::GuestMemory& mem) {
    return mem.read_obj<uint64_t>(GuestAddress(layout::kZeroPageAddr + offsetof(boot_params, acpi_rsdp_addr)));
}

}  // namespace

TEST_CASE("setup_boot writes the ACPI tables and gives the 64-bit entry their RSDP", "[boot][acpi]") {
    auto mem = make_guest_memory(64 * kMiB);
    const auto kernel = elf_kernel(false).build();
    const BootSetup s = setup_boot(mem, options_for(kernel, false, two_devices(2)));
    CHECK(s.rsdp_addr == layout::kAcpiTablesStart);
    CHECK(rsdp_at(mem, layout::kAcpiTablesStart));
    CHECK(zero_page_rsdp(mem) == layout::kAcpiTablesStart);
    // The same bytes build_acpi_tables() lays out for this guest.
    const acpi::AcpiTables expected = acpi::build_acpi_tables(two_devices(2));
    std::vector<uint8_t> written(expected.bytes.size());
    mem.read(GuestAddress(layout::kAcpiTablesStart), written);
    CHECK(written == expected.bytes);
    // The MP table is still there for kernels without ACPI.
    CHECK(mem.read_obj<uint32_t>(GuestAddress(layout::kEbdaStart)) == 0x5f504d5f);  // "_MP_"
}

TEST_CASE("setup_boot gives a PVH kernel the RSDP in its start info", "[boot][acpi][pvh]") {
    auto mem = make_guest_memory(64 * kMiB);
    const auto kernel = elf_kernel(true).build();
    const BootSetup s = setup_boot(mem, options_for(kernel, true, two_devices(1)));
    REQUIRE(s.protocol == EntryProtocol::Pvh);
    CHECK(mem.read_obj<HvmStartInfo>(GuestAddress(layout::kPvhInfoAddr)).rsdp_paddr == layout::kAcpiTablesStart);
    CHECK(rsdp_at(mem, layout::kAcpiTablesStart));
}

TEST_CASE("setup_boot without ACPI writes no tables and passes RSDP address 0", "[boot][acpi]") {
    SECTION("64-bit entry") {
        auto mem = make_guest_memory(64 * kMiB);
        const auto kernel = elf_kernel(false).build();
        const BootSetup s = setup_boot(mem, options_for(kernel, false, std::nullopt));
        CHECK(s.rsdp_addr == 0);
        CHECK(zero_page_rsdp(mem) == 0);
        CHECK_FALSE(rsdp_at(mem, layout::kAcpiTablesStart));
        CHECK(mem.read_obj<uint64_t>(GuestAddress(layout::kAcpiTablesStart)) == 0);
    }
    SECTION("PVH") {
        auto mem = make_guest_memory(64 * kMiB);
        const auto kernel = elf_kernel(true).build();
        setup_boot(mem, options_for(kernel, true, std::nullopt));
        CHECK(mem.read_obj<HvmStartInfo>(GuestAddress(layout::kPvhInfoAddr)).rsdp_paddr == 0);
        CHECK_FALSE(rsdp_at(mem, layout::kAcpiTablesStart));
    }
}

TEST_CASE("A bzImage gets acpi_rsdp_addr from boot protocol 2.14 on", "[boot][acpi][bzimage]") {
    const auto boot_with_version = [](uint16_t version) {
        auto mem = make_guest_memory(64 * kMiB);
        BzImageSpec spec;
        spec.version = version;
        const auto kernel = make_bzimage(spec);
        const BootSetup s = setup_boot(mem, options_for(kernel, false, two_devices(1)));
        CHECK(s.rsdp_addr == layout::kAcpiTablesStart);
        CHECK(rsdp_at(mem, layout::kAcpiTablesStart));  // found by the scan of [0xe0000, 1 MiB)
        return zero_page_rsdp(mem);
    };
    CHECK(boot_with_version(0x20f) == layout::kAcpiTablesStart);
    CHECK(boot_with_version(0x20e) == layout::kAcpiTablesStart);
    CHECK(boot_with_version(0x20d) == 0);  // padding before 2.14: left alone
}

TEST_CASE("setup_boot refuses ACPI tables it cannot build before writing anything", "[boot][acpi]") {
    auto mem = make_guest_memory(64 * kMiB);
    const auto kernel = elf_kernel(false).build();
    SECTION("vCPU counts that disagree") {
        BootOptions o = options_for(kernel, false, two_devices(2));
        o.vcpu_count = 1;
        CHECK_THROWS_WITH(setup_boot(mem, o), Contains("the ACPI tables describe 2 vCPUs, the VM has 1"));
    }
    SECTION("a virtio window above 4 GiB") {
        acpi::AcpiLayout guest = two_devices(1);
        guest.virtio[1].addr = 0x100000000ULL;
        CHECK_THROWS_AS(setup_boot(mem, options_for(kernel, false, guest)), embervm::Error);
    }
    CHECK(mem.read_obj<uint64_t>(GuestAddress(kElfCodeAddr)) == 0);  // no kernel loaded
    CHECK(mem.read_obj<uint64_t>(GuestAddress(layout::kAcpiTablesStart)) == 0);
}

}  // namespace unit_boot_acpi_test
