// A strict JSON reader for config documents and API bodies, and JsonFields' typed accessors.
// Duplicate keys are refused; syntax errors give the byte, line and column.
#include "vmm/config/json_reader.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "vmm/config/field_checks.h"

namespace embervm::vmm {

using nlohmann::json;

namespace {

std::string join_keys(const std::vector<std::string_view>& keys) {
    std::string out;
    for (const auto key : keys) {
        if (!out.empty()) out += ", ";
        out += key;
    }
    return out;
}

// Tracks the path of the value being parsed so duplicate object keys can be refused: nlohmann
// would silently keep the last one, serde (and so Firecracker) refuses them.
class DuplicateKeyCheck {
public:
    // `root`: the field path of the document itself ("" for a config file, "drives.rootfs" for
    // the body of PUT /drives/rootfs), so the error names the field as the section parsers do.
    explicit DuplicateKeyCheck(std::string_view root) : root_(root) {}

    bool operator()(int /*depth*/, json::parse_event_t event, json& parsed) {
        switch (event) {
            case json::parse_event_t::object_start:
            case json::parse_event_t::array_start:
                frames_.push_back(Frame{event == json::parse_event_t::object_start, {}, {}, 0});
                break;
            case json::parse_event_t::key: {
                Frame& top = frames_.back();
                top.key = parsed.get<std::string>();
                if (!top.keys.insert(top.key).second) throw ConfigError(fmt::format("{}: duplicate key", current_path()));
                break;
            }
            case json::parse_event_t::object_end:
            case json::parse_event_t::array_end:
                frames_.pop_back();
                element_done();
                break;
            case json::parse_event_t::value:
                element_done();
                break;
        }
        return true;
    }

private:
    struct Frame {
        bool is_object;
        std::set<std::string> keys;
        std::string key;   // objects: the current key
        size_t index;      // arrays: the current element
    };

    void element_done() {
        if (!frames_.empty() && !frames_.back().is_object) ++frames_.back().index;
    }

    std::string current_path() const {
        std::string out = root_;
        for (const Frame& f : frames_) {
            if (f.is_object) {
                if (!out.empty()) out += '.';
                out += f.key;
            } else {
                out += fmt::format("[{}]", f.index);
            }
        }
        return out;
    }

    std::string root_;
    std::vector<Frame> frames_;
};

// "parse error at line 1, column 5: syntax error while parsing ..." -> "syntax error while ...".
std::string syntax_error_detail(const json::parse_error& e) {
    std::string what = e.what();
    const auto at = what.find("parse error");
    if (at != std::string::npos) {
        const auto colon = what.find(": ", at);
        if (colon != std::string::npos) return what.substr(colon + 2);
    }
    return what;
}

// Line and column (1-based) of nlohmann's 1-based byte position (the offending character, or one
// past the end for a truncated document), for humans editing the file.
std::pair<size_t, size_t> line_and_column(std::string_view text, size_t byte) {
    size_t line = 1, column = 1;
    for (size_t i = 0; i + 1 < byte && i < text.size(); ++i) {
        if (text[i] == '\n') {
            ++line;
            column = 1;
        } else {
            ++column;
        }
    }
    return {line, column};
}

}  // namespace

json parse_json_document(std::string_view text, std::string_view what, std::string_view root) {
    try {
        return json::parse(text.begin(), text.end(), DuplicateKeyCheck{root});
    } catch (const json::parse_error& e) {
        const auto [line, column] = line_and_column(text, e.byte);
        throw ConfigError(fmt::format("{}: JSON syntax error at byte {} (line {}, column {}): {}", what, e.byte, line,
                                      column, syntax_error_detail(e)));
    } catch (const json::out_of_range& e) {
        // A number beyond a double ("1e999"): nlohmann reports it without a position.
        std::string_view detail = e.what();
        if (const size_t end = detail.find("] "); end != std::string_view::npos) detail.remove_prefix(end + 2);
        throw ConfigError(fmt::format("{}: JSON number out of range: {}", what, detail));
    }
}

std::string describe_json_value(const json& v) {
    switch (v.type()) {
        case json::value_t::null: return "null";
        case json::value_t::boolean: return "boolean";
        case json::value_t::string: return "string";
        case json::value_t::array: return "array";
        case json::value_t::object: return "object";
        case json::value_t::number_unsigned: return fmt::format("number {}", v.get<uint64_t>());
        case json::value_t::number_integer: {
            const auto n = v.get<int64_t>();
            return n < 0 ? fmt::format("negative number {}", n) : fmt::format("number {}", n);
        }
        case json::value_t::number_float: {
            // nlohmann stores integers beyond 64 bits as doubles.
            const double d = v.get<double>();
            if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) >= 0x1p63) {
                return fmt::format("number {} (too large)", v.dump());
            }
            return fmt::format("floating-point number {}", v.dump());
        }
        default: return "unsupported value";
    }
}

