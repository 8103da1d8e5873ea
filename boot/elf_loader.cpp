// ELF64 x86-64 vmlinux parsing and loading; every offset and size from the file is checked
// before it is used.
#include "boot/elf_loader.h"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "boot/image_copy.h"
#include "boot/layout.h"
#include "boot/memory_map.h"
#include "vmm/sys/error.h"

namespace embervm::boot {

namespace {

[[noreturn]] void fail(const std::string& why) { throw Error("kernel image: " + why); }

// True if [off, off+len) lies inside [0, size), without overflow.
bool within(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

template <typename T>
T read_at(std::span<const uint8_t> bytes, uint64_t off) {
    T v;
    std::memcpy(&v, bytes.data() + off, sizeof(T));
    return v;
}

uint64_t align_up(uint64_t v, uint64_t align) { return (v + align - 1) & ~(align - 1); }

std::string machine_name(uint16_t machine) {
    switch (machine) {
        case EM_386: return "EM_386 (i386)";
        case EM_ARM: return "EM_ARM (32-bit Arm)";
        case EM_AARCH64: return "EM_AARCH64 (AArch64)";
        case EM_RISCV: return "EM_RISCV (RISC-V)";
        case EM_PPC64: return "EM_PPC64 (PowerPC 64)";
        case EM_S390: return "EM_S390 (s390)";
        default: return fmt::format("{}", machine);
    }
}

void check_ident(std::span<const uint8_t> image) {
    if (image.size() < EI_NIDENT) {
        fail(fmt::format("ELF identification truncated: image is {} bytes, need {}", image.size(), EI_NIDENT));
    }
    switch (image[EI_CLASS]) {
        case ELFCLASS64: break;
        case ELFCLASS32: fail("32-bit ELF (ELFCLASS32) is not supported: need an ELF64 x86-64 vmlinux");
        default: fail(fmt::format("unknown ELF class {} (expected 2, ELFCLASS64)", image[EI_CLASS]));
    }
    if (image[EI_DATA] != ELFDATA2LSB) {
        fail(fmt::format("ELF data encoding {} is not little-endian (ELFDATA2LSB)", image[EI_DATA]));
    }
    if (image[EI_VERSION] != EV_CURRENT) {
        fail(fmt::format("ELF identification version {} is not EV_CURRENT (1)", image[EI_VERSION]));
    }
}

// Walks the notes of one PT_NOTE segment; records the PVH entry if it finds the Xen note.
void parse_notes(std::span<const uint8_t> image, size_t phdr_index, const Elf64_Phdr& ph, ElfKernel& kernel) {
    const auto notes = image.subspan(ph.p_offset, ph.p_filesz);
    // Notes in 8-byte aligned segments are padded to 8 bytes (gABI), otherwise to 4.
    const uint64_t align = ph.p_align == 8 ? 8 : 4;
    uint64_t off = 0;
    while (off < notes.size()) {
        const uint64_t left = notes.size() - off;
        if (left < sizeof(Elf64_Nhdr)) {
            // Trailing zero padding is harmless; anything else is a cut-off note header.
            if (std::all_of(notes.begin() + static_cast<ptrdiff_t>(off), notes.end(), [](uint8_t b) { return b == 0; })) {
                return;
            }
            fail(fmt::format("ELF program header {} (PT_NOTE): {} bytes left at note offset {:#x}, too few for "
                             "a note header ({} bytes)",
                             phdr_index, left, off, sizeof(Elf64_Nhdr)));
        }
        const auto nh = read_at<Elf64_Nhdr>(notes, off);
        const uint64_t name_off = off + sizeof(Elf64_Nhdr);
        const uint64_t name_padded = align_up(nh.n_namesz, align);
        if (!within(name_off, name_padded, notes.size())) {
            fail(fmt::format("ELF program header {} (PT_NOTE): note at offset {:#x} has name size {:#x}, which "
                             "exceeds the note segment ({:#x} bytes)",
                             phdr_index, off, nh.n_namesz, notes.size()));
        }
        const uint64_t desc_off = name_off + name_padded;
        if (!within(desc_off, nh.n_descsz, notes.size())) {
            fail(fmt::format("ELF program header {} (PT_NOTE): note at offset {:#x} has descriptor size {:#x}, "
                             "which exceeds the note segment ({:#x} bytes)",
                             phdr_index, off, nh.n_descsz, notes.size()));
        }
        static constexpr uint8_t kXenName[4] = {'X', 'e', 'n', '\0'};
        if (nh.n_type == kXenElfNotePhys32Entry && nh.n_namesz == sizeof(kXenName) &&
            std::memcmp(notes.data() + name_off, kXenName, sizeof(kXenName)) == 0) {
            uint64_t entry = 0;
            if (nh.n_descsz == 4) {
                entry = read_at<uint32_t>(notes, desc_off);
            } else if (nh.n_descsz == 8) {
                entry = read_at<uint64_t>(notes, desc_off);
            } else {
                fail(fmt::format("ELF program header {}: PVH note (Xen, XEN_ELFNOTE_PHYS32_ENTRY) has descriptor "
                                 "size {}, expected 4 or 8",
                                 phdr_index, nh.n_descsz));
            }
            if (entry > 0xffffffffULL) {
                fail(fmt::format("ELF program header {}: PVH entry {:#x} is not a 32-bit address", phdr_index, entry));
            }
            if (!kernel.pvh_entry) {
                kernel.pvh_entry = entry;
            }
        }
        // The last note may omit its trailing padding.
        off = std::min<uint64_t>(desc_off + align_up(nh.n_descsz, align), notes.size());
    }
}

// True if `addr` lies in the file-backed part of a PT_LOAD segment (code is there, not in bss).
bool in_loaded_code(const ElfKernel& kernel, uint64_t addr) {
    return std::any_of(kernel.segments.begin(), kernel.segments.end(), [&](const ElfSegment& s) {
        return addr >= s.paddr && addr - s.paddr < s.file_size;
    });
}

}  // namespace

uint64_t ElfKernel::start() const { return segments.empty() ? 0 : segments.front().paddr; }

uint64_t ElfKernel::end() const {
    uint64_t end = 0;
    for (const auto& s : segments) {
        end = std::max(end, s.paddr + s.mem_size);
    }
    return end;
}

bool has_elf_magic(std::span<const uint8_t> image) {
    return image.size() >= SELFMAG && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0;
}

ElfKernel parse_elf_kernel(std::span<const uint8_t> image) {
    if (!has_elf_magic(image)) {
        fail("not an ELF file (no \\x7fELF magic)");
    }
    check_ident(image);
    if (image.size() < sizeof(Elf64_Ehdr)) {
        fail(fmt::format("ELF header truncated: image is {} bytes, an ELF64 header needs {}", image.size(),
                         sizeof(Elf64_Ehdr)));
    }
    const auto eh = read_at<Elf64_Ehdr>(image, 0);
    if (eh.e_machine != EM_X86_64) {
        fail(fmt::format("ELF machine {} is not x86-64 (EM_X86_64, 62)", machine_name(eh.e_machine)));
    }
    if (eh.e_type != ET_EXEC) {
        fail(fmt::format("ELF type {} is not ET_EXEC (2): a vmlinux is a statically linked executable", eh.e_type));
    }
    if (eh.e_phentsize != sizeof(Elf64_Phdr)) {
        fail(fmt::format("ELF program header entry size {} is not {}", eh.e_phentsize, sizeof(Elf64_Phdr)));
    }
    if (eh.e_phnum == 0) {
        fail("ELF file has no program headers");
    }
    if (eh.e_phnum == PN_XNUM) {
        fail("ELF file uses extended program header numbering (e_phnum = PN_XNUM), not supported for a kernel");
    }
    const uint64_t phdrs_size = uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr);
    if (!within(eh.e_phoff, phdrs_size, image.size())) {
        fail(fmt::format("ELF program header table [{:#x}, +{:#x}) exceeds image size {:#x}", eh.e_phoff,
                         phdrs_size, image.size()));
    }

