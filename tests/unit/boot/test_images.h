// Synthetic kernel images for the boot/ unit tests: a small ELF64 vmlinux builder (with
// optional notes) and a minimal bzImage with a valid setup header, plus byte-poking helpers.
#pragma once

#include <elf.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "boot/boot.h"
#include "boot/layout.h"
#include "memory/guest_memory.h"

namespace embervm::boot::test {

// A packed field cannot bind to a reference (Catch's CHECK takes one): copy it out first.
template <typename T>
T val(T v) {
    return v;
}

template <typename T>
void poke(std::vector<uint8_t>& bytes, size_t off, T v) {
    std::memcpy(bytes.data() + off, &v, sizeof(T));
}

template <typename T>
T peek(const std::vector<uint8_t>& bytes, size_t off) {
    T v;
    std::memcpy(&v, bytes.data() + off, sizeof(T));
    return v;
}

// Guest memory laid out as the VMM lays it out.
inline memory::GuestMemory make_guest_memory(uint64_t mem_bytes) {
    return memory::GuestMemory(guest_memory_ranges(mem_bytes));
}

inline constexpr uint64_t kMiB = uint64_t{1} << 20;
inline constexpr uint64_t kGiB = uint64_t{1} << 30;

inline std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; i++) {
        v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 8));
    }
    return v;
}

// One ELF note: header, name (NUL included in namesz) and descriptor, padded to 4 bytes.
inline std::vector<uint8_t> make_note(const std::string& name, uint32_t type, const std::vector<uint8_t>& desc) {
    const uint32_t namesz = static_cast<uint32_t>(name.size() + 1);
    const uint32_t descsz = static_cast<uint32_t>(desc.size());
    const size_t name_padded = (namesz + 3) & ~size_t{3};
    const size_t desc_padded = (descsz + 3) & ~size_t{3};
    std::vector<uint8_t> out(12 + name_padded + desc_padded, 0);
    poke(out, 0, namesz);
    poke(out, 4, descsz);
    poke(out, 8, type);
    std::memcpy(out.data() + 12, name.data(), name.size());
    if (!desc.empty()) {
        std::memcpy(out.data() + 12 + name_padded, desc.data(), desc.size());
    }
    return out;
}

inline std::vector<uint8_t> le32(uint32_t v) {
    std::vector<uint8_t> out(4);
    poke(out, 0, v);
    return out;
}

inline std::vector<uint8_t> le64(uint64_t v) {
    std::vector<uint8_t> out(8);
    poke(out, 0, v);
    return out;
}

inline std::vector<uint8_t> pvh_note(uint32_t entry) { return make_note("Xen", 18, le32(entry)); }

struct ElfBuilder {
    struct Segment {
        uint32_t type = PT_LOAD;
        uint64_t paddr = 0;
        std::vector<uint8_t> data;
        uint64_t mem_size = 0;  // 0: data.size()
        uint64_t align = 0x1000;
    };
    uint64_t entry = 0x100000;
    std::vector<Segment> segments;

    // Layout: ELF header, program headers, then each segment's data 16-byte aligned.
    // Offsets of the pieces, for tests that corrupt them.
    static constexpr size_t phdr_offset(size_t i) { return sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr); }

    std::vector<uint8_t> build() const {
        std::vector<uint8_t> out(sizeof(Elf64_Ehdr) + segments.size() * sizeof(Elf64_Phdr));
        Elf64_Ehdr eh{};
        std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
        eh.e_ident[EI_CLASS] = ELFCLASS64;
        eh.e_ident[EI_DATA] = ELFDATA2LSB;
        eh.e_ident[EI_VERSION] = EV_CURRENT;
        eh.e_type = ET_EXEC;
        eh.e_machine = EM_X86_64;
        eh.e_version = EV_CURRENT;
        eh.e_entry = entry;
        eh.e_phoff = sizeof(Elf64_Ehdr);
        eh.e_ehsize = sizeof(Elf64_Ehdr);
        eh.e_phentsize = sizeof(Elf64_Phdr);
        eh.e_phnum = static_cast<uint16_t>(segments.size());
        poke(out, 0, eh);
        for (size_t i = 0; i < segments.size(); i++) {
            const auto& s = segments[i];
            out.resize((out.size() + 15) & ~size_t{15});
            Elf64_Phdr ph{};
            ph.p_type = s.type;
            ph.p_flags = PF_R | PF_X;
            ph.p_offset = out.size();
            ph.p_vaddr = s.paddr + 0xffffffff80000000ULL;
            ph.p_paddr = s.paddr;
            ph.p_filesz = s.data.size();
            ph.p_memsz = s.mem_size != 0 ? s.mem_size : s.data.size();
            ph.p_align = s.align;
            poke(out, phdr_offset(i), ph);
            out.insert(out.end(), s.data.begin(), s.data.end());
        }
        return out;
    }
};

