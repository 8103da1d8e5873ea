// Tests for boot/boot.cpp and boot/file.cpp: the top-level setup_boot() and read_file().
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "boot/boot.h"
#include "boot/cpu_tables.h"
#include "tests/unit/boot/test_images.h"
#include "vmm/sys/error.h"

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
