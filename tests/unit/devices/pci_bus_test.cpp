// Tests for devices/pci: configuration space (header, write masks, BAR sizing, capability
// list), the 0xCF8/0xCFC port mechanism, the ECAM window and BAR decoding in the window
// (relocation, overlap, BARs outside the window, memory space disabled), and their snapshots.
#include <catch2/catch.hpp>

#include <array>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "devices/pci/config_space.h"
#include "devices/pci/pci_bus.h"
#include "vmm/sys/state_stream.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_pci_bus_test {

using namespace embervm::devices::pci;

namespace {

constexpr uint64_t kWindow = 0xc0000000;
constexpr uint64_t kWindowSize = 0x10000000;

// A function with one 64-bit BAR (BAR 0) of `size` bytes that records BAR accesses.
class TestFunction : public PciFunction {
public:
    explicit TestFunction(uint64_t size) : config_(PciIdentity{0x1af4, 0x1042, 0x018000}) {
        config_.add_memory_bar64(0, size);
    }
    std::string name() const override { return "test"; }
    void config_read(uint16_t offset, std::span<uint8_t> data) override { config_.read(offset, data); }
    void config_write(uint16_t offset, std::span<const uint8_t> data) override { config_.write(offset, data); }
    std::array<std::optional<uint64_t>, kNumBars> bar_addresses() const override {
        std::array<std::optional<uint64_t>, kNumBars> a{};
        for (unsigned b = 0; b < kNumBars; ++b) a[b] = config_.bar_address(b);
        return a;
    }
    std::array<uint64_t, kNumBars> bar_sizes() const override {
        std::array<uint64_t, kNumBars> s{};
        for (unsigned b = 0; b < kNumBars; ++b) s[b] = config_.bar_size(b);
        return s;
    }
    void assign_bar(unsigned bar, uint64_t address) override { config_.set_bar_address(bar, address); }
    void bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) override {
        reads.push_back({bar, offset});
        std::fill(data.begin(), data.end(), uint8_t{0xab});
    }
    void bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> /*data*/) override {
        writes.push_back({bar, offset});
    }
    void bar_decoded(unsigned bar, std::optional<uint64_t> address) override { moves.push_back({bar, address}); }

    struct Access {
        unsigned bar;
        uint64_t offset;
    };
    std::vector<Access> reads, writes;
    std::vector<std::pair<unsigned, std::optional<uint64_t>>> moves;

private:
    PciConfigSpace config_;
};

uint32_t cfg_read32(PciRoot& root, uint8_t slot, uint16_t reg) {
    auto io = root.config_io();
    const uint32_t addr = 0x80000000u | (uint32_t{slot} << 11) | reg;
    io->write(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&addr), 4));
    uint32_t v = 0;
    io->read(4, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    return v;
}

void cfg_write32(PciRoot& root, uint8_t slot, uint16_t reg, uint32_t value) {
    auto io = root.config_io();
    const uint32_t addr = 0x80000000u | (uint32_t{slot} << 11) | reg;
    io->write(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&addr), 4));
    io->write(4, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&value), 4));
}

uint32_t mmio_read32(PciRoot& root, uint64_t addr) {
    uint32_t v = 0;
    root.mmio_window()->read(addr - kWindow, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    return v;
}

}  // namespace

