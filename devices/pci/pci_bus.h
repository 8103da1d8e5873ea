// The PCI root bus: bus 0 with a host bridge at 00:00.0 and one single-function device per
// slot (00:NN.0). The driver reaches configuration space through the port mechanism (address
// at 0xCF8, data at 0xCFC-0xCFF: config_io()) or through the ECAM window (ecam(): 4 KiB per
// function, bus 0 only, announced by ACPI's MCFG); both reach the same registers through
// config_read()/config_write(). The functions' memory BARs are decoded inside
// one MMIO window (mmio_window(), on the VM's MMIO bus), where the root dispatches each access
// to the BAR that holds it *now*: a driver may move BARs, and the handlers move with them.
//
// What the driver cannot do by moving a BAR: a BAR outside the window, or overlapping another
// BAR, is not decoded (nobody answers there); a BAR over RAM is never reached (KVM serves RAM
// without an exit). So no BAR placement gives the guest anything it did not have.
//
// Threading: config accesses are serialised by one mutex; MMIO accesses look the BAR up under
// a shared lock and call the function without it. Functions do their own locking.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "devices/bus.h"
#include "devices/pci/config_space.h"

namespace embervm {
class StateReader;
class StateWriter;
}  // namespace embervm

namespace embervm::devices::pci {

inline constexpr unsigned kSlots = 32;
inline constexpr unsigned kFunctionsPerSlot = 8;
// ECAM (PCI Express enhanced configuration access): 4 KiB of configuration space per function,
// so one bus is 32 slots x 8 functions x 4 KiB = 1 MiB. Only the first kConfigSize bytes of
// each exist here; the extended space above reads zeros (no extended capabilities).
inline constexpr uint64_t kEcamFunctionSize = 0x1000;
inline constexpr uint64_t kEcamBusSize = uint64_t{kSlots} * kFunctionsPerSlot * kEcamFunctionSize;

class PciFunction {
public:
    virtual ~PciFunction() = default;
    // For logs.
    virtual std::string name() const = 0;
    // Configuration space accesses (offset < 256, 1, 2 or 4 bytes, naturally aligned).
    virtual void config_read(uint16_t offset, std::span<uint8_t> data) = 0;
    virtual void config_write(uint16_t offset, std::span<const uint8_t> data) = 0;
    // The function's BARs as the driver programmed them (under the function's own lock).
    virtual std::array<std::optional<uint64_t>, kNumBars> bar_addresses() const = 0;
    virtual std::array<uint64_t, kNumBars> bar_sizes() const = 0;
    // Programs BAR `bar` before boot (firmware's job).
    virtual void assign_bar(unsigned bar, uint64_t address) = 0;
    // Accesses inside BAR `bar` at `offset` (1, 2, 4 or 8 bytes).
    virtual void bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) = 0;
    // The root now decodes BAR `bar` at `address` (nullopt: nowhere). Called after config
    // writes that moved, enabled or disabled it (e.g. to move ioeventfds along), and once
    // after assignment.
    virtual void bar_decoded(unsigned /*bar*/, std::optional<uint64_t> /*address*/) {}
};

// The host bridge at 00:00.0: a header with no BARs.
class HostBridge : public PciFunction {
public:
    HostBridge();
    std::string name() const override { return "PCI host bridge"; }
    void config_read(uint16_t offset, std::span<uint8_t> data) override;
    void config_write(uint16_t offset, std::span<const uint8_t> data) override;
    std::array<std::optional<uint64_t>, kNumBars> bar_addresses() const override { return {}; }
    std::array<uint64_t, kNumBars> bar_sizes() const override { return {}; }
    void assign_bar(unsigned /*bar*/, uint64_t /*address*/) override {}
    void bar_read(unsigned /*bar*/, uint64_t /*offset*/, std::span<uint8_t> data) override;
    void bar_write(unsigned /*bar*/, uint64_t /*offset*/, std::span<const uint8_t> /*data*/) override {}

    // Snapshots (PciConfigSpace::save_state).
    void save_state(StateWriter& w) const;
    PciConfigSpace::Bytes decode_state(StateReader& r) const;
    void restore(const PciConfigSpace::Bytes& bytes);

private:
    mutable std::mutex mutex_;
    PciConfigSpace config_;
};

class PciRoot {
public:
    // BARs are assigned and decoded inside [window_base, window_base + window_size).
    PciRoot(uint64_t window_base, uint64_t window_size);

