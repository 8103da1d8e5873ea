// Tests for vmm/insn_emulator's VcpuEmulatorMemory: translation, page splits, compare-exchange.
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "insn_emulator_test_support.h"
#include "memory/guest_memory.h"
#include "vmm/kvm/insn_emulator.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_vcpu_emulator_memory_test {

using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using namespace embervm::vmm;
using namespace embervm::vmm::insn_test;

TEST_CASE("VcpuEmulatorMemory translates page by page and splits at page boundaries", "[insn_emulator]") {
    // Linear pages 0 and 1 are swapped in guest-physical memory, page 2 is not mapped; the
    // translator sees only page-aligned addresses.
    const GuestMemory ram({{GuestAddress(0), 0x2000}});
    std::vector<uint64_t> asked;
    embervm::vmm::VcpuEmulatorMemory mem(
        [&](uint64_t linear) -> std::optional<uint64_t> {
            asked.push_back(linear);
            switch (linear) {
                case 0x0000: return 0x1000;
                case 0x1000: return 0x0000;
                case 0x5000: return 0x1000;  // mapped, but the access runs on to page 0x6000
                default: return std::nullopt;
            }
        },
        ram);

    const auto gpa = mem.translate(0x1234);
    REQUIRE(gpa);
    CHECK(gpa->value == 0x0234);
    CHECK(asked == std::vector<uint64_t>{0x1000});
    CHECK_FALSE(mem.translate(0x2000));
    // Where a linear address of pages 0 and 1 lands.
    const auto phys = [](uint64_t linear) { return GuestAddress(linear ^ 0x1000); };

    SECTION("an access crossing a page boundary goes to both pages") {
        const std::vector<uint8_t> data = {1, 2, 3, 4, 5, 6, 7, 8};
        REQUIRE(mem.write(0xffc, data));
        CHECK(ram.read_obj<uint32_t>(GuestAddress(0x1ffc)) == 0x04030201);  // end of linear page 0
        CHECK(ram.read_obj<uint32_t>(GuestAddress(0x0000)) == 0x08070605);  // start of linear page 1
        std::vector<uint8_t> back(8);
        REQUIRE(mem.read(0xffc, back));
        CHECK(back == data);
    }
    SECTION("an access reaching an unmapped page fails and writes nothing") {
        std::vector<uint8_t> buf(8, 0xee);
        CHECK_FALSE(mem.read(0x1ffc, buf));
        CHECK_FALSE(mem.write(0x1ffc, buf));
        CHECK(ram.read_obj<uint32_t>(GuestAddress(0x0ffc)) == 0);  // linear 0x1ffc is untouched
        CHECK_FALSE(mem.write(0x5ffc, buf));
        CHECK(ram.read_obj<uint32_t>(GuestAddress(0x1ffc)) == 0);
        CHECK_FALSE(mem.read(0x3000, buf));
    }
    SECTION("a page mapped outside guest RAM is a fault") {
        embervm::vmm::VcpuEmulatorMemory outside([](uint64_t linear) { return linear + 0x10000; }, ram);
        std::vector<uint8_t> buf(4);
        CHECK_FALSE(outside.read(0, buf));
        CHECK_FALSE(outside.write(0, buf));
    }
    SECTION("compare_exchange, atomic and fallback paths") {
        ram.write_obj<uint64_t>(phys(0x1000), 0x1111);
        ram.write_obj<uint64_t>(phys(0x1008), 0x2222);
        std::array<uint8_t, 16> expected{};
        std::array<uint8_t, 16> desired{};
        expected[0] = 0x11; expected[1] = 0x11; expected[8] = 0x22; expected[9] = 0x22;
        desired[0] = 0xaa; desired[8] = 0xbb;
        auto r = mem.compare_exchange(0x1000, expected, desired);
        REQUIRE(r);
        CHECK(*r);
        CHECK(ram.read_obj<uint64_t>(phys(0x1000)) == 0xaa);
        CHECK(ram.read_obj<uint64_t>(phys(0x1008)) == 0xbb);
        r = mem.compare_exchange(0x1000, expected, desired);  // now unequal
        REQUIRE(r);
        CHECK_FALSE(*r);
        CHECK(expected[0] == 0xaa);
        CHECK(expected[8] == 0xbb);

        std::array<uint8_t, 8> e8{};
        REQUIRE(mem.read(0xffd, e8));  // 00 00 00 aa 00 00 00 00
        std::array<uint8_t, 8> d8 = {9, 9, 9, 9, 9, 9, 9, 9};
        r = mem.compare_exchange(0xffd, e8, d8);  // misaligned across the page: plain path
        REQUIRE(r);
        CHECK(*r);
        std::array<uint8_t, 3> on_page0{};
        std::array<uint8_t, 5> on_page1{};
        REQUIRE(ram.try_read(GuestAddress(0x1ffd), on_page0));
        REQUIRE(ram.try_read(GuestAddress(0x0000), on_page1));
        CHECK(on_page0 == std::array<uint8_t, 3>{9, 9, 9});
        CHECK(on_page1 == std::array<uint8_t, 5>{9, 9, 9, 9, 9});
        REQUIRE(mem.read(0xffd, e8));
        CHECK(e8 == d8);
        CHECK_FALSE(mem.compare_exchange(0x2000, e8, d8));  // not mapped
    }
    SECTION("end to end: lock cmpxchg16b on guest RAM") {
        CpuState cpu = long_mode_cpu();
        cpu.regs.rsi = 0x1010;
        cpu.regs.rbx = 0x5555;
        cpu.regs.rcx = 0x6666;
        const EmulationResult r = emulate_instruction(std::vector<uint8_t>{0xf0, 0x48, 0x0f, 0xc7, 0x0e}, cpu, mem);
        REQUIRE(r.status == Status::Emulated);
        CHECK((cpu.regs.rflags & kZf) != 0);
        CHECK(ram.read_obj<uint64_t>(phys(0x1010)) == 0x5555);
        CHECK(ram.read_obj<uint64_t>(phys(0x1018)) == 0x6666);
    }
}

}  // namespace unit_vcpu_emulator_memory_test