TEST_CASE("PCI config space: identity, read-only header, capability list", "[pci]") {
    PciConfigSpace c(PciIdentity{0x1af4, 0x1041, 0x020000, 1, 0x1af4, 1});
    CHECK(c.read32(reg::kVendorId) == 0x10411af4);
    CHECK(c.read8(reg::kRevision) == 1);
    CHECK(c.read8(reg::kClassCode + 2) == 0x02);
    CHECK((c.read16(reg::kStatus) & kStatusCapabilitiesList) == 0);
    // Vendor and device ID are read-only.
    const std::array<uint8_t, 4> ones{0xff, 0xff, 0xff, 0xff};
    c.write(reg::kVendorId, ones);
    CHECK(c.read32(reg::kVendorId) == 0x10411af4);
    // Only memory space, bus master and interrupt disable can be set in the command register.
    c.write(reg::kCommand, std::span(ones).first(2));
    CHECK(c.read16(reg::kCommand) == (command::kMemorySpace | command::kBusMaster | command::kInterruptDisable));

    const std::array<uint8_t, 2> body1{1, 2};
    const std::array<uint8_t, 5> body2{3, 4, 5, 6, 7};
    const std::array<uint8_t, 5> mask2{0, 0xff, 0, 0, 0x0f};
    const uint16_t a = c.add_capability(cap_id::kVendorSpecific, body1);
    const uint16_t b = c.add_capability(cap_id::kMsix, body2, mask2);
    CHECK((c.read16(reg::kStatus) & kStatusCapabilitiesList) != 0);
    // Walk the list as a driver does.
    std::vector<std::pair<uint8_t, uint16_t>> seen;
    for (uint16_t p = c.read8(reg::kCapabilitiesPointer); p != 0; p = c.read8(p + 1)) {
        seen.emplace_back(c.read8(p), p);
        REQUIRE(seen.size() < 10);
    }
    REQUIRE(seen.size() == 2);
    CHECK(seen[0] == std::make_pair(cap_id::kVendorSpecific, a));
    CHECK(seen[1] == std::make_pair(cap_id::kMsix, b));
    CHECK(a == 0x40);
    CHECK(b % 4 == 0);
    // Capability bytes obey their masks.
    c.write(b + 2, ones);
    c.write(b + 6, std::span(ones).first(1));
    CHECK(c.read8(b + 2) == 3);
    CHECK(c.read8(b + 3) == 0xff);
    CHECK(c.read8(b + 6) == 0x0f);
    // A capability that does not fit is refused.
    std::vector<uint8_t> big(200);
    CHECK_THROWS_AS(c.add_capability(cap_id::kVendorSpecific, big), std::length_error);
}

TEST_CASE("PCI config space: 64-bit BAR sizing and programming", "[pci]") {
    PciConfigSpace c(PciIdentity{0x1af4, 0x1042, 0});
    c.add_memory_bar64(0, 0x4000);
    CHECK(c.read32(reg::kBar0) == kBarMem64);
    CHECK(c.bar_size(0) == 0x4000);
    CHECK(c.bar_size(1) == 0);
    // Sizing: write all ones to both halves, read back the size mask with the type bits.
    const std::array<uint8_t, 4> ones{0xff, 0xff, 0xff, 0xff};
    c.write(reg::kBar0, ones);
    c.write(reg::kBar0 + 4, ones);
    CHECK(c.read32(reg::kBar0) == (0xffffc000u | kBarMem64));
    CHECK(c.read32(reg::kBar0 + 4) == 0xffffffffu);
    // Unimplemented BARs and the expansion ROM read zero whatever is written.
    c.write(reg::kBar0 + 8, ones);
    CHECK(c.read32(reg::kBar0 + 8) == 0);
    c.write(0x30, ones);
    CHECK(c.read32(0x30) == 0);
    // Programming an address drops the bits below the size.
    c.set_bar_address(0, 0x1'2345'6789);
    CHECK(c.bar_address(0) == 0x1'2345'4000);
    CHECK_THROWS_AS(c.add_memory_bar64(5, 0x1000), std::invalid_argument);
    CHECK_THROWS_AS(c.add_memory_bar64(2, 0x1800), std::invalid_argument);
    CHECK_THROWS_AS(c.add_memory_bar64(1, 0x1000), std::invalid_argument);  // BAR 1 is BAR 0's upper half
}

