// Tests for boot/boot.cpp and boot/file.cpp: the top-level setup_boot() and read_file().
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "boot/boot.h"
#include "boot/cpu_tables.h"
#include "tests/unit/boot/test_images.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_boot_test {

using namespace embervm::boot;
using namespace embervm::boot::test;
using Catch::Matchers::Contains;
using embervm::memory::GuestAddress;

TEST_CASE("read_file reads a whole file and names path and errno on failure", "[boot][file]") {
    char path[] = "/tmp/embervm-boot-test-XXXXXX";
    const int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    ::close(fd);
    const auto data = pattern(3 * (1 << 20) + 17, 1);  // more than one read chunk
    {
        std::ofstream out(path, std::ios::binary);
        out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    }
    CHECK(read_file(path, "kernel image") == data);
    ::unlink(path);

    CHECK_THROWS_WITH(read_file(path, "kernel image"),
                      Contains(std::string("kernel image ") + path + ": open: No such file or directory (errno 2)"));
    CHECK_THROWS_WITH(read_file("/tmp", "initrd"), Contains("initrd /tmp: is a directory"));
    CHECK(read_file("/dev/null", "initrd").empty());
}

TEST_CASE("setup_boot writes every boot structure", "[boot]") {
    auto mem = make_guest_memory(64 * kMiB);
    const auto kernel = elf_kernel(false).build();
    BootOptions o;
    o.kernel = kernel;
    o.cmdline = "x";
    o.vcpu_count = 2;
    const BootSetup s = setup_boot(mem, o);
    CHECK(s.cmdline_addr == layout::kCmdlineAddr);
    CHECK(s.cmdline_size == 2);
    CHECK(s.initrd_addr == 0);
    CHECK(s.initrd_size == 0);
    CHECK(mem.read_obj<uint32_t>(GuestAddress(layout::kEbdaStart)) == 0x5f504d5f);  // "_MP_"
    CHECK(mem.read_obj<uint64_t>(GuestAddress(layout::kGdtAddr + 0x10)) == kCode64Descriptor);
    CHECK(mem.read_obj<uint64_t>(GuestAddress(layout::kPml4Addr)) == (layout::kPdptAddr | 3));
    CHECK(mem.read_obj<uint16_t>(GuestAddress(layout::kZeroPageAddr + 0x1fe)) == 0xaa55);
}

TEST_CASE("setup_boot validates everything before writing guest memory", "[boot]") {
    auto mem = make_guest_memory(16 * kMiB);
    const auto kernel = elf_kernel(false).build();
    const std::vector<uint8_t> huge_initrd(32 * kMiB, 1);
    BootOptions o;
    o.kernel = kernel;
    o.initrd = std::span<const uint8_t>(huge_initrd);
    CHECK_THROWS_WITH(setup_boot(mem, o), Contains("does not fit"));
    CHECK(mem.read_obj<uint64_t>(GuestAddress(kElfCodeAddr)) == 0);
    CHECK(mem.read_obj<uint32_t>(GuestAddress(layout::kEbdaStart)) == 0);
}

TEST_CASE("setup_boot needs guest memory from 0 past 1 MiB", "[boot]") {
    const embervm::memory::GuestMemory mem({{GuestAddress(0x100000), 16 * kMiB}});
    const auto kernel = elf_kernel(false).build();
    BootOptions o;
    o.kernel = kernel;
    CHECK_THROWS_WITH(setup_boot(mem, o), Contains("guest memory must start at 0"));
}

namespace {
// An unlinked temporary file holding `data`; the caller closes the descriptor.
int file_with(const std::vector<uint8_t>& data) {
    char path[] = "/tmp/embervm-boot-test-XXXXXX";
    const int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    ::unlink(path);
    REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    return fd;
}

std::vector<uint8_t> guest_bytes(const embervm::memory::GuestMemory& mem, uint64_t len) {
    std::vector<uint8_t> out(len);
    mem.read(GuestAddress(0), out);
    return out;
}
}  // namespace

TEST_CASE("setup_boot reading kernel and initrd from their files leaves guest memory as copying does", "[boot][file]") {
    const auto initrd = pattern(0x5123, 7);
    for (const bool bz : {false, true}) {
        CAPTURE(bz);
        const auto kernel = bz ? make_bzimage() : elf_kernel(true).build();
        const int kfd = file_with(kernel);
        const int ifd = file_with(initrd);
        BootOptions o;
        o.kernel = kernel;
        o.initrd = std::span<const uint8_t>(initrd);
        o.cmdline = "console=ttyS0";
        auto copied = make_guest_memory(64 * kMiB);
        const BootSetup a = setup_boot(copied, o);
        o.kernel_fd = kfd;
        o.initrd_fd = ifd;
        auto read = make_guest_memory(64 * kMiB);
        if (!bz) {
            // Dirty the ELF's segments, bss included: they must come out as copied, bss zeroed.
            read.fill(GuestAddress(kElfCodeAddr), 0x3000, 0xee);
            read.fill(GuestAddress(kElfDataAddr), 0x4000, 0xee);
        }
        const BootSetup b = setup_boot(read, o);
        CHECK(a.initrd_addr == b.initrd_addr);
        CHECK(a.entry == b.entry);
        const bool same = guest_bytes(copied, 64 * kMiB) == guest_bytes(read, 64 * kMiB);
        CHECK(same);
        CHECK(read.read_obj<uint8_t>(GuestAddress(b.initrd_addr + 0x5122)) == initrd[0x5122]);

        // A file shorter than the mapping it stood for (changed under the VMM): an error, not a
        // guest with half a kernel.
        REQUIRE(::ftruncate(kfd, static_cast<off_t>(kernel.size() / 2)) == 0);
        auto cut = make_guest_memory(64 * kMiB);
        CHECK_THROWS_WITH(setup_boot(cut, o), Contains("kernel image: file ends at offset"));
        ::close(kfd);
        ::close(ifd);
    }
}

}  // namespace unit_boot_test
