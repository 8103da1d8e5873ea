// Address-range bus: dispatches MMIO and port-I/O exits from vCPU threads to devices.
//
// Devices are inserted before the vCPUs start; afterwards the bus is read-only, so lookups
// need no lock. Devices do their own locking: several vCPU threads may call them at once.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>

namespace embervm::vmm {

class BusDevice {
public:
    virtual ~BusDevice() = default;
    // `offset` is relative to the base the device was inserted at; data.size() is 1, 2, 4 or 8.
    virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

class Bus {
public:
    explicit Bus(std::string name) : name_(std::move(name)) {}
    // Throws embervm::Error if [base, base+len) overlaps a range already inserted or is empty.
    void insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t len);
    // Returns false when no device covers the access (the caller decides what that means:
    // reads of unclaimed addresses return all ones, writes are dropped).
    bool read(uint64_t addr, std::span<uint8_t> data) const;
    bool write(uint64_t addr, std::span<const uint8_t> data) const;
    const std::string& name() const { return name_; }

private:
    struct Range {
        uint64_t len;
        std::shared_ptr<BusDevice> device;
    };
    // Finds the device whose range holds the whole access; sets *offset.
    BusDevice* resolve(uint64_t addr, uint64_t len, uint64_t* offset) const;

    std::string name_;
    std::map<uint64_t, Range> ranges_;  // keyed by base
};

}  // namespace embervm::vmm