TEST_CASE("PCI root: port mechanism reaches the host bridge and devices", "[pci]") {
    PciRoot root(kWindow, kWindowSize);
    auto f = std::make_shared<TestFunction>(0x4000);
    const uint8_t slot = root.add(f);
    CHECK(slot == 1);
    CHECK(cfg_read32(root, 0, reg::kVendorId) == 0x0d578086);
    CHECK((cfg_read32(root, 0, 0x08) >> 8) == 0x060000);  // host bridge class
    CHECK(cfg_read32(root, 1, reg::kVendorId) == 0x10421af4);
    // Empty slots, other functions, other buses and a disabled address read all ones.
    CHECK(cfg_read32(root, 2, reg::kVendorId) == 0xffffffff);
    auto io = root.config_io();
    uint32_t addr = 0x80000000u | (1u << 11) | (1u << 8);  // 00:01.1
    io->write(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&addr), 4));
    uint32_t v = 0;
    io->read(4, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    CHECK(v == 0xffffffff);
    addr = 0x80010000u | (1u << 11);  // bus 1
    io->write(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&addr), 4));
    io->read(4, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    CHECK(v == 0xffffffff);
    addr = 1u << 11;  // enable bit clear
    io->write(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&addr), 4));
    io->read(4, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    CHECK(v == 0xffffffff);
    // The address register reads back what was written, without the reserved low bits.
    addr = 0x80000803u;
    io->write(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&addr), 4));
    io->read(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    CHECK(v == 0x80000800u);
    // Byte and word accesses in the data window reach the selected bytes.
    uint16_t w = 0;
    io->read(6, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&w), 2));
    CHECK(w == 0x1042);
    // An access that leaves the data dword is refused.
    io->read(7, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&w), 2));
    CHECK(w == 0xffff);
}

TEST_CASE("PCI root: BARs are decoded where the driver puts them, and nowhere unsafe", "[pci]") {
    PciRoot root(kWindow, kWindowSize);
    auto f1 = std::make_shared<TestFunction>(0x4000);
    auto f2 = std::make_shared<TestFunction>(0x1000);
    REQUIRE(root.add(f1) == 1);
    REQUIRE(root.add(f2) == 2);
    const uint64_t bar1 = cfg_read32(root, 1, reg::kBar0) & ~0xfu;
    const uint64_t bar2 = cfg_read32(root, 2, reg::kBar0) & ~0xfu;
    CHECK(bar1 == kWindow);
    CHECK(bar2 == kWindow + 0x4000);
    // Memory space is off until the driver enables it.
    CHECK_FALSE(root.decoded_bar(1, 0));
    CHECK(mmio_read32(root, bar1) == 0xffffffff);
    CHECK(f1->reads.empty());
    cfg_write32(root, 1, reg::kCommand, command::kMemorySpace);
    cfg_write32(root, 2, reg::kCommand, command::kMemorySpace);
    CHECK(root.decoded_bar(1, 0) == bar1);
    REQUIRE(f1->moves.size() == 1);
    CHECK(f1->moves[0].second == bar1);
    CHECK(mmio_read32(root, bar1 + 0x10) == 0xabababab);
    REQUIRE(f1->reads.size() == 1);
    CHECK(f1->reads[0].offset == 0x10);

    SECTION("relocation: the handlers move with the BAR") {
        const uint64_t moved = kWindow + 0x100000;
        cfg_write32(root, 1, reg::kBar0, static_cast<uint32_t>(moved));
        CHECK(root.decoded_bar(1, 0) == moved);
        CHECK(f1->moves.back().second == moved);
        CHECK(mmio_read32(root, bar1 + 0x10) == 0xffffffff);
        CHECK(mmio_read32(root, moved + 0x20) == 0xabababab);
        CHECK(f1->reads.back().offset == 0x20);
    }
    SECTION("a BAR moved over another BAR: neither is decoded") {
        cfg_write32(root, 2, reg::kBar0, static_cast<uint32_t>(bar1 + 0x1000));
        CHECK_FALSE(root.decoded_bar(1, 0));
        CHECK_FALSE(root.decoded_bar(2, 0));
        CHECK(mmio_read32(root, bar1 + 0x1000) == 0xffffffff);
        CHECK(f1->reads.size() == 1);
        CHECK(f2->reads.empty());
        CHECK(f1->moves.back().second == std::nullopt);
        // Moved apart again, both answer.
        cfg_write32(root, 2, reg::kBar0, static_cast<uint32_t>(bar2));
        CHECK(root.decoded_bar(1, 0) == bar1);
        CHECK(root.decoded_bar(2, 0) == bar2);
    }
    SECTION("a BAR outside the window (over RAM, above 4 GiB) is not decoded") {
        cfg_write32(root, 1, reg::kBar0, 0x100000);  // guest RAM at 1 MiB
        CHECK_FALSE(root.decoded_bar(1, 0));
        cfg_write32(root, 1, reg::kBar0, static_cast<uint32_t>(kWindow + kWindowSize));  // just past the end
        CHECK_FALSE(root.decoded_bar(1, 0));
        cfg_write32(root, 1, reg::kBar0, static_cast<uint32_t>(kWindow + kWindowSize - 0x4000));  // the last slot
        CHECK(root.decoded_bar(1, 0) == kWindow + kWindowSize - 0x4000);
        cfg_write32(root, 1, reg::kBar0, static_cast<uint32_t>(kWindow));
        cfg_write32(root, 1, reg::kBar0 + 4, 1);  // 4 GiB above
        CHECK_FALSE(root.decoded_bar(1, 0));
        cfg_write32(root, 1, reg::kBar0 + 4, 0);
        CHECK(root.decoded_bar(1, 0) == kWindow);
    }
    SECTION("an access straddling the BAR's end is refused") {
        uint64_t v = 0;
        CHECK_FALSE(root.mmio_read(bar2 + 0x1000 - 4, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 8)));
    }
    SECTION("disabling memory space stops decoding") {
        cfg_write32(root, 1, reg::kCommand, 0);
        CHECK_FALSE(root.decoded_bar(1, 0));
        CHECK(f1->moves.back().second == std::nullopt);
    }
}