// Field offsets in an Elf64_Phdr.
inline constexpr size_t kPhOffset = offsetof(Elf64_Phdr, p_offset);
inline constexpr size_t kPhPaddr = offsetof(Elf64_Phdr, p_paddr);
inline constexpr size_t kPhFilesz = offsetof(Elf64_Phdr, p_filesz);
inline constexpr size_t kPhMemsz = offsetof(Elf64_Phdr, p_memsz);

// A vmlinux-like ELF: code at 1 MiB (0x2000 bytes + 0x1000 bss), data at 2 MiB (0x800 bytes
// + bss up to 0x4000), optionally a PT_NOTE with a GNU note followed by the PVH note.
inline constexpr uint64_t kElfCodeAddr = 0x100000;
inline constexpr uint64_t kElfDataAddr = 0x200000;
inline constexpr uint64_t kElfPvhEntry = 0x100400;

inline ElfBuilder elf_kernel(bool with_pvh) {
    ElfBuilder b;
    b.entry = kElfCodeAddr;
    b.segments.push_back({PT_LOAD, kElfCodeAddr, pattern(0x2000, 1), 0x3000, 0x1000});
    b.segments.push_back({PT_LOAD, kElfDataAddr, pattern(0x800, 2), 0x4000, 0x1000});
    if (with_pvh) {
        auto notes = make_note("GNU", 3, pattern(20, 3));
        const auto pvh = pvh_note(static_cast<uint32_t>(kElfPvhEntry));
        notes.insert(notes.end(), pvh.begin(), pvh.end());
        b.segments.push_back({PT_NOTE, 0, notes, 0, 4});
    }
    return b;
}

// A minimal bzImage for protocol 2.15: setup_sects 4 (5 * 512 bytes of setup), a patterned
// protected-mode part, relocatable, init_size 8 MiB, pref_address 16 MiB.
struct BzImageSpec {
    uint8_t setup_sects = 4;
    size_t kernel_size = 0x4000;
    uint16_t version = 0x20f;
    uint8_t loadflags = 0x01;      // LOADED_HIGH
    uint16_t xloadflags = 0x03;    // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    uint32_t initrd_addr_max = 0x7fffffff;
    uint32_t kernel_alignment = 0x200000;
    uint8_t relocatable = 1;
    uint32_t cmdline_size = 2047;
    uint64_t pref_address = 0x1000000;
    uint32_t init_size = 0x800000;
    uint8_t jump_target = 0x6a;    // header ends at 0x202 + 0x6a = 0x26c
};

inline std::vector<uint8_t> make_bzimage(const BzImageSpec& s = {}) {
    const size_t setup_size = (size_t{s.setup_sects == 0 ? uint8_t{4} : s.setup_sects} + 1) * 512;
    std::vector<uint8_t> out(setup_size, 0);
    out[0x1f1] = s.setup_sects;
    poke<uint32_t>(out, 0x1f4, static_cast<uint32_t>(s.kernel_size / 16));  // syssize
    poke<uint16_t>(out, 0x1fe, 0xaa55);
    out[0x200] = 0xeb;  // jmp short
    out[0x201] = s.jump_target;
    std::memcpy(out.data() + 0x202, "HdrS", 4);
    poke<uint16_t>(out, 0x206, s.version);
    out[0x211] = s.loadflags;
    poke<uint32_t>(out, 0x214, 0x100000);  // code32_start
    poke<uint32_t>(out, 0x22c, s.initrd_addr_max);
    poke<uint32_t>(out, 0x230, s.kernel_alignment);
    out[0x234] = s.relocatable;
    out[0x235] = 21;  // min_alignment
    poke<uint16_t>(out, 0x236, s.xloadflags);
    poke<uint32_t>(out, 0x238, s.cmdline_size);
    poke<uint64_t>(out, 0x258, s.pref_address);
    poke<uint32_t>(out, 0x260, s.init_size);
    const auto kernel = pattern(s.kernel_size, 9);
    out.insert(out.end(), kernel.begin(), kernel.end());
    return out;
}

}  // namespace embervm::boot::test
