// Shared by the boot_* fuzz targets: a fuzz input is an 8-byte header of boot options followed
// by a kernel image; the whole boot set-up (boot::setup_boot) runs on it in a small, fresh
// guest memory, and what it reports is checked against the image and the memory.
//
// Input layout (tests/fuzz/make_boot_corpus.py writes it):
//   byte 0   bits 0-2: guest memory size (kMemSizes); bit 3: prefer PVH; bit 4: ACPI tables;
//            bit 5: an initrd; bit 6: the kernel read from a file (memfd) rather than copied
//            from the bytes; bit 7: the same for the initrd
//   byte 1   vCPU count (as given: 0 and too many must be refused)
//   byte 2-3 command line length, little-endian (the line is "console=ttyS0 " repeated)
//   byte 4-7 initrd size, little-endian, at most kMaxInitrdBytes (its bytes are zeros)
//   byte 8-  the kernel image
//
// A bad image, option or size must end in embervm::Error (the one-line message the user sees);
// any other exception, a crash or a failed check below is a bug.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <span>
#include <string>

#include "boot/boot.h"
#include "boot/layout.h"
#include "boot/memory_map.h"
#include "memory/guest_memory.h"
#include "vmm/sys/error.h"
#include "vmm/sys/fd.h"

namespace embervm::fuzz {

inline constexpr size_t kBootHeaderBytes = 8;
inline constexpr uint64_t kMiB = uint64_t{1} << 20;
// From too small to boot (1 MiB) to a layout with RAM above the 32-bit MMIO hole. Guest memory
// is mapped MAP_NORESERVE, so only the pages the loaders write cost anything.
inline constexpr uint64_t kMemSizes[8] = {kMiB,       2 * kMiB,   4 * kMiB,         16 * kMiB,
                                          64 * kMiB, 256 * kMiB, 3072 * kMiB + 8 * kMiB, 4096 * kMiB + 4 * kMiB};
inline constexpr uint32_t kMaxInitrdBytes = 2 * 1024 * 1024;

[[noreturn]] inline void fuzz_fail(const char* what, const std::string& detail = {}) {
    std::fprintf(stderr, "fuzz check failed: %s %s\n", what, detail.c_str());
    std::abort();
}

inline void fuzz_check(bool ok, const char* what) {
    if (!ok) fuzz_fail(what);
}

// `bytes` as a sealed-size memfd, for the loaders' pread path (BootOptions::kernel_fd).
inline FileDescriptor bytes_as_file(std::span<const uint8_t> bytes) {
    FileDescriptor fd(::memfd_create("fuzz-image", MFD_CLOEXEC));
    fuzz_check(static_cast<bool>(fd), "memfd_create");
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
        fuzz_check(n > 0, "write to memfd");
        done += static_cast<size_t>(n);
    }
    return fd;
}