TEST_CASE("PCI root: slots and window space run out with an error", "[pci]") {
    PciRoot root(kWindow, 0x10000);
    REQUIRE(root.add(std::make_shared<TestFunction>(0x8000)) == 1);
    CHECK_THROWS(root.add(std::make_shared<TestFunction>(0x10000)));
    PciRoot big(kWindow, kWindowSize);
    for (unsigned i = 1; i < kSlots; ++i) big.add(std::make_shared<TestFunction>(0x1000));
    CHECK_THROWS(big.add(std::make_shared<TestFunction>(0x1000)));
}

namespace {

uint64_t ecam_offset(uint8_t slot, uint8_t function, uint16_t reg) {
    return (uint64_t{slot} << 15) | (uint64_t{function} << 12) | reg;
}

template <typename T>
T ecam_read(PciRoot& root, uint64_t offset) {
    T v{};
    root.ecam()->read(offset, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), sizeof(T)));
    return v;
}

template <typename T>
void ecam_write(PciRoot& root, uint64_t offset, T value) {
    root.ecam()->write(offset, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&value), sizeof(T)));
}

}  // namespace

TEST_CASE("PCI root: ECAM and the port mechanism reach the same registers", "[pci]") {
    PciRoot root(kWindow, kWindowSize);
    auto f = std::make_shared<TestFunction>(0x4000);
    REQUIRE(root.add(f) == 1);
    CHECK(kEcamBusSize == 0x100000);
    for (uint8_t slot : {0, 1}) {
        for (uint16_t reg = 0; reg < kConfigSize; reg += 4) {
            CHECK(ecam_read<uint32_t>(root, ecam_offset(slot, 0, reg)) == cfg_read32(root, slot, reg));
        }
    }
    // 1-, 2- and 4-byte reads see the same bytes.
    CHECK(ecam_read<uint16_t>(root, ecam_offset(1, 0, 2)) == 0x1042);
    CHECK(ecam_read<uint8_t>(root, ecam_offset(1, 0, 1)) == 0x1a);
    // A write through ECAM is seen through the ports, and the other way round.
    ecam_write<uint32_t>(root, ecam_offset(1, 0, reg::kBar0), 0xc8000000u);
    CHECK(cfg_read32(root, 1, reg::kBar0) == (0xc8000000u | kBarMem64));
    cfg_write32(root, 1, reg::kBar0, 0xc9000000u);
    CHECK(ecam_read<uint32_t>(root, ecam_offset(1, 0, reg::kBar0)) == (0xc9000000u | kBarMem64));
    // ECAM command writes change the decoding as port writes do.
    ecam_write<uint16_t>(root, ecam_offset(1, 0, reg::kCommand), command::kMemorySpace);
    CHECK(root.decoded_bar(1, 0) == 0xc9000000u);
    ecam_write<uint8_t>(root, ecam_offset(1, 0, reg::kCommand), 0);
    CHECK(root.decoded_bar(1, 0) == std::nullopt);
}