    ElfKernel kernel;
    kernel.entry = eh.e_entry;
    for (size_t i = 0; i < eh.e_phnum; i++) {
        const auto ph = read_at<Elf64_Phdr>(image, eh.e_phoff + i * sizeof(Elf64_Phdr));
        if (ph.p_type != PT_LOAD && ph.p_type != PT_NOTE) {
            continue;
        }
        if (!within(ph.p_offset, ph.p_filesz, image.size())) {
            fail(fmt::format("ELF program header {} file range [{:#x}, +{:#x}) exceeds image size {:#x}", i,
                             ph.p_offset, ph.p_filesz, image.size()));
        }
        if (ph.p_type == PT_NOTE) {
            parse_notes(image, i, ph, kernel);
            continue;
        }
        if (ph.p_filesz > ph.p_memsz) {
            fail(fmt::format("ELF program header {}: file size {:#x} is larger than memory size {:#x}", i,
                             ph.p_filesz, ph.p_memsz));
        }
        if (ph.p_paddr + ph.p_memsz < ph.p_paddr) {
            fail(fmt::format("ELF program header {}: physical range [{:#x}, +{:#x}) wraps around", i, ph.p_paddr,
                             ph.p_memsz));
        }
        if (ph.p_memsz == 0) {
            continue;
        }
        kernel.segments.push_back({i, ph.p_offset, ph.p_filesz, ph.p_paddr, ph.p_memsz});
    }
    if (kernel.segments.empty()) {
        fail("ELF file has no loadable (PT_LOAD) segment");
    }
    std::sort(kernel.segments.begin(), kernel.segments.end(),
              [](const ElfSegment& a, const ElfSegment& b) { return a.paddr < b.paddr; });
    for (size_t i = 1; i < kernel.segments.size(); i++) {
        const auto& prev = kernel.segments[i - 1];
        const auto& cur = kernel.segments[i];
        if (cur.paddr < prev.paddr + prev.mem_size) {
            fail(fmt::format("ELF program headers {} and {} overlap in physical memory ([{:#x}, +{:#x}) and "
                             "[{:#x}, +{:#x}))",
                             prev.phdr_index, cur.phdr_index, prev.paddr, prev.mem_size, cur.paddr, cur.mem_size));
        }
    }
    if (!in_loaded_code(kernel, kernel.entry)) {
        fail(fmt::format("ELF entry point {:#x} is not inside a loaded segment", kernel.entry));
    }
    if (kernel.pvh_entry && !in_loaded_code(kernel, *kernel.pvh_entry)) {
        fail(fmt::format("PVH entry point {:#x} (XEN_ELFNOTE_PHYS32_ENTRY) is not inside a loaded segment",
                         *kernel.pvh_entry));
    }
    return kernel;
}

void check_elf_placement(const ElfKernel& kernel, const memory::GuestMemory& mem) {
    for (const auto& s : kernel.segments) {
        if (s.paddr < layout::kHighMemStart) {
            fail(fmt::format("ELF program header {} loads at [{:#x}, +{:#x}), below 1 MiB where the boot "
                             "structures (zero page, page tables, command line, MP table) live",
                             s.phdr_index, s.paddr, s.mem_size));
        }
        if (!mem.check_range(memory::GuestAddress(s.paddr), s.mem_size)) {
            fail(fmt::format("ELF program header {} loads at [{:#x}, +{:#x}), outside guest RAM ({})", s.phdr_index,
                             s.paddr, s.mem_size, describe_guest_ram(mem)));
        }
    }
}

void load_elf_segments(const ElfKernel& kernel, std::span<const uint8_t> image, const memory::GuestMemory& mem,
                       int fd) {
    for (const auto& s : kernel.segments) {
        copy_image(mem, memory::GuestAddress(s.paddr), image, s.file_offset, s.file_size, fd, "kernel image");
        if (s.mem_size > s.file_size) {
            // bss: zero without faulting in pages that are zero already.
            mem.zero(memory::GuestAddress(s.paddr + s.file_size), s.mem_size - s.file_size);
        }
    }
}

}  // namespace embervm::boot
