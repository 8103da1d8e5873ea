// Fuzz target boot_elf: an ELF vmlinux (program headers, PT_LOAD segments, the PVH note) through
// the ELF parser and the whole boot set-up (tests/fuzz/boot_harness.h has the input layout).
// Checks: what parse_elf_kernel accepts is consistent with the image (segments inside the
// file, sorted, not overlapping, entries in loaded code), and what setup_boot loads is the
// segments' bytes at their physical addresses.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "boot/elf_loader.h"
#include "tests/fuzz/boot_harness.h"

using namespace embervm;

namespace {

void check_parsed(const boot::ElfKernel& k, std::span<const uint8_t> image) {
    fuzz::fuzz_check(!k.segments.empty(), "ELF: no segment accepted");
    bool entry_loaded = false;
    bool pvh_loaded = !k.pvh_entry;
    for (size_t i = 0; i < k.segments.size(); i++) {
        const boot::ElfSegment& s = k.segments[i];
        fuzz::fuzz_check(s.file_offset <= image.size() && s.file_size <= image.size() - s.file_offset,
                         "ELF: segment outside the file");
        fuzz::fuzz_check(s.file_size <= s.mem_size && s.mem_size > 0, "ELF: segment sizes");
        fuzz::fuzz_check(s.paddr + s.mem_size > s.paddr, "ELF: segment wraps");
        if (i > 0) {
            const boot::ElfSegment& prev = k.segments[i - 1];
            fuzz::fuzz_check(prev.paddr + prev.mem_size <= s.paddr, "ELF: segments overlap or are unsorted");
        }
        entry_loaded |= k.entry >= s.paddr && k.entry - s.paddr < s.file_size;
        if (k.pvh_entry) pvh_loaded |= *k.pvh_entry >= s.paddr && *k.pvh_entry - s.paddr < s.file_size;
    }
    fuzz::fuzz_check(entry_loaded, "ELF: entry not in loaded code");
    fuzz::fuzz_check(pvh_loaded, "ELF: PVH entry not in loaded code");
    fuzz::fuzz_check(!k.pvh_entry || *k.pvh_entry <= 0xffffffffULL, "ELF: PVH entry above 4 GiB");
    fuzz::fuzz_check(k.start() == k.segments.front().paddr && k.end() > k.start(), "ELF: start/end");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::run_boot(data, size, [](const memory::GuestMemory& mem, const fuzz::BootRun& run) {
        std::optional<boot::ElfKernel> parsed;
        try {
            parsed = boot::parse_elf_kernel(run.kernel);
        } catch (const Error&) {
        }
        if (parsed) check_parsed(*parsed, run.kernel);
        if (!run.setup || run.setup->kernel_kind != boot::KernelKind::Elf) return;
        fuzz::fuzz_check(parsed.has_value(), "ELF: booted an image the parser refuses");
        fuzz::fuzz_check(run.setup->kernel_start == parsed->start() && run.setup->kernel_end == parsed->end(),
                         "ELF: boot set-up's kernel range differs from the parser's");
        for (const boot::ElfSegment& s : parsed->segments) {
            fuzz::fuzz_check(fuzz::guest_holds(mem, s.paddr, run.kernel.subspan(s.file_offset, s.file_size)),
                             "ELF: segment bytes not loaded at their address");
            const uint64_t bss = std::min<uint64_t>(s.mem_size - s.file_size, 4096);
            static const uint8_t kZeros[4096] = {};
            fuzz::fuzz_check(fuzz::guest_holds(mem, s.paddr + s.file_size, std::span<const uint8_t>(kZeros, bss)),
                             "ELF: bss not zero");
        }
    });
    return 0;
}
