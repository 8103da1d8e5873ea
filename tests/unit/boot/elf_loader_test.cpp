// Tests for boot/elf_loader: ELF64 vmlinux validation, segment loading and the PVH note.
#include <catch2/catch.hpp>

#include <elf.h>

#include <fmt/format.h>

#include "boot/boot.h"
#include "boot/elf_loader.h"
#include "boot/kernel_image.h"
#include "tests/unit/boot/test_images.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_elf_loader_test {

using namespace embervm::boot;
using namespace embervm::boot::test;
using Catch::Matchers::Contains;
using Catch::Matchers::Equals;
using embervm::memory::GuestAddress;

namespace {

BootOptions options_for(const std::vector<uint8_t>& kernel, bool prefer_pvh = true) {
    BootOptions o;
    o.kernel = kernel;
    o.cmdline = "console=ttyS0";
    o.vcpu_count = 1;
    o.prefer_pvh = prefer_pvh;
    return o;
}

// Parsing alone must reject it with a message containing `what`.
void check_rejected(const std::vector<uint8_t>& image, const std::string& what) {
    INFO("expected rejection: " << what);
    CHECK_THROWS_WITH(parse_kernel_image(image), Contains(what));
    CHECK_THROWS_AS(parse_kernel_image(image), embervm::Error);
}

}  // namespace

TEST_CASE("ELF kernel without PVH note loads its segments and uses the 64-bit entry", "[boot][elf]") {
    const auto image = elf_kernel(false).build();
    const ElfKernel k = parse_elf_kernel(image);
    CHECK(k.entry == kElfCodeAddr);
    CHECK_FALSE(k.pvh_entry.has_value());
    REQUIRE(k.segments.size() == 2);
    CHECK(k.start() == kElfCodeAddr);
    CHECK(k.end() == kElfDataAddr + 0x4000);

    auto mem = make_guest_memory(128 * kMiB);
    mem.fill(GuestAddress(kElfCodeAddr), 2 * kMiB, 0xaa);  // bss must be zeroed over this
    const BootSetup setup = setup_boot(mem, options_for(image));
    CHECK(setup.protocol == EntryProtocol::Linux64);
    CHECK(setup.entry == kElfCodeAddr);
    CHECK(setup.boot_info_addr == layout::kZeroPageAddr);
    CHECK(setup.kernel_kind == KernelKind::Elf);
    CHECK(setup.kernel_start == kElfCodeAddr);
    CHECK(setup.kernel_end == kElfDataAddr + 0x4000);

    std::vector<uint8_t> got(0x2000);
    mem.read(GuestAddress(kElfCodeAddr), got);
    CHECK(got == pattern(0x2000, 1));
    std::vector<uint8_t> bss(0x1000);
    mem.read(GuestAddress(kElfCodeAddr + 0x2000), bss);
    CHECK(bss == std::vector<uint8_t>(0x1000, 0));
    got.resize(0x800);
    mem.read(GuestAddress(kElfDataAddr), got);
    CHECK(got == pattern(0x800, 2));
    bss.resize(0x3800);
    mem.read(GuestAddress(kElfDataAddr + 0x800), bss);
    CHECK(bss == std::vector<uint8_t>(0x3800, 0));
    // Past the bss: untouched.
    CHECK(mem.read_obj<uint8_t>(GuestAddress(kElfCodeAddr + 0x3000)) == 0xaa);
}

TEST_CASE("ELF kernel with PVH note: PVH entry if preferred, else the 64-bit entry", "[boot][elf][pvh]") {
    const auto image = elf_kernel(true).build();
    const ElfKernel k = parse_elf_kernel(image);
    REQUIRE(k.pvh_entry.has_value());
    CHECK(*k.pvh_entry == kElfPvhEntry);

    auto mem = make_guest_memory(128 * kMiB);
    BootSetup setup = setup_boot(mem, options_for(image, true));
    CHECK(setup.protocol == EntryProtocol::Pvh);
    CHECK(setup.entry == kElfPvhEntry);
    CHECK(setup.boot_info_addr == layout::kPvhInfoAddr);

    setup = setup_boot(mem, options_for(image, false));
    CHECK(setup.protocol == EntryProtocol::Linux64);
    CHECK(setup.entry == kElfCodeAddr);
    CHECK(setup.boot_info_addr == layout::kZeroPageAddr);
}