TEST_CASE("PCI root: ECAM absent functions, extended space and bad accesses", "[pci]") {
    PciRoot root(kWindow, kWindowSize);
    REQUIRE(root.add(std::make_shared<TestFunction>(0x4000)) == 1);
    // Absent slots and functions read all ones, whatever the register.
    CHECK(ecam_read<uint32_t>(root, ecam_offset(2, 0, 0)) == 0xffffffff);
    CHECK(ecam_read<uint32_t>(root, ecam_offset(1, 1, 0)) == 0xffffffff);
    CHECK(ecam_read<uint32_t>(root, ecam_offset(31, 7, 0xffc)) == 0xffffffff);
    CHECK(ecam_read<uint32_t>(root, ecam_offset(2, 0, 0x100)) == 0xffffffff);
    // A present function's extended space reads zeros and ignores writes.
    CHECK(ecam_read<uint32_t>(root, ecam_offset(1, 0, 0x100)) == 0);
    CHECK(ecam_read<uint32_t>(root, ecam_offset(0, 0, 0xffc)) == 0);
    ecam_write<uint32_t>(root, ecam_offset(1, 0, 0x100), 0x12345678u);
    CHECK(ecam_read<uint32_t>(root, ecam_offset(1, 0, 0x100)) == 0);
    // Unaligned and 8-byte accesses read all ones and write nothing.
    CHECK(ecam_read<uint16_t>(root, ecam_offset(1, 0, 1)) == 0xffff);
    CHECK(ecam_read<uint32_t>(root, ecam_offset(1, 0, 2)) == 0xffffffff);
    CHECK(ecam_read<uint64_t>(root, ecam_offset(1, 0, 0)) == ~uint64_t{0});
    const uint32_t bar = cfg_read32(root, 1, reg::kBar0);
    ecam_write<uint32_t>(root, ecam_offset(1, 0, reg::kBar0 + 2), 0xffffffffu);
    ecam_write<uint64_t>(root, ecam_offset(1, 0, reg::kBar0), 0xffffffffffffffffu);
    ecam_write<uint16_t>(root, ecam_offset(1, 0, reg::kBar0 + 1), 0xffff);
    CHECK(cfg_read32(root, 1, reg::kBar0) == bar);
    CHECK(cfg_read32(root, 1, reg::kBar0 + 4) == 0);
    // Beyond the bus's 1 MiB nothing is reached.
    CHECK(ecam_read<uint32_t>(root, kEcamBusSize) == 0xffffffff);
}

// ---------------------------------------------------------------------------------------
// Snapshots: a function's configuration space, the root's latch and host bridge, decoding

