// Encoding AML terms and resource descriptors (ACPI 6.5 sections 20.2 and 6.4).
#include "boot/acpi/aml.h"

#include <string>

#include <fmt/format.h>

#include "boot/acpi/checksum.h"
#include "vmm/sys/error.h"

namespace embervm::boot::acpi::aml {

namespace {

// AML opcodes (ACPI 6.5 section 20.3).
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0a;
constexpr uint8_t kWordPrefix = 0x0b;
constexpr uint8_t kDWordPrefix = 0x0c;
constexpr uint8_t kStringPrefix = 0x0d;
constexpr uint8_t kQWordPrefix = 0x0e;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kMethodOp = 0x14;
constexpr uint8_t kDualNamePrefix = 0x2e;
constexpr uint8_t kMultiNamePrefix = 0x2f;
constexpr uint8_t kExtOpPrefix = 0x5b;
constexpr uint8_t kDeviceOp = 0x82;  // after kExtOpPrefix
constexpr uint8_t kRootChar = 0x5c;
constexpr uint8_t kParentPrefixChar = 0x5e;
constexpr uint8_t kReturnOp = 0xa4;
constexpr uint8_t kNullName = 0x00;

// Resource descriptor tags (ACPI 6.5 section 6.4).
constexpr uint8_t kIrqTag = 0x22;          // small item 0x04, 2 data bytes
constexpr uint8_t kIoTag = 0x47;           // small item 0x08, 7 data bytes
constexpr uint8_t kEndTag = 0x79;          // small item 0x0f, 1 data byte (checksum)
constexpr uint8_t kMemory32FixedTag = 0x86;
constexpr uint8_t kExtendedIrqTag = 0x89;
constexpr uint8_t kDWordAddressSpaceTag = 0x87;
constexpr uint8_t kWordAddressSpaceTag = 0x88;
constexpr uint8_t kAddressSpaceMemory = 0;
constexpr uint8_t kAddressSpaceBusNumber = 2;
// General flags of an address space descriptor: producer (bit 0 clear), positive decode (bit 1
// clear), minimum and maximum fixed (bits 2 and 3).
constexpr uint8_t kProducerMinMaxFixed = 0x0c;
constexpr uint8_t kMemoryReadWrite = 0x01;
constexpr uint8_t kIoDecode16 = 0x01;
constexpr uint8_t kResourceConsumer = 0x01;

void push_le(Bytes& out, uint64_t value, unsigned bytes) {
    for (unsigned i = 0; i < bytes; i++) {
        out.push_back(static_cast<uint8_t>(value >> (8 * i)));
    }
}

// Opcode(s), PkgLength, then `contents`: the shape of every term with a package.
Bytes with_pkg_length(std::initializer_list<uint8_t> opcode, const Bytes& contents) {
    Bytes out(opcode);
    append(out, pkg_length(contents.size()));
    append(out, contents);
    return out;
}

Bytes named_term_list(std::string_view path, std::span<const Bytes> terms) {
    Bytes contents = name_string(path);
    for (const Bytes& t : terms) {
        append(contents, t);
    }
    return contents;
}

bool is_lead_name_char(char c) { return (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_lead_name_char(c) || (c >= '0' && c <= '9'); }

}  // namespace

void append(Bytes& out, const Bytes& more) { out.insert(out.end(), more.begin(), more.end()); }

Bytes encode_pkg_length(uint32_t value) {
    if (value > kMaxPkgLength) {
        throw Error(fmt::format("AML PkgLength {:#x} is above the largest encodable {:#x}", value, kMaxPkgLength));
    }
    if (value < 0x40) {
        return {static_cast<uint8_t>(value)};
    }
    const unsigned follow = value < (1u << 12) ? 1 : value < (1u << 20) ? 2 : 3;
    Bytes out{static_cast<uint8_t>((follow << 6) | (value & 0xf))};
    push_le(out, value >> 4, follow);
    return out;
}

Bytes pkg_length(size_t contents) {
    for (size_t own = 1; own <= 4; own++) {
        const size_t total = contents + own;
        if (total > kMaxPkgLength) {
            break;
        }
        Bytes encoded = encode_pkg_length(static_cast<uint32_t>(total));
        if (encoded.size() == own) {
            return encoded;
        }
    }
    throw Error(fmt::format("AML package of {} bytes is too long for a PkgLength", contents));
}

Bytes name_seg(std::string_view seg) {
    if (seg.empty() || seg.size() > 4 || !is_lead_name_char(seg[0])) {
        throw Error(fmt::format("AML NameSeg '{}' must be 1-4 characters starting with A-Z or '_'", seg));
    }
    Bytes out;
    for (char c : seg) {
        if (!is_name_char(c)) {
            throw Error(fmt::format("AML NameSeg '{}' may hold only A-Z, 0-9 and '_'", seg));
        }
        out.push_back(static_cast<uint8_t>(c));
    }
    out.resize(4, '_');
    return out;
}

Bytes name_string(std::string_view path) {
    Bytes out;
    if (!path.empty() && path[0] == '\\') {
        out.push_back(kRootChar);
        path.remove_prefix(1);
    } else {
        while (!path.empty() && path[0] == '^') {
            out.push_back(kParentPrefixChar);
            path.remove_prefix(1);
        }
    }
    std::vector<std::string_view> segs;
    while (!path.empty()) {
        const size_t dot = path.find('.');
        segs.push_back(path.substr(0, dot));
        path = dot == std::string_view::npos ? std::string_view{} : path.substr(dot + 1);
    }
    if (segs.size() > 255) {
        throw Error("AML NameString has more than 255 segments");
    }
    if (segs.empty()) {
        out.push_back(kNullName);
    } else if (segs.size() == 2) {
        out.push_back(kDualNamePrefix);
    } else if (segs.size() > 2) {
        out.push_back(kMultiNamePrefix);
        out.push_back(static_cast<uint8_t>(segs.size()));
    }
    for (std::string_view s : segs) {
        append(out, name_seg(s));
    }
    return out;
}

Bytes integer(uint64_t value) {
    if (value == 0) {
        return {kZeroOp};
    }
    if (value == 1) {
        return {kOneOp};
    }
    Bytes out;
    if (value <= 0xff) {
        out.push_back(kBytePrefix);
        push_le(out, value, 1);
    } else if (value <= 0xffff) {
        out.push_back(kWordPrefix);
        push_le(out, value, 2);
    } else if (value <= 0xffffffff) {
        out.push_back(kDWordPrefix);
        push_le(out, value, 4);
    } else {
        out.push_back(kQWordPrefix);
        push_le(out, value, 8);
    }
    return out;
}

Bytes string(std::string_view text) {
    Bytes out{kStringPrefix};
    for (char c : text) {
        if (c <= 0 || static_cast<unsigned char>(c) > 0x7f) {
            throw Error(fmt::format("AML string '{}' may hold only ASCII characters 0x01-0x7f", text));
        }
        out.push_back(static_cast<uint8_t>(c));
    }
    out.push_back(0);
    return out;
}

Bytes eisa_id(std::string_view id) {
    const auto bad = [&] { return Error(fmt::format("EISA ID '{}' must be 3 letters A-Z and 4 hex digits", id)); };
    if (id.size() != 7) {
        throw bad();
    }
    uint32_t letters = 0;
    for (size_t i = 0; i < 3; i++) {
        if (id[i] < 'A' || id[i] > 'Z') {
            throw bad();
        }
        letters = (letters << 5) | static_cast<uint32_t>(id[i] - 'A' + 1);
    }
    uint32_t product = 0;
    for (size_t i = 3; i < 7; i++) {
        const char c = id[i];
        const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (digit < 0) {
            throw bad();
        }
        product = (product << 4) | static_cast<uint32_t>(digit);
    }
    // Stored big-endian: the 15 letter bits in the first two bytes, then the product number.
    const uint32_t be = (letters << 16) | product;
    const uint32_t value = ((be >> 24) & 0xff) | ((be >> 8) & 0xff00) | ((be << 8) & 0xff0000) | (be << 24);
    Bytes out{kDWordPrefix};
    push_le(out, value, 4);
    return out;
}

Bytes name(std::string_view path, const Bytes& object) {
    Bytes out{kNameOp};
    append(out, name_string(path));
    append(out, object);
    return out;
}

Bytes scope(std::string_view path, std::initializer_list<Bytes> terms) {
    return scope(path, std::span<const Bytes>(terms.begin(), terms.size()));
}

Bytes scope(std::string_view path, std::span<const Bytes> terms) {
    return with_pkg_length({kScopeOp}, named_term_list(path, terms));
}

Bytes device(std::string_view path, std::initializer_list<Bytes> terms) {
    return device(path, std::span<const Bytes>(terms.begin(), terms.size()));
}

Bytes device(std::string_view path, std::span<const Bytes> terms) {
    return with_pkg_length({kExtOpPrefix, kDeviceOp}, named_term_list(path, terms));
}

Bytes method(std::string_view path, unsigned args, MethodSerialization serialization,
             std::initializer_list<Bytes> terms, unsigned sync_level) {
    if (args > 7 || sync_level > 15) {
        throw Error(fmt::format("AML method {}: {} arguments (at most 7), sync level {} (at most 15)", path, args,
                                sync_level));
    }
    Bytes contents = name_string(path);
    contents.push_back(static_cast<uint8_t>(args | (static_cast<unsigned>(serialization) << 3) | (sync_level << 4)));
    for (const Bytes& t : terms) {
        append(contents, t);
    }
    return with_pkg_length({kMethodOp}, contents);
}

Bytes return_value(const Bytes& value) {
    Bytes out{kReturnOp};
    append(out, value);
    return out;
}

Bytes package(std::initializer_list<Bytes> elements) {
    if (elements.size() > 255) {
        throw Error(fmt::format("AML package of {} elements: at most 255", elements.size()));
    }
    Bytes contents{static_cast<uint8_t>(elements.size())};
    for (const Bytes& e : elements) {
        append(contents, e);
    }
    return with_pkg_length({kPackageOp}, contents);
}

Bytes buffer(std::span<const uint8_t> data) {
    Bytes contents = integer(data.size());
    contents.insert(contents.end(), data.begin(), data.end());
    return with_pkg_length({kBufferOp}, contents);
}

Bytes memory32_fixed(bool read_write, uint32_t base, uint32_t length) {
    Bytes out{kMemory32FixedTag};
    push_le(out, 9, 2);  // data bytes after the 3-byte header
    out.push_back(read_write ? 1 : 0);
    push_le(out, base, 4);
    push_le(out, length, 4);
    return out;
}

Bytes io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length) {
    Bytes out{kIoTag, kIoDecode16};
    push_le(out, min, 2);
    push_le(out, max, 2);
    out.push_back(alignment);
    out.push_back(length);
    return out;
}

Bytes irq_no_flags(std::initializer_list<unsigned> irqs) {
    uint16_t mask = 0;
    for (unsigned irq : irqs) {
        if (irq > 15) {
            throw Error(fmt::format("IRQNoFlags: IRQ {} is not an ISA IRQ 0-15", irq));
        }
        mask = static_cast<uint16_t>(mask | (1u << irq));
    }
    Bytes out{kIrqTag};
    push_le(out, mask, 2);
    return out;
}

Bytes word_bus_number(uint16_t min, uint16_t max) {
    if (min > max) {
        throw Error(fmt::format("WordBusNumber: bus range {}-{} is empty", min, max));
    }
    Bytes out{kWordAddressSpaceTag};
    push_le(out, 13, 2);  // data bytes after the 3-byte header
    out.push_back(kAddressSpaceBusNumber);
    out.push_back(kProducerMinMaxFixed);
    out.push_back(0);     // type-specific flags: none for bus numbers
    push_le(out, 0, 2);   // granularity
    push_le(out, min, 2);
    push_le(out, max, 2);
    push_le(out, 0, 2);   // translation offset
    push_le(out, uint32_t{max} - min + 1, 2);
    return out;
}

Bytes dword_memory(MemoryCaching caching, uint32_t base, uint32_t length) {
    if (length == 0 || uint64_t{base} + length > (uint64_t{1} << 32)) {
        throw Error(fmt::format("DWordMemory: window [{:#x}, +{:#x}) must be non-empty and below 4 GiB", base, length));
    }
    Bytes out{kDWordAddressSpaceTag};
    push_le(out, 23, 2);  // data bytes after the 3-byte header
    out.push_back(kAddressSpaceMemory);
    out.push_back(kProducerMinMaxFixed);
    out.push_back(static_cast<uint8_t>(kMemoryReadWrite | (static_cast<unsigned>(caching) << 1)));
    push_le(out, 0, 4);   // granularity
    push_le(out, base, 4);
    push_le(out, uint64_t{base} + length - 1, 4);
    push_le(out, 0, 4);   // translation offset
    push_le(out, length, 4);
    return out;
}

Bytes extended_interrupt(Trigger trigger, Polarity polarity, Sharing sharing, std::initializer_list<uint32_t> gsis) {
    if (gsis.size() == 0 || gsis.size() > 255) {
        throw Error(fmt::format("Interrupt descriptor with {} interrupts: 1 to 255", gsis.size()));
    }
    Bytes out{kExtendedIrqTag};
    push_le(out, 2 + 4 * gsis.size(), 2);
    out.push_back(static_cast<uint8_t>(kResourceConsumer | (static_cast<unsigned>(trigger) << 1) |
                                       (static_cast<unsigned>(polarity) << 2) |
                                       (static_cast<unsigned>(sharing) << 3)));
    out.push_back(static_cast<uint8_t>(gsis.size()));
    for (uint32_t gsi : gsis) {
        push_le(out, gsi, 4);
    }
    return out;
}

Bytes resource_template(std::initializer_list<Bytes> descriptors) {
    Bytes data;
    for (const Bytes& d : descriptors) {
        append(data, d);
    }
    data.push_back(kEndTag);
    data.push_back(0);
    fix_checksum(data, data.size() - 1);
    return buffer(data);
}

}  // namespace embervm::boot::acpi::aml
