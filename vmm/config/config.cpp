// The configuration model's small helpers: the names of its enums and MAC addresses as text.
#include "vmm/config/config.h"

#include <fmt/format.h>

#include "vmm/config/field_checks.h"

namespace embervm::vmm {

const char* to_string(CacheType type) { return type == CacheType::Writeback ? "Writeback" : "Unsafe"; }

const char* to_string(ConsoleType type) { return type == ConsoleType::Virtio ? "virtio" : "serial"; }

const char* to_string(LogLevel level) {
    switch (level) {
        case LogLevel::Off: return "Off";
        case LogLevel::Error: return "Error";
        case LogLevel::Warning: return "Warning";
        case LogLevel::Info: return "Info";
        case LogLevel::Debug: return "Debug";
        case LogLevel::Trace: return "Trace";
    }
    return "?";
}

MacAddress parse_mac(std::string_view field, std::string_view text) {
    MacAddress mac{};
    const auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    bool ok = text.size() == 17;
    for (size_t i = 0; ok && i < 6; i++) {
        const int hi = hex(text[i * 3]), lo = hex(text[i * 3 + 1]);
        ok = hi >= 0 && lo >= 0 && (i == 5 || text[i * 3 + 2] == ':');
        mac[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    if (!ok) throw field_error(field, fmt::format("'{}' is not a MAC address (expected aa:bb:cc:dd:ee:ff)", text));
    return mac;
}

std::string format_mac(const MacAddress& m) {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
}

}  // namespace embervm::vmm
