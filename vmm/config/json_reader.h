// A strict JSON reader: one document with duplicate keys refused and syntax errors located,
// and JsonFields, the typed, range-checked accessors the section parsers and the API use.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "vmm/config/config.h"

namespace embervm::vmm {

// Parses one JSON document (duplicate keys refused). Throws ConfigError "<what>: JSON syntax
// error at byte N (line L, column C): ..." or "<root>.<key>: duplicate key", where `root` is the
// field path of the document itself: "" for a config file ("drives[0].path_on_host: ..."), the
// section for an API body ("drives.rootfs.path_on_host: ..."), as JsonFields names fields.
nlohmann::json parse_json_document(std::string_view text, std::string_view what, std::string_view root);

// Reads the fields of one JSON object with typed, range-checked accessors. Unknown keys are
// refused on construction, so a typo is reported as such rather than as a missing field.
// Optional accessors treat an absent key like JSON null only where noted.
class JsonFields {
public:
    // Throws "<where>: expected an object, got <type>" or "<where>.<key>: unknown key (...)".
    JsonFields(const nlohmann::json& object, std::string where, const std::vector<std::string_view>& known_keys);

    // "<where>.<key>", or "<key>" at the top level (where == "").
    std::string path(std::string_view key) const;
    // The raw value, or nullptr if the key is absent.
    const nlohmann::json* find(std::string_view key) const;

    std::string required_string(std::string_view key) const;
    // Absent or null -> nullopt (Firecracker's Option<String>).
    std::optional<std::string> optional_string(std::string_view key) const;
    uint64_t required_uint(std::string_view key, uint64_t min, uint64_t max) const;
    // Absent -> nullopt; null is refused.
    std::optional<uint64_t> optional_uint(std::string_view key, uint64_t min, uint64_t max) const;
    // Absent -> nullopt; null is refused.
    std::optional<bool> optional_bool(std::string_view key) const;
    bool required_bool(std::string_view key) const;
    // A string that must be one of `choices`; absent -> nullopt; null is refused.
    std::optional<std::string> optional_choice(std::string_view key, const std::vector<std::string_view>& choices) const;

private:
    const nlohmann::json& object_;
    std::string where_;
};

// Describes a JSON value for "got ..." in error messages: "string", "null", "-1", "2.5".
std::string describe_json_value(const nlohmann::json& value);

}  // namespace embervm::vmm
