// The byte encoding of saved state (snapshots): a StateWriter appends fixed-width little-endian
// integers, byte strings and length-prefixed strings to a buffer; a StateReader takes them back
// out of a span, checking every length against what is left, so a truncated or corrupt snapshot
// ends in a StateError naming the field, never in a read past the end.
//
// Every component (a vCPU, the irqchip, a device and its transport) encodes its own state with
// these and puts a version number of its own first; the snapshot file around them
// (vmm/snapshot/) adds the framing and the checksum.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "vmm/sys/error.h"

namespace embervm {

namespace detail {
template <typename T>
struct StateInteger {
    using type = T;
};
template <typename T>
    requires std::is_enum_v<T>
struct StateInteger<T> {
    using type = std::underlying_type_t<T>;
};
// The unsigned type of an integer or an enum's underlying type: what goes on the wire.
template <typename T>
using StateUnsigned = std::make_unsigned_t<typename StateInteger<T>::type>;
}  // namespace detail

// A snapshot that cannot be decoded: truncated, corrupt, or from an incompatible version.
class StateError : public Error {
public:
    using Error::Error;
};

class StateWriter {
public:
    template <typename T>
        requires std::is_integral_v<T> || std::is_enum_v<T>
    void put(T value) {
        using U = detail::StateUnsigned<T>;
        auto v = static_cast<U>(value);
        for (size_t i = 0; i < sizeof(U); i++) {
            buf_.push_back(static_cast<uint8_t>(v >> (8 * i)));
        }
    }
    void put_bool(bool b) { put<uint8_t>(b ? 1 : 0); }
    // Raw bytes, no length (the reader must know the size: a struct of a fixed layout).
    void put_bytes(std::span<const uint8_t> bytes) { buf_.insert(buf_.end(), bytes.begin(), bytes.end()); }
    // A trivially copyable struct (a KVM state struct) as its bytes, preceded by its size so a
    // changed layout is detected on load.
    template <typename T>
        requires std::is_trivially_copyable_v<T>
    void put_struct(const T& value) {
        put<uint32_t>(sizeof(T));
        put_bytes({reinterpret_cast<const uint8_t*>(&value), sizeof(T)});
    }
    // A u32 length, then the bytes.
    void put_blob(std::span<const uint8_t> bytes) {
        put<uint32_t>(static_cast<uint32_t>(bytes.size()));
        put_bytes(bytes);
    }
    void put_string(std::string_view s) { put_blob({reinterpret_cast<const uint8_t*>(s.data()), s.size()}); }

    const std::vector<uint8_t>& bytes() const { return buf_; }
    std::vector<uint8_t> take() { return std::move(buf_); }

private:
    std::vector<uint8_t> buf_;
};

class StateReader {
public:
    // `what` names the component in errors: "vcpu0", "virtio-blk rootfs".
    StateReader(std::span<const uint8_t> bytes, std::string what) : data_(bytes), what_(std::move(what)) {}

    template <typename T>
        requires std::is_integral_v<T> || std::is_enum_v<T>
    T get(std::string_view field) {
        using U = detail::StateUnsigned<T>;
        auto raw = take(sizeof(U), field);
        U v = 0;
        for (size_t i = 0; i < sizeof(U); i++) {
            v |= static_cast<U>(static_cast<U>(raw[i]) << (8 * i));
        }
        return static_cast<T>(v);
    }
    bool get_bool(std::string_view field) {
        auto b = get<uint8_t>(field);
        if (b > 1) fail(field, fmt::format("{} is not a boolean", b));
        return b == 1;
    }
    std::span<const uint8_t> get_bytes(size_t n, std::string_view field) { return take(n, field); }
    template <typename T>
        requires std::is_trivially_copyable_v<T>
    T get_struct(std::string_view field) {
        auto size = get<uint32_t>(field);
        if (size != sizeof(T)) fail(field, fmt::format("size {} where {} was expected", size, sizeof(T)));
        T value;
        std::memcpy(&value, take(sizeof(T), field).data(), sizeof(T));
        return value;
    }
    std::span<const uint8_t> get_blob(std::string_view field) { return take(get<uint32_t>(field), field); }
    std::string get_string(std::string_view field) {
        auto b = get_blob(field);
        return {reinterpret_cast<const char*>(b.data()), b.size()};
    }
    // A version this reader understands: `max` is the newest the code writes.
    uint32_t get_version(uint32_t max) {
        auto v = get<uint32_t>("version");
        if (v == 0 || v > max) fail("version", fmt::format("{} is not supported (this embervm reads 1 to {})", v, max));
        return v;
    }

    size_t remaining() const { return data_.size() - pos_; }
    // Everything read: trailing bytes mean the writer and the reader disagree.
    void expect_end() const {
        if (remaining() != 0) {
            throw StateError(fmt::format("{}: {} unexpected bytes at the end of the saved state", what_, remaining()));
        }
    }
    [[noreturn]] void fail(std::string_view field, std::string_view why) const {
        throw StateError(fmt::format("{}: saved state field '{}': {}", what_, field, why));
    }

private:
    std::span<const uint8_t> take(size_t n, std::string_view field) {
        if (n > remaining()) fail(field, fmt::format("truncated ({} bytes needed, {} left)", n, remaining()));
        auto s = data_.subspan(pos_, n);
        pos_ += n;
        return s;
    }

    std::span<const uint8_t> data_;
    size_t pos_ = 0;
    std::string what_;
};

}  // namespace embervm
