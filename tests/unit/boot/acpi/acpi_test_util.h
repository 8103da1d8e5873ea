// Helpers for the ACPI unit tests: byte sums.
#pragma once

#include <cstdint>
#include <numeric>
#include <span>

namespace embervm::acpi_test {

inline uint8_t byte_sum(std::span<const uint8_t> bytes) {
    return std::accumulate(bytes.begin(), bytes.end(), uint8_t{0},
                           [](uint8_t a, uint8_t b) { return static_cast<uint8_t>(a + b); });
}

}  // namespace embervm::acpi_test