// kMaxInitrdBytes of zeros that cost no memory (the zero page, mapped read-only).
inline std::span<const uint8_t> zero_bytes() {
    static const uint8_t* zeros = [] {
        void* p = ::mmap(nullptr, kMaxInitrdBytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        fuzz_check(p != MAP_FAILED, "mmap of the initrd zeros");
        return static_cast<const uint8_t*>(p);
    }();
    return {zeros, kMaxInitrdBytes};
}

struct BootRun {
    std::optional<boot::BootSetup> setup;  // set if setup_boot accepted the input
    std::span<const uint8_t> kernel;       // the kernel image part of the input
};

// Runs setup_boot on the input; `inspect` is called with the guest memory and the result
// (when setup_boot succeeded) before the memory goes away.
template <typename Inspect>
void run_boot(const uint8_t* data, size_t size, Inspect&& inspect) {
    if (size < kBootHeaderBytes) return;
    const uint8_t flags = data[0];
    const uint64_t mem_size = kMemSizes[flags & 7];
    const bool prefer_pvh = (flags & 0x08) != 0;
    const bool acpi = (flags & 0x10) != 0;
    const bool with_initrd = (flags & 0x20) != 0;
    const bool kernel_from_file = (flags & 0x40) != 0;
    const bool initrd_from_file = (flags & 0x80) != 0;
    const unsigned vcpus = data[1];
    const size_t cmdline_len = data[2] | (size_t{data[3]} << 8);
    uint32_t initrd_size = 0;
    std::memcpy(&initrd_size, data + 4, 4);
    initrd_size %= kMaxInitrdBytes + 1;

    BootRun run;
    run.kernel = std::span<const uint8_t>(data + kBootHeaderBytes, size - kBootHeaderBytes);

    std::string cmdline;
    while (cmdline.size() < cmdline_len) cmdline += "console=ttyS0 ";
    cmdline.resize(cmdline_len);

    boot::BootOptions options;
    options.kernel = run.kernel;
    options.cmdline = cmdline;
    options.vcpu_count = vcpus;
    options.prefer_pvh = prefer_pvh;
    if (acpi) {
        boot::acpi::AcpiLayout layout;
        layout.vcpus = vcpus;
        options.acpi = layout;
    }
    FileDescriptor kernel_fd;
    FileDescriptor initrd_fd;
    if (kernel_from_file) {
        kernel_fd = bytes_as_file(run.kernel);
        options.kernel_fd = kernel_fd.get();
    }
    std::span<const uint8_t> initrd;
    if (with_initrd) {
        initrd = zero_bytes().first(initrd_size);
        options.initrd = initrd;
        if (initrd_from_file) {
            initrd_fd = bytes_as_file(initrd);
            options.initrd_fd = initrd_fd.get();
        }
    }

    std::optional<memory::GuestMemory> mem;
    try {
        mem.emplace(boot::guest_memory_ranges(mem_size));
    } catch (const Error&) {
        return;  // too small to boot: refused before any image is looked at
    }
    try {
        run.setup = boot::setup_boot(*mem, options);
    } catch (const Error&) {
        // Refused with a message: what the loaders must do with a bad image.
    } catch (const std::exception& e) {
        fuzz_fail("setup_boot threw something other than embervm::Error:", e.what());
    }
    if (run.setup) {
        const boot::BootSetup& s = *run.setup;
        fuzz_check(s.kernel_start >= boot::layout::kHighMemStart, "kernel below 1 MiB");
        fuzz_check(s.kernel_start < s.kernel_end, "empty kernel range");
        fuzz_check(mem->check_range(memory::GuestAddress(s.kernel_start), 1) &&
                       mem->check_range(memory::GuestAddress(s.kernel_end - 1), 1),
                   "kernel outside guest memory");
        fuzz_check(s.entry >= s.kernel_start && s.entry < s.kernel_end, "entry outside the kernel");
        fuzz_check(s.cmdline_size == cmdline.size() + 1, "command line size");
        if (with_initrd) {
            fuzz_check(s.initrd_size == initrd.size() && s.initrd_size > 0, "initrd size");
            fuzz_check(s.initrd_addr % 4096 == 0, "initrd not page aligned");
            fuzz_check(s.initrd_addr >= s.kernel_end, "initrd overlaps the kernel");
            fuzz_check(s.initrd_addr + s.initrd_size <= boot::low_ram_end(*mem), "initrd past low RAM");
        } else {
            fuzz_check(s.initrd_addr == 0 && s.initrd_size == 0, "initrd without one");
        }
        fuzz_check((s.rsdp_addr != 0) == acpi, "RSDP without ACPI tables or none with them");
        kvm_regs regs{};
        kvm_sregs sregs{};
        boot::setup_boot_registers(s, regs, sregs);
        fuzz_check(regs.rip == s.entry, "boot registers: RIP is not the entry");
    }
    inspect(*mem, run);
}

// True if guest memory at `addr` holds `expected`.
inline bool guest_holds(const memory::GuestMemory& mem, uint64_t addr, std::span<const uint8_t> expected) {
    std::string got(expected.size(), '\0');
    mem.read(memory::GuestAddress(addr), std::span<uint8_t>(reinterpret_cast<uint8_t*>(got.data()), got.size()));
    return std::memcmp(got.data(), expected.data(), expected.size()) == 0;
}

}  // namespace embervm::fuzz
