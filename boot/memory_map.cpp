// Guest RAM ranges (with the 32-bit MMIO hole) and the memory map handed to the kernel.
#include "boot/memory_map.h"

#include <algorithm>

#include <fmt/format.h>

#include "boot/boot.h"
#include "boot/layout.h"
#include "vmm/sys/error.h"

namespace embervm::boot {

namespace {
constexpr uint64_t kPageSize = 0x1000;
}

std::vector<std::pair<memory::GuestAddress, size_t>> guest_memory_ranges(uint64_t mem_bytes) {
    if (mem_bytes % kPageSize != 0) {
        throw Error(fmt::format("guest memory size {:#x} is not a multiple of 4 KiB", mem_bytes));
    }
    if (mem_bytes <= layout::kHighMemStart) {
        throw Error(fmt::format("guest memory size {:#x} is too small: the kernel is loaded above 1 MiB", mem_bytes));
    }
    const uint64_t low = std::min(mem_bytes, layout::kMmioHoleStart);
    std::vector<std::pair<memory::GuestAddress, size_t>> ranges{{memory::GuestAddress(0), low}};
    if (mem_bytes > low) {
        ranges.emplace_back(memory::GuestAddress(layout::kMmioHoleEnd), mem_bytes - low);
    }
    return ranges;
}

std::vector<MemoryMapEntry> guest_memory_map(const memory::GuestMemory& mem) {
    const auto& regions = mem.regions();
    if (regions.front().start().value != 0 || regions.front().end() <= layout::kHighMemStart) {
        throw Error(fmt::format("guest memory must start at 0 and extend past 1 MiB for the boot structures "
                                "(first region is [{:#x}, {:#x}))",
                                regions.front().start().value, regions.front().end()));
    }
    std::vector<MemoryMapEntry> map{
        {0, layout::kEbdaStart, MemoryType::Ram},
        {layout::kEbdaStart, layout::kHighMemStart - layout::kEbdaStart, MemoryType::Reserved},
    };
    for (const auto& r : regions) {
        const uint64_t start = std::max(r.start().value, layout::kHighMemStart);
        const uint64_t end = r.end();
        if (end <= start) {
            continue;
        }
        MemoryMapEntry& last = map.back();
        if (last.type == MemoryType::Ram && last.addr + last.size == start) {
            last.size += end - start;
        } else {
            map.push_back({start, end - start, MemoryType::Ram});
        }
    }
    return map;
}

void reserve_in_memory_map(std::vector<MemoryMapEntry>& map, uint64_t addr, uint64_t size) {
    for (const auto& e : map) {
        if (addr < e.addr + e.size && e.addr < addr + size) {
            throw Error(fmt::format("memory map: reserved range [{:#x}, +{:#x}) overlaps [{:#x}, +{:#x})", addr, size,
                                    e.addr, e.size));
        }
    }
    const auto at = std::find_if(map.begin(), map.end(), [&](const MemoryMapEntry& e) { return e.addr > addr; });
    map.insert(at, MemoryMapEntry{addr, size, MemoryType::Reserved});
}

uint64_t low_ram_end(const memory::GuestMemory& mem) {
    uint64_t end = layout::kHighMemStart;
    for (const auto& r : mem.regions()) {
        if (r.start().value <= end && r.end() > end) {
            end = r.end();
        }
    }
    return std::min(end, layout::kMmioHoleStart);
}

std::string describe_guest_ram(const memory::GuestMemory& mem) {
    std::string out;
    const auto& regions = mem.regions();
    for (size_t i = 0; i < regions.size(); i++) {
        if (i > 0) {
            out += i + 1 == regions.size() ? " and " : ", ";
        }
        out += fmt::format("[{:#x}, {:#x})", regions[i].start().value, regions[i].end());
    }
    return out;
}

}  // namespace embervm::boot