TEST_CASE("PVH note with an 8-byte descriptor (as Linux emits it) is accepted", "[boot][elf][pvh]") {
    auto b = elf_kernel(false);
    b.segments.push_back({PT_NOTE, 0, make_note("Xen", 18, le64(0x100800)), 0, 4});
    const ElfKernel k = parse_elf_kernel(b.build());
    REQUIRE(k.pvh_entry.has_value());
    CHECK(*k.pvh_entry == 0x100800);
}

TEST_CASE("Notes that are not the PVH note are ignored", "[boot][elf][pvh]") {
    auto b = elf_kernel(false);
    auto notes = make_note("Linux", 18, le32(0x12345678));  // right type, wrong name
    const auto n2 = make_note("Xe", 18, le32(0x100800));      // name too short
    const auto n3 = make_note("Xen", 17, le32(0x100800));     // other Xen note
    notes.insert(notes.end(), n2.begin(), n2.end());
    notes.insert(notes.end(), n3.begin(), n3.end());
    notes.resize(notes.size() + 3, 0);  // trailing zero padding is fine
    b.segments.push_back({PT_NOTE, 0, notes, 0, 4});
    CHECK_FALSE(parse_elf_kernel(b.build()).pvh_entry.has_value());
}

TEST_CASE("ELF error messages say precisely what is wrong", "[boot][elf]") {
    const auto good = elf_kernel(true).build();

    SECTION("empty and unknown formats") {
        check_rejected({}, "file is empty");
        check_rejected(std::vector<uint8_t>(16, 0x41), "unrecognized format (16 bytes)");
    }
    SECTION("truncated ELF header") {
        check_rejected(std::vector<uint8_t>(good.begin(), good.begin() + 10), "ELF identification truncated");
        check_rejected(std::vector<uint8_t>(good.begin(), good.begin() + 40),
                       "ELF header truncated: image is 40 bytes, an ELF64 header needs 64");
    }
    SECTION("32-bit class") {
        auto img = good;
        img[EI_CLASS] = ELFCLASS32;
        check_rejected(img, "32-bit ELF (ELFCLASS32) is not supported");
        img[EI_CLASS] = 7;
        check_rejected(img, "unknown ELF class 7");
    }
    SECTION("big endian") {
        auto img = good;
        img[EI_DATA] = ELFDATA2MSB;
        check_rejected(img, "not little-endian");
    }
    SECTION("wrong machine") {
        auto img = good;
        poke<uint16_t>(img, offsetof(Elf64_Ehdr, e_machine), EM_AARCH64);
        check_rejected(img, "ELF machine EM_AARCH64 (AArch64) is not x86-64");
        poke<uint16_t>(img, offsetof(Elf64_Ehdr, e_machine), 9999);
        check_rejected(img, "ELF machine 9999 is not x86-64");
    }
    SECTION("not an executable") {
        auto img = good;
        poke<uint16_t>(img, offsetof(Elf64_Ehdr, e_type), ET_DYN);
        check_rejected(img, "ELF type 3 is not ET_EXEC");
    }
    SECTION("program header table outside the image") {
        auto img = good;
        poke<uint64_t>(img, offsetof(Elf64_Ehdr, e_phoff), img.size() - 8);
        check_rejected(img, "ELF program header table");
        poke<uint64_t>(img, offsetof(Elf64_Ehdr, e_phoff), UINT64_MAX - 8);  // overflow
        check_rejected(img, "exceeds image size");
        auto trunc = std::vector<uint8_t>(good.begin(), good.begin() + 100);
        check_rejected(trunc, fmt::format("ELF program header table [0x40, +0xa8) exceeds image size 0x64"));
    }
    SECTION("bad program header entry size or count") {
        auto img = good;
        poke<uint16_t>(img, offsetof(Elf64_Ehdr, e_phentsize), 32);
        check_rejected(img, "program header entry size 32 is not 56");
        img = good;
        poke<uint16_t>(img, offsetof(Elf64_Ehdr, e_phnum), 0);
        check_rejected(img, "no program headers");
    }
    SECTION("segment file range outside the image") {
        auto img = good;
        poke<uint64_t>(img, ElfBuilder::phdr_offset(1) + kPhOffset, 0x1000);
        poke<uint64_t>(img, ElfBuilder::phdr_offset(1) + kPhFilesz, 0x5000);
        check_rejected(img, fmt::format("kernel image: ELF program header 1 file range [0x1000, +0x5000) exceeds "
                                        "image size {:#x}",
                                        img.size()));
        // Offset + size wrapping around 2^64 must not pass.
        poke<uint64_t>(img, ElfBuilder::phdr_offset(1) + kPhOffset, UINT64_MAX - 0x10);
        poke<uint64_t>(img, ElfBuilder::phdr_offset(1) + kPhMemsz, 0x10000);
        check_rejected(img, "ELF program header 1 file range");
    }
    SECTION("truncated segment data") {
        const std::vector<uint8_t> img(good.begin(), good.end() - 20);  // cuts the note segment
        check_rejected(img, "ELF program header 2 file range");
        const std::vector<uint8_t> img2(good.begin(), good.begin() + 0x1000);  // cuts the code segment
        check_rejected(img2, "ELF program header 0 file range");
    }
    SECTION("file size larger than memory size") {
        auto img = good;
        poke<uint64_t>(img, ElfBuilder::phdr_offset(0) + kPhMemsz, 0x100);
        check_rejected(img, "ELF program header 0: file size 0x2000 is larger than memory size 0x100");
    }
    SECTION("physical range wrapping around") {
        auto img = good;
        poke<uint64_t>(img, ElfBuilder::phdr_offset(1) + kPhPaddr, UINT64_MAX - 0x100);
        check_rejected(img, "wraps around");
    }
    SECTION("overlapping segments") {
        auto img = good;
        poke<uint64_t>(img, ElfBuilder::phdr_offset(1) + kPhPaddr, kElfCodeAddr + 0x2800);
        check_rejected(img, "ELF program headers 0 and 1 overlap");
    }
    SECTION("no loadable segment") {
        auto img = good;
        poke<uint32_t>(img, ElfBuilder::phdr_offset(0), PT_NULL);
        poke<uint32_t>(img, ElfBuilder::phdr_offset(1), PT_GNU_STACK);
        check_rejected(img, "no loadable (PT_LOAD) segment");
    }
    SECTION("entry points outside the loaded code") {
        auto img = good;
        poke<uint64_t>(img, offsetof(Elf64_Ehdr, e_entry), kElfCodeAddr + 0x2000);  // in bss
        check_rejected(img, "ELF entry point 0x102000 is not inside a loaded segment");
        auto b = elf_kernel(false);
        b.segments.push_back({PT_NOTE, 0, pvh_note(0x50000), 0, 4});
        check_rejected(b.build(), "PVH entry point 0x50000 (XEN_ELFNOTE_PHYS32_ENTRY) is not inside a loaded segment");
    }
}