    // Puts `function` in the next free slot (1..31), assigns its BARs inside the window and
    // returns the slot. Throws embervm::Error when slots or window space run out.
    uint8_t add(std::shared_ptr<PciFunction> function);

    // A configuration access to bus 0, `slot`, `function` at `offset` (< kEcamFunctionSize);
    // absent functions read all ones and ignore writes; a present function's extended space
    // (offset >= kConfigSize) reads zeros and ignores writes.
    void config_read(uint8_t slot, uint8_t function, uint16_t offset, std::span<uint8_t> data);
    void config_write(uint8_t slot, uint8_t function, uint16_t offset, std::span<const uint8_t> data);

    // The port-I/O device for 0xCF8-0xCFF (insert with base kConfigAddressPort, length 8).
    std::shared_ptr<vmm::BusDevice> config_io();
    // The MMIO device for bus 0's ECAM window (insert anywhere, length kEcamBusSize): an
    // access of 1, 2 or 4 bytes aligned to its size reaches (slot, function, register) =
    // (offset bits 19:15, 14:12, 11:0); any other access reads all ones and writes nothing.
    std::shared_ptr<vmm::BusDevice> ecam();
    // The MMIO device for the BAR window (insert at window_base, window_size).
    std::shared_ptr<vmm::BusDevice> mmio_window();
    uint64_t window_base() const { return window_base_; }
    uint64_t window_size() const { return window_size_; }

    // Where `slot`'s BAR `bar` is decoded now (tests, logs).
    std::optional<uint64_t> decoded_bar(uint8_t slot, unsigned bar) const;
    // An MMIO access inside the window, at absolute guest-physical `addr`. Returns false when
    // no decoded BAR holds the whole access.
    bool mmio_read(uint64_t addr, std::span<uint8_t> data) const;
    bool mmio_write(uint64_t addr, std::span<const uint8_t> data) const;

    static constexpr uint16_t kConfigAddressPort = 0xcf8;

    // Snapshots: the root's own state, with a version first: the address latch of port 0xCF8
    // (a driver may be between its address and data accesses) and the host bridge's
    // configuration space. The functions' state goes with their devices (a PciTransport's).
    // decode_state() checks everything (reserved latch bits, the bridge's read-only bits:
    // StateError naming the field) and changes nothing; restore() applies it.
    struct Saved {
        uint32_t config_address = 0;
        PciConfigSpace::Bytes host_bridge{};
    };
    void save_state(StateWriter& w) const;
    Saved decode_state(StateReader& r) const;
    void restore(const Saved& saved);
    // After the functions' configuration spaces were restored: decodes their BARs where the
    // restored registers say, telling the functions (bar_decoded(): the notify ioeventfds move
    // there). A BAR with memory decoding on that lies outside the window is refused first
    // (StateError naming the function and the BAR): no driver of ours leaves one there, and
    // nothing would answer it.
    void restore_decoding();

private:
    struct Decoded {
        uint64_t base;
        uint64_t size;
        uint8_t slot;
        unsigned bar;
    };
    class ConfigIo;
    class Ecam;
    class Window;
    // Recomputes what the window decodes from the functions' BARs and command registers, and
    // tells functions whose BARs changed. With config_mutex_ held.
    void update_decoding();
    // Every programmed BAR of a function whose memory space is enabled (config_mutex_ held).
    std::vector<Decoded> enabled_bars() const;
    // Whether [base, base + size) lies inside the BAR window.
    bool in_window(uint64_t base, uint64_t size) const;
    // The function and BAR-relative offset for [addr, addr + len), or nullptr.
    std::shared_ptr<PciFunction> lookup(uint64_t addr, uint64_t len, unsigned* bar, uint64_t* offset) const;

    const uint64_t window_base_;
    const uint64_t window_size_;
    uint64_t next_free_;  // BAR assignment cursor
    std::array<std::shared_ptr<PciFunction>, kSlots> slots_;
    std::shared_ptr<HostBridge> host_bridge_;  // slots_[0]
    std::mutex config_mutex_;
    mutable std::shared_mutex decode_mutex_;
    std::vector<Decoded> decoded_;  // under decode_mutex_
    std::shared_ptr<ConfigIo> config_io_;
    std::shared_ptr<Ecam> ecam_;
    std::shared_ptr<Window> window_;
};

}  // namespace embervm::devices::pci
