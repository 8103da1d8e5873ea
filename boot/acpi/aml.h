// A small builder of AML byte code and _CRS resource descriptors: what embervm's DSDT is made of.
//
// AML is the ACPI Machine Language (ACPI 6.5 chapter 20); resource descriptors are in 6.4.
//
// Every function returns the encoded bytes of one term; terms nest by passing the bytes of
// their children. Invalid input (a bad name, a too long package) throws Error: the tables are
// built by the VMM from its own configuration, never from guest data.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string_view>
#include <vector>

namespace embervm::boot::acpi::aml {

using Bytes = std::vector<uint8_t>;

// The largest value a PkgLength can encode (4 bytes: 4 + 8 + 8 + 8 bits).
inline constexpr uint32_t kMaxPkgLength = (1u << 28) - 1;

// Encodes `value` (which counts the PkgLength bytes themselves and everything after them) as
// a PkgLength: one byte up to 63, else a lead byte holding the count of following bytes in
// bits 7-6 and the low nibble in bits 3-0, followed by 1 (up to 4095), 2 (up to 2^20-1) or 3
// (up to 2^28-1) bytes holding the rest, least significant first. Throws above kMaxPkgLength.
Bytes encode_pkg_length(uint32_t value);

// The PkgLength for `contents` bytes following it: the shortest encoding whose value (its own
// length plus `contents`) it can hold.
Bytes pkg_length(size_t contents);

// A NameSeg: 4 characters, the first A-Z or '_', the others A-Z, 0-9 or '_'; shorter names are
// padded with '_' ("_SB" becomes "_SB_").
Bytes name_seg(std::string_view seg);

// A NameString: optional root ('\') or parent ('^') prefixes, then NameSegs separated by '.':
// "\_SB.COM1" is RootChar DualNamePrefix "_SB_" "COM1"; 3 or more segments use
// MultiNamePrefix, none the NullName.
Bytes name_string(std::string_view path);

// An integer as ZeroOp (0), OneOp (1) or the smallest of BytePrefix, WordPrefix, DWordPrefix
// and QWordPrefix that holds it.
Bytes integer(uint64_t value);

// A String: StringPrefix, ASCII characters 0x01-0x7f, NUL.
Bytes string(std::string_view text);

// A compressed EISA ID ("PNP0501": three letters A-Z and four hex digits) as the DWord integer
// ASL's EisaId() produces.
Bytes eisa_id(std::string_view id);

// Name(path, object).
Bytes name(std::string_view path, const Bytes& object);

// Scope(path) { terms }.
Bytes scope(std::string_view path, std::initializer_list<Bytes> terms);
Bytes scope(std::string_view path, std::span<const Bytes> terms);

// Device(path) { terms }.
Bytes device(std::string_view path, std::initializer_list<Bytes> terms);
Bytes device(std::string_view path, std::span<const Bytes> terms);

enum class MethodSerialization : uint8_t { NotSerialized = 0, Serialized = 1 };

// Method(path, args, serialization, sync_level) { terms }: at most 7 arguments, sync level 0-15.
Bytes method(std::string_view path, unsigned args, MethodSerialization serialization,
             std::initializer_list<Bytes> terms, unsigned sync_level = 0);

// Return(value).
Bytes return_value(const Bytes& value);

// Package() { elements }: at most 255 elements, each a data object (integer, string, package).
Bytes package(std::initializer_list<Bytes> elements);

// Buffer(size) { data }, its size the length of `data`.
Bytes buffer(std::span<const uint8_t> data);

// --- Resource descriptors, for resource_template() ---

// Memory32Fixed(ReadWrite or ReadOnly, base, length): large item 0x86, 12 bytes.
Bytes memory32_fixed(bool read_write, uint32_t base, uint32_t length);

// IO(Decode16, min, max, alignment, length): small item 0x47, 8 bytes.
Bytes io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length);

// IRQNoFlags() { irqs }: small item 0x22 with a 16-bit mask of ISA IRQs 0-15 (edge, active high).
Bytes irq_no_flags(std::initializer_list<unsigned> irqs);

// WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, max - min + 1):
// the bus numbers a host bridge decodes, a Word Address Space descriptor (large item 0x88,
// 16 bytes, resource type 2). Throws if min > max.
Bytes word_bus_number(uint16_t min, uint16_t max);

enum class MemoryCaching : uint8_t { NonCacheable = 0, Cacheable = 1, WriteCombining = 2, Prefetchable = 3 };

// DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, caching, ReadWrite, 0, base,
// base + length - 1, 0, length): a memory window a host bridge forwards to its bus, a DWord
// Address Space descriptor (large item 0x87, 26 bytes, resource type 0). Throws for an empty
// window or one that does not end below 4 GiB.
Bytes dword_memory(MemoryCaching caching, uint32_t base, uint32_t length);

enum class Trigger : uint8_t { Level = 0, Edge = 1 };
enum class Polarity : uint8_t { ActiveHigh = 0, ActiveLow = 1 };
enum class Sharing : uint8_t { Exclusive = 0, Shared = 1 };

// Interrupt(ResourceConsumer, trigger, polarity, sharing) { gsis }: the Extended Interrupt
// descriptor, large item 0x89, 5 + 4 * count bytes, 1 to 255 interrupts.
Bytes extended_interrupt(Trigger trigger, Polarity polarity, Sharing sharing, std::initializer_list<uint32_t> gsis);

// ResourceTemplate() { descriptors }: a Buffer holding the descriptors and the End Tag (0x79)
// with the checksum that makes all the template's bytes sum to 0.
Bytes resource_template(std::initializer_list<Bytes> descriptors);

// Appends `more` to `out`.
void append(Bytes& out, const Bytes& more);

}  // namespace embervm::boot::acpi::aml