TEST_CASE("Malformed ELF notes are rejected, never read out of bounds", "[boot][elf][pvh]") {
    auto with_notes = [](std::vector<uint8_t> notes) {
        auto b = elf_kernel(false);
        b.segments.push_back({PT_NOTE, 0, std::move(notes), 0, 4});
        return b.build();
    };
    SECTION("name size beyond the segment") {
        auto note = pvh_note(static_cast<uint32_t>(kElfPvhEntry));
        poke<uint32_t>(note, 0, 0x1000);
        check_rejected(with_notes(note), "ELF program header 2 (PT_NOTE): note at offset 0x0 has name size 0x1000");
        poke<uint32_t>(note, 0, 0xffffffff);  // padding must not wrap
        check_rejected(with_notes(note), "has name size 0xffffffff");
    }
    SECTION("descriptor size beyond the segment") {
        auto note = pvh_note(static_cast<uint32_t>(kElfPvhEntry));
        poke<uint32_t>(note, 4, 0x100);
        check_rejected(with_notes(note), "has descriptor size 0x100, which exceeds the note segment (0x14 bytes)");
        poke<uint32_t>(note, 4, 0xfffffffe);
        check_rejected(with_notes(note), "has descriptor size 0xfffffffe");
    }
    SECTION("second note cut off") {
        auto notes = make_note("GNU", 3, pattern(8, 1));
        auto pvh = pvh_note(static_cast<uint32_t>(kElfPvhEntry));
        notes.insert(notes.end(), pvh.begin(), pvh.begin() + 18);  // header + part of the name/desc
        check_rejected(with_notes(notes), "has descriptor size 0x4");
        notes.resize(notes.size() - 18 + 6);  // only part of the header: non-zero trailing bytes
        check_rejected(with_notes(notes), "6 bytes left at note offset 0x18, too few for a note header");
    }
    SECTION("PVH note with a descriptor that is not 4 or 8 bytes") {
        check_rejected(with_notes(make_note("Xen", 18, {1, 2})), "descriptor size 2, expected 4 or 8");
        check_rejected(with_notes(make_note("Xen", 18, {})), "descriptor size 0, expected 4 or 8");
        check_rejected(with_notes(make_note("Xen", 18, pattern(16, 0))), "descriptor size 16, expected 4 or 8");
    }
    SECTION("PVH entry above 4 GiB") {
        check_rejected(with_notes(make_note("Xen", 18, le64(0x100000000ULL))), "is not a 32-bit address");
    }
    SECTION("note segment outside the image") {
        auto img = with_notes(pvh_note(static_cast<uint32_t>(kElfPvhEntry)));
        poke<uint64_t>(img, ElfBuilder::phdr_offset(2) + kPhFilesz, 0x100000);
        check_rejected(img, "ELF program header 2 file range");
    }
}

