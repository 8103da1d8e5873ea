// Public API of the x86-64 boot layer: lays out guest memory, loads a Linux kernel (ELF vmlinux
// or bzImage), initrd and command line, writes the boot structures and computes the boot
// vCPU's registers. The VMM includes only this header, boot/layout.h and, for the ACPI tables'
// contents, boot/acpi/platform.h.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "boot/acpi/platform.h"
#include "memory/guest_memory.h"
#include "vmm/sys/fd.h"

namespace embervm::boot {

// How the boot vCPU enters the kernel.
//  Linux64: the 64-bit Linux boot protocol: long mode, identity-mapped page tables,
//           RSI = zero page (struct boot_params).
//  Pvh:     the PVH boot protocol (ELF kernels with a XEN_ELFNOTE_PHYS32_ENTRY note):
//           32-bit protected mode, paging off, EBX = struct hvm_start_info.
enum class EntryProtocol { Linux64, Pvh };

enum class KernelKind { Elf, BzImage };

struct BootOptions {
    std::span<const uint8_t> kernel;                 // the whole kernel image file
    std::optional<std::span<const uint8_t>> initrd;  // the whole initrd file, if any
    // When >= 0: the open regular file that `kernel` (resp. `initrd`) is a read-only mapping of
    // (FileImage::fd()). The spans are then read only where headers are parsed and checked;
    // what goes into guest memory (ELF segments, the bzImage's protected-mode part, the
    // initrd) is read from the file with pread straight into guest memory: no intermediate
    // copy, each guest page written once, and the parts of the file the guest never sees
    // (a vmlinux's symbols) not read at all. -1: copied from the span.
    int kernel_fd = -1;
    int initrd_fd = -1;
    std::string cmdline;
    unsigned vcpu_count = 1;
    // An ELF kernel with a PVH note is entered through PVH if true, else through its 64-bit
    // entry. A bzImage is always entered through its 64-bit entry.
    bool prefer_pvh = true;
    // The guest the ACPI tables describe; none: no tables, and the RSDP address the kernel is
    // given is 0. The vCPU count in it must equal vcpu_count.
    std::optional<acpi::AcpiLayout> acpi;
};

// What setup_boot() did: everything setup_boot_registers() needs, plus where things went.
struct BootSetup {
    EntryProtocol protocol = EntryProtocol::Linux64;
    uint64_t entry = 0;           // guest physical entry address (RIP/EIP)
    uint64_t boot_info_addr = 0;  // zero page (Linux64) or hvm_start_info (Pvh)
    KernelKind kernel_kind = KernelKind::Elf;
    uint64_t kernel_start = 0;    // guest physical range the kernel occupies at run time
    uint64_t kernel_end = 0;      //   (ELF: its PT_LOAD segments; bzImage: load address .. init_size)
    uint64_t initrd_addr = 0;     // 0 and 0 without an initrd
    uint64_t initrd_size = 0;
    uint64_t cmdline_addr = 0;
    uint64_t cmdline_size = 0;    // bytes written, including the terminating NUL
    uint64_t rsdp_addr = 0;       // the ACPI RSDP (0: no ACPI tables)
};

// The guest RAM ranges for `mem_bytes` of memory: [0, min(mem, 3 GiB)) and, for the rest,
// a second range at 4 GiB (above the 32-bit MMIO hole). Throws Error if mem_bytes is not a
// positive multiple of 4 KiB or is too small to boot (<= 1 MiB).
std::vector<std::pair<memory::GuestAddress, size_t>> guest_memory_ranges(uint64_t mem_bytes);

// Reads a whole file ("kernel image", "initrd" name it in errors). Throws Error with the path
// and errno: "kernel image /x/vmlinux: open: No such file or directory (errno 2)".
std::vector<uint8_t> read_file(const std::string& path, std::string_view what);

// A whole file, read-only: mmap'd when it is a regular file (lazily: only the pages that are
// looked at are read; fd() then stays open for reading ranges straight into guest memory),
// else read into memory (fd() is -1). Errors as read_file.
class FileImage {
public:
    FileImage(const std::string& path, std::string_view what);
    ~FileImage();
    FileImage(const FileImage&) = delete;
    FileImage& operator=(const FileImage&) = delete;
    std::span<const uint8_t> bytes() const { return {data_, size_}; }
    int fd() const { return mapped_ ? fd_.get() : -1; }

private:
    FileDescriptor fd_;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
    bool mapped_ = false;
    std::vector<uint8_t> copy_;  // when not mapped
};

// Validates the kernel image and everything else in `options` against `mem`, then writes the
// kernel, initrd, command line, zero page or PVH start info, MP table, ACPI tables (if asked
// for; their RSDP's address goes into the zero page or start info), the reset-vector stub
// (boot/reset_vector.h), GDT, IDT and page tables into guest memory. Throws Error, whose message says exactly what is wrong, on a bad or
// unsupported image, a command line that is too long, an initrd that does not fit, guest
// memory that cannot hold the kernel, or a guest the ACPI tables cannot describe.
BootSetup setup_boot(const memory::GuestMemory& mem, const BootOptions& options);

// Fills the boot vCPU's registers for `setup`. `regs` is overwritten entirely; in `sregs`
// (as obtained from KVM_GET_SREGS) the segment registers CS/DS/ES/FS/GS/SS, GDTR, IDTR,
// CR0, CR3, CR4 and EFER are overwritten, everything else (TR, LDT, APIC base, pending
// interrupts) is kept.
void setup_boot_registers(const BootSetup& setup, kvm_regs& regs, kvm_sregs& sregs);

}  // namespace embervm::boot
