// The ACPI checksum: the byte that makes a table, or a resource template, sum to 0 (mod 256).
#pragma once

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>

namespace embervm::boot::acpi {

// The value that makes `bytes` sum to 0 when stored in a byte of it that is 0 now.
inline uint8_t checksum(std::span<const uint8_t> bytes) {
    const uint8_t sum = std::accumulate(bytes.begin(), bytes.end(), uint8_t{0},
                                        [](uint8_t a, uint8_t b) { return static_cast<uint8_t>(a + b); });
    return static_cast<uint8_t>(-sum);
}

// Sets the byte at `offset` so that all of `bytes` sums to 0.
inline void fix_checksum(std::span<uint8_t> bytes, size_t offset) {
    bytes[offset] = 0;
    bytes[offset] = checksum(bytes);
}

}  // namespace embervm::boot::acpi
