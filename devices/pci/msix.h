// MSI-X (PCI Local Bus 3.0, 6.8.2) for one function: the vector table and the pending bit
// array that live in a BAR, the enable and function-mask bits of the capability's message
// control, and delivery through an MsiVectors sink (KVM GSI routing + irqfds in the VMM).
//
// A vector is delivered only while MSI-X is enabled and neither the function nor the vector is
// masked; a vector signalled while masked sets its pending bit and is delivered (and the bit
// cleared) when it is unmasked. The sink learns a vector's message whenever the driver unmasks
// it or rewrites it while unmasked, before anything is delivered on it.
//
// Every guest value is taken as data: accesses outside the table or PBA, of a width other than
// 4 or 8 bytes or unaligned, read as zero and are ignored (PBA writes always are).
//
// Thread-safe: one mutex (a leaf, but for the sink's calls made under it).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

namespace embervm {
class StateReader;
class StateWriter;
}  // namespace embervm

namespace embervm::devices::pci {

struct MsiMessage {
    uint64_t address = 0;
    uint32_t data = 0;
    bool operator==(const MsiMessage&) const = default;
};

// Where a function's MSI-X vectors go.
class MsiVectors {
public:
    virtual ~MsiVectors() = default;
    // Vector `index` will be delivered with `message` from now on.
    virtual void route(uint16_t index, const MsiMessage& message) = 0;
    // Delivers vector `index` (routed before).
    virtual void trigger(uint16_t index) = 0;
    // The eventfd whose writes deliver vector `index` without the VMM (KVM's irqfd for the
    // vector's GSI), or -1 when there is none. A writer other than trigger() may use it only
    // while the vector is deliverable (MsixTable::direct_eventfd).
    virtual int irqfd(uint16_t /*index*/) const { return -1; }
};

inline constexpr uint16_t kMsixEntrySize = 16;
inline constexpr uint16_t kMsixMaxVectors = 2048;
// Message control bits.
inline constexpr uint16_t kMsixEnable = 0x8000;
inline constexpr uint16_t kMsixFunctionMask = 0x4000;

class MsixTable {
public:
    // `num_vectors` in 1..2048. Every vector starts masked, with a zero message.
    MsixTable(uint16_t num_vectors, std::shared_ptr<MsiVectors> sink);

    uint16_t num_vectors() const { return static_cast<uint16_t>(entries_.size()); }
    // Bytes of the table and of the PBA (a multiple of 8).
    uint64_t table_size() const { return uint64_t{num_vectors()} * kMsixEntrySize; }
    uint64_t pba_size() const { return (num_vectors() + 63) / 64 * 8; }

    void read_table(uint64_t offset, std::span<uint8_t> data) const;
    void write_table(uint64_t offset, std::span<const uint8_t> data);
    void read_pba(uint64_t offset, std::span<uint8_t> data) const;

    // The capability's message control was written: enable and function mask bits.
    void set_control(uint16_t message_control);
    bool enabled() const;

    // The device raises vector `index`: delivered, or left pending while masked. Returns
    // false when it cannot be (MSI-X disabled, or no such vector).
    bool signal(uint16_t index);
    // Back to the power-on state (every vector masked, nothing pending, disabled). MSI-X state
    // belongs to the PCI function: a virtio reset (status 0) leaves it alone.
    void reset();

    // The sink's irqfd for vector `index` while the vector is deliverable (MSI-X enabled,
    // neither the function nor the vector masked, so routed), else -1 (also for an index out of
    // range). Something that writes it delivers the vector as trigger() would; once the vector
    // stops being deliverable it must go through signal() again (which keeps the pending bit).
    int direct_eventfd(uint16_t index) const;

    // Snapshots: the vector count, every entry's address, data and vector control, then the PBA
    // (pba_size() bytes). decode_state() checks a saved table against this one (the same vector
    // count, only the mask bit in a vector control, no pending bit beyond the last vector):
    // StateError naming the entry or the PBA; only restore() changes anything. The enable and
    // function-mask bits are not here: they are the capability's (configuration space), and
    // restore() takes them as set_control() does. restore() then routes every deliverable
    // vector (the sink's route()) and delivers the pending ones among them; a pending vector
    // still masked is delivered when the driver unmasks it.
    struct Saved {
        std::vector<MsiMessage> messages;
        std::vector<uint32_t> controls;
        std::vector<bool> pending;
    };
    void save_state(StateWriter& w) const;
    Saved decode_state(StateReader& r) const;
    void restore(const Saved& saved, uint16_t message_control);

    bool masked(uint16_t index) const;
    bool pending(uint16_t index) const;
    MsiMessage message(uint16_t index) const;

private:
    struct Entry {
        MsiMessage message;
        uint32_t control = 1;  // bit 0: masked
        bool pending = false;
        bool routed = false;  // the sink knows this message
    };
    bool deliverable_locked(const Entry& e) const;
    void set_control_locked(uint16_t message_control);
    // Routes and delivers what became deliverable (after an unmask or enable).
    void flush_locked(uint16_t index);

    mutable std::mutex mutex_;
    std::vector<Entry> entries_;
    const std::shared_ptr<MsiVectors> sink_;
    bool enabled_ = false;
    bool function_masked_ = false;
};

}  // namespace embervm::devices::pci