namespace {

// The StateError message of `fn`, or "" when it did not throw one.
template <typename Fn>
std::string state_error(Fn&& fn) {
    try {
        fn();
    } catch (const embervm::StateError& e) {
        return e.what();
    }
    return "";
}

PciConfigSpace test_space() {
    PciConfigSpace c(PciIdentity{0x1af4, 0x1042, 0x018000});
    c.add_memory_bar64(0, 0x8000);
    const std::array<uint8_t, 3> body{1, 2, 3}, writable{0, 0xff, 0};
    c.add_capability(cap_id::kVendorSpecific, body, writable);
    return c;
}

}  // namespace

TEST_CASE("PCI config space: saved bytes round trip; bits the driver cannot write are checked", "[pci][snapshot]") {
    PciConfigSpace a = test_space();
    const std::array<uint8_t, 2> cmd{command::kMemorySpace | command::kBusMaster, 0};
    a.write(reg::kCommand, cmd);
    a.set_bar_address(0, 0x123458000);
    const std::array<uint8_t, 1> scratch{0x5a};
    a.write(0x43, scratch);  // the capability's writable byte
    embervm::StateWriter w;
    a.save_state(w);
    REQUIRE(w.bytes().size() == kConfigSize);

    PciConfigSpace b = test_space();
    embervm::StateReader r(w.bytes(), "test");
    b.restore(b.decode_state(r));
    CHECK(r.remaining() == 0);
    CHECK(b.bar_address(0) == 0x123458000);
    CHECK(b.memory_enabled());
    CHECK(b.read8(0x43) == 0x5a);

    auto refusal = [&](uint16_t offset, uint8_t value) {
        auto bad = w.bytes();
        bad[offset] = value;
        PciConfigSpace c = test_space();
        const std::string what = state_error([&] {
            embervm::StateReader rc(bad, "test");
            c.restore(c.decode_state(rc));
        });
        CHECK(c.read16(reg::kCommand) == 0);  // nothing applied
        return what;
    };
    CHECK(refusal(reg::kDeviceId, 0x43).find("'device ID'") != std::string::npos);
    CHECK(refusal(reg::kBar0, 0x0c).find("'BAR 0'") != std::string::npos);         // type bits
    CHECK(refusal(reg::kBar0 + 1, 0x01).find("'BAR 0'") != std::string::npos);     // below its size
    CHECK(refusal(reg::kBar0 + 8, 0x01).find("'BAR 2'") != std::string::npos);     // no such BAR
    CHECK(refusal(reg::kStatus + 1, 0x80).find("'status'") != std::string::npos);
    CHECK(refusal(0x42, 9).find("'capability 0x9 at 0x40, byte 2'") != std::string::npos);
    CHECK(refusal(0x80, 1).find("'configuration byte 0x80'") != std::string::npos);  // past the capabilities
    const std::string truncated = state_error([&] {
        embervm::StateReader rt(std::span(w.bytes()).first(100), "test");
        b.decode_state(rt);
    });
    CHECK(truncated.find("truncated") != std::string::npos);
}