TEST_CASE("ELF segments must lie in guest RAM above 1 MiB", "[boot][elf]") {
    auto mem = make_guest_memory(16 * kMiB);
    auto b = elf_kernel(false);

    SECTION("beyond the end of guest memory") {
        b.segments[1].paddr = 0x10000000;
        CHECK_THROWS_WITH(setup_boot(mem, options_for(b.build())),
                          Contains("ELF program header 1 loads at [0x10000000, +0x4000), outside guest RAM "
                                   "([0x0, 0x1000000))"));
    }
    SECTION("straddling the end of guest memory") {
        b.segments[1].paddr = 16 * kMiB - 0x1000;
        CHECK_THROWS_WITH(setup_boot(mem, options_for(b.build())), Contains("outside guest RAM"));
    }
    SECTION("in the MMIO hole of a large guest") {
        auto big = make_guest_memory(4 * kGiB);
        b.segments[1].paddr = layout::kMmioHoleStart + 0x1000;
        CHECK_THROWS_WITH(setup_boot(big, options_for(b.build())),
                          Contains("outside guest RAM ([0x0, 0xc0000000) and [0x100000000, 0x140000000))"));
    }
    SECTION("below 1 MiB, over the boot structures") {
        b.segments[1].paddr = layout::kZeroPageAddr;
        CHECK_THROWS_WITH(setup_boot(mem, options_for(b.build())),
                          Contains("ELF program header 1 loads at [0x7000, +0x4000), below 1 MiB"));
    }
}

}  // namespace unit_elf_loader_test
