// Fuzz target boot_initrd: boot::place_initrd on fuzzed sizes and limits, against a
// reference computed in 128-bit arithmetic. The input is four little-endian 64-bit values:
// initrd size, kernel end, initrd_addr_max, end of low RAM (missing bytes read as zero).
// The kernel end and the RAM end are masked to 52 bits, the physical address width the
// callers' values come from (a kernel and RAM inside guest memory); the initrd size and the
// kernel's initrd_addr_max are taken whole, as a file and a bzImage header give them.
//
// Checks: place_initrd succeeds exactly when a page-aligned placement exists at or above the
// kernel's end (rounded up to a page) that ends at or below both limits, and then returns the
// highest such address; otherwise it throws embervm::Error.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>

#include "boot/initrd.h"
#include "tests/fuzz/boot_harness.h"

using namespace embervm;

namespace {

__extension__ typedef unsigned __int128 u128;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kPhysMask = (uint64_t{1} << 52) - 1;

std::optional<uint64_t> reference(uint64_t size, uint64_t kernel_end, uint64_t addr_max, uint64_t ram_end) {
    if (size == 0) return std::nullopt;
    const u128 limit = std::min<u128>(ram_end, u128{addr_max} + 1);
    const u128 lowest = (u128{kernel_end} + kPage - 1) / kPage * kPage;
    if (size > limit) return std::nullopt;
    const u128 best = (limit - size) / kPage * kPage;
    if (best < lowest) return std::nullopt;
    return static_cast<uint64_t>(best);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    uint64_t v[4] = {};
    std::memcpy(v, data, std::min(size, sizeof v));
    const uint64_t initrd_size = v[0];
    const uint64_t kernel_end = v[1] & kPhysMask;
    const uint64_t addr_max = v[2];
    const uint64_t ram_end = v[3] & kPhysMask;

    const std::optional<uint64_t> want = reference(initrd_size, kernel_end, addr_max, ram_end);
    std::optional<uint64_t> got;
    try {
        got = boot::place_initrd(initrd_size, kernel_end, addr_max, ram_end);
    } catch (const Error&) {
    }
    if (got != want) {
        fuzz::fuzz_fail("place_initrd differs from the reference:",
                        fmt::format("size {:#x} kernel_end {:#x} initrd_addr_max {:#x} ram_end {:#x}: got {}, want {}",
                                    initrd_size, kernel_end, addr_max, ram_end,
                                    got ? fmt::format("{:#x}", *got) : "refusal",
                                    want ? fmt::format("{:#x}", *want) : "refusal"));
    }
    return 0;
}