JsonFields::JsonFields(const json& object, std::string where, const std::vector<std::string_view>& known_keys)
    : object_(object), where_(std::move(where)) {
    if (!object_.is_object()) {
        throw field_error(where_.empty() ? "config" : where_,
                          fmt::format("expected an object, got {}", describe_json_value(object_)));
    }
    for (const auto& [key, value] : object_.items()) {
        if (std::find(known_keys.begin(), known_keys.end(), key) == known_keys.end()) {
            throw field_error(path(key), fmt::format("unknown key (known keys: {})", join_keys(known_keys)));
        }
    }
}

std::string JsonFields::path(std::string_view key) const {
    return where_.empty() ? std::string(key) : fmt::format("{}.{}", where_, key);
}

const json* JsonFields::find(std::string_view key) const {
    const auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
}

std::string JsonFields::required_string(std::string_view key) const {
    const json* v = find(key);
    if (v == nullptr) throw field_error(path(key), "required");
    if (!v->is_string()) throw field_error(path(key), fmt::format("expected a string, got {}", describe_json_value(*v)));
    return v->get<std::string>();
}

std::optional<std::string> JsonFields::optional_string(std::string_view key) const {
    const json* v = find(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    if (!v->is_string()) throw field_error(path(key), fmt::format("expected a string, got {}", describe_json_value(*v)));
    return v->get<std::string>();
}

uint64_t JsonFields::required_uint(std::string_view key, uint64_t min, uint64_t max) const {
    if (find(key) == nullptr) throw field_error(path(key), "required");
    return *optional_uint(key, min, max);
}

std::optional<uint64_t> JsonFields::optional_uint(std::string_view key, uint64_t min, uint64_t max) const {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    uint64_t n = 0;
    if (v->is_number_unsigned()) {
        n = v->get<uint64_t>();
    } else if (v->is_number_integer() && v->get<int64_t>() >= 0) {
        n = static_cast<uint64_t>(v->get<int64_t>());
    } else {
        throw field_error(path(key), fmt::format("expected an unsigned integer, got {}", describe_json_value(*v)));
    }
    check_range(path(key), n, min, max);
    return n;
}

bool JsonFields::required_bool(std::string_view key) const {
    if (!find(key)) throw field_error(path(key), "required (true or false)");
    return *optional_bool(key);
}

std::optional<std::string> JsonFields::optional_choice(std::string_view key,
                                                       const std::vector<std::string_view>& choices) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (v->is_string()) {
        const auto s = v->get<std::string>();
        if (std::find(choices.begin(), choices.end(), s) != choices.end()) return s;
    }
    const std::string got = v->is_string() ? fmt::format("\"{}\"", v->get<std::string>()) : describe_json_value(*v);
    throw field_error(path(key), fmt::format("expected one of {}, got {}", join_keys(choices), got));
}

std::optional<bool> JsonFields::optional_bool(std::string_view key) const {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) throw field_error(path(key), fmt::format("expected a boolean, got {}", describe_json_value(*v)));
    return v->get<bool>();
}

}  // namespace embervm::vmm
