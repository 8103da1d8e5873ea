// Address-range bus.
#include "devices/bus.h"

#include <fmt/format.h>

#include "vmm/sys/error.h"

namespace embervm::vmm {

void Bus::insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t len) {
    if (len == 0 || base + len < base) {
        throw Error(fmt::format("{} bus: invalid range {:#x}+{:#x}", name_, base, len));
    }
    auto next = ranges_.lower_bound(base);
    if (next != ranges_.end() && next->first < base + len) {
        throw Error(fmt::format("{} bus: range {:#x}+{:#x} overlaps device at {:#x}", name_, base, len, next->first));
    }
    if (next != ranges_.begin()) {
        auto prev = std::prev(next);
        if (prev->first + prev->second.len > base) {
            throw Error(
                fmt::format("{} bus: range {:#x}+{:#x} overlaps device at {:#x}", name_, base, len, prev->first));
        }
    }
    ranges_.emplace(base, Range{len, std::move(device)});
}

BusDevice* Bus::resolve(uint64_t addr, uint64_t len, uint64_t* offset) const {
    auto it = ranges_.upper_bound(addr);
    if (it == ranges_.begin()) {
        return nullptr;
    }
    --it;
    const uint64_t off = addr - it->first;
    if (off >= it->second.len || len > it->second.len - off) {
        return nullptr;
    }
    *offset = off;
    return it->second.device.get();
}

bool Bus::read(uint64_t addr, std::span<uint8_t> data) const {
    uint64_t off = 0;
    BusDevice* dev = resolve(addr, data.size(), &off);
    if (dev == nullptr) {
        return false;
    }
    dev->read(off, data);
    return true;
}

bool Bus::write(uint64_t addr, std::span<const uint8_t> data) const {
    uint64_t off = 0;
    BusDevice* dev = resolve(addr, data.size(), &off);
    if (dev == nullptr) {
        return false;
    }
    dev->write(off, data);
    return true;
}

}  // namespace embervm::vmm