TEST_CASE("PCI root: the address latch and the host bridge are restored, BARs decoded where restored",
          "[pci][snapshot]") {
    PciRoot a(kWindow, kWindowSize);
    a.add(std::make_shared<TestFunction>(0x8000));
    cfg_write32(a, 0, reg::kCommand, command::kMemorySpace | command::kBusMaster);  // the host bridge's
    embervm::StateWriter w;
    a.save_state(w);
    const uint32_t latch = 0x80000000u | reg::kCommand;

    PciRoot b(kWindow, kWindowSize);
    auto f = std::make_shared<TestFunction>(0x8000);
    const uint8_t slot = b.add(f);
    {
        embervm::StateReader r(w.bytes(), "pci-root");
        b.restore(b.decode_state(r));
        CHECK(r.remaining() == 0);
    }
    uint32_t restored_latch = 0;
    b.config_io()->read(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&restored_latch), 4));
    CHECK(restored_latch == latch);
    CHECK((cfg_read32(b, 0, reg::kCommand) & 0xffff) == (command::kMemorySpace | command::kBusMaster));

    // The function's own state was restored (by its device): BAR 0 moved, memory space on.
    // Nothing is decoded until restore_decoding(), which tells the function.
    const uint64_t bar = kWindow + 0x100000;
    const uint32_t lo = static_cast<uint32_t>(bar) | kBarMem64, hi = 0;
    const uint16_t cmd = command::kMemorySpace;
    f->config_write(reg::kBar0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&lo), 4));
    f->config_write(reg::kBar0 + 4, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&hi), 4));
    f->config_write(reg::kCommand, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&cmd), 2));
    CHECK(f->moves.empty());
    CHECK_FALSE(b.decoded_bar(slot, 0));
    b.restore_decoding();
    CHECK(b.decoded_bar(slot, 0) == bar);
    REQUIRE(f->moves.size() == 1);
    CHECK(f->moves[0] == std::make_pair(0u, std::optional<uint64_t>(bar)));
    CHECK(mmio_read32(b, bar) == 0xabababab);
}

TEST_CASE("PCI root: corrupt saved state and a BAR outside the window are refused naming the field",
          "[pci][snapshot]") {
    PciRoot a(kWindow, kWindowSize);
    embervm::StateWriter w;
    a.save_state(w);
    const auto& saved = w.bytes();
    REQUIRE(saved.size() == 4 + 4 + kConfigSize);
    auto refusal = [&](std::vector<uint8_t> bad) {
        PciRoot b(kWindow, kWindowSize);
        return state_error([&] {
            embervm::StateReader r(bad, "pci-root");
            b.restore(b.decode_state(r));
        });
    };
    auto with = [&](size_t offset, uint8_t value) {
        auto bad = saved;
        bad[offset] = value;
        return bad;
    };
    CHECK(refusal(with(0, 2)).find("'version'") != std::string::npos);
    CHECK(refusal(with(4, 0x01)).find("'config address'") != std::string::npos);      // reserved bit 0
    CHECK(refusal(with(7, 0x7f)).find("'config address'") != std::string::npos);      // reserved 30:24
    CHECK(refusal(with(8 + reg::kVendorId, 0x87)).find("'vendor ID'") != std::string::npos);
    CHECK(refusal(with(8 + reg::kClassCode + 2, 0x02)).find("'class code'") != std::string::npos);
    for (size_t n : {size_t{0}, size_t{6}, size_t{100}}) {
        CHECK(refusal({saved.begin(), saved.begin() + static_cast<long>(n)}).find("truncated") != std::string::npos);
    }

    SECTION("a BAR outside the window with memory decoding on") {
        PciRoot b(kWindow, kWindowSize);
        auto f = std::make_shared<TestFunction>(0x8000);
        const uint8_t slot = b.add(f);
        f->assign_bar(0, kWindow + kWindowSize);  // just past the window
        const uint16_t cmd = command::kMemorySpace;
        f->config_write(reg::kCommand, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&cmd), 2));
        const std::string what = state_error([&] { b.restore_decoding(); });
        INFO(what);
        CHECK(what.find("test") != std::string::npos);
        CHECK(what.find("'BAR 0'") != std::string::npos);
        CHECK(what.find("outside the PCI window") != std::string::npos);
        CHECK_FALSE(b.decoded_bar(slot, 0));
        CHECK(f->moves.empty());
    }
    SECTION("the same BAR with memory decoding off: a driver sizing it, nothing decoded") {
        PciRoot b(kWindow, kWindowSize);
        auto f = std::make_shared<TestFunction>(0x8000);
        const uint8_t slot = b.add(f);
        f->assign_bar(0, 0xffffffffffff8000);
        CHECK(state_error([&] { b.restore_decoding(); }).empty());
        CHECK_FALSE(b.decoded_bar(slot, 0));
    }
}

}  // namespace unit_pci_bus_test
