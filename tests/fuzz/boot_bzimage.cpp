// Fuzz target boot_bzimage: a bzImage (setup header, sizes, alignment, pref_address,
// init_size) through the bzImage parser and the whole boot set-up (tests/fuzz/boot_harness.h
// has the input layout). Checks: the parser's sizes are consistent with the image, the
// protected-mode kernel lands at its load address and holds the 64-bit entry, and the zero
// page carries the header.
#include <cstddef>
#include <cstdint>

#include "boot/bzimage.h"
#include "tests/fuzz/boot_harness.h"

using namespace embervm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::run_boot(data, size, [](const memory::GuestMemory& mem, const fuzz::BootRun& run) {
        std::optional<boot::BzImage> bz;
        try {
            bz = boot::parse_bzimage(run.kernel);
        } catch (const Error&) {
        }
        if (bz) {
            fuzz::fuzz_check(bz->setup_size % 512 == 0 && bz->setup_size >= 512, "bzImage: setup size");
            fuzz::fuzz_check(bz->setup_size < run.kernel.size() &&
                                 bz->kernel_size == run.kernel.size() - bz->setup_size,
                             "bzImage: kernel size");
            fuzz::fuzz_check(bz->header_bytes.size() <= boot::kSetupHeaderEnd - boot::kSetupHeaderOffset,
                             "bzImage: header bytes");
            fuzz::fuzz_check(bz->runtime_end >= bz->load_addr + bz->kernel_size, "bzImage: runtime end");
        }
        if (!run.setup || run.setup->kernel_kind != boot::KernelKind::BzImage) return;
        fuzz::fuzz_check(bz.has_value(), "bzImage: booted an image the parser refuses");
        fuzz::fuzz_check(run.setup->protocol == boot::EntryProtocol::Linux64 &&
                             run.setup->entry == bz->load_addr + boot::kEntry64Offset,
                         "bzImage: not entered at its 64-bit entry");
        fuzz::fuzz_check(boot::kEntry64Offset < bz->kernel_size, "bzImage: the 64-bit entry is past the loaded kernel");
        fuzz::fuzz_check(fuzz::guest_holds(mem, bz->load_addr, run.kernel.subspan(bz->setup_size)),
                         "bzImage: protected-mode kernel not at its load address");
        if (run.setup->protocol == boot::EntryProtocol::Linux64) {
            // The zero page's setup header (struct boot_params at 0x1f1) starts with the image's.
            const size_t n = std::min<size_t>(bz->header_bytes.size(), 0x10);
            fuzz::fuzz_check(fuzz::guest_holds(mem, run.setup->boot_info_addr + boot::kSetupHeaderOffset,
                                               std::span<const uint8_t>(bz->header_bytes).first(n)),
                             "bzImage: zero page lacks the setup header");
        }
    });
    return 0;
}
