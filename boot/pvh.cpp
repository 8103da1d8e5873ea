// Writing the PVH start info.
#include "boot/pvh.h"

#include <fmt/format.h>

#include "vmm/sys/error.h"

namespace embervm::boot {

void write_pvh_start_info(const memory::GuestMemory& mem, const PvhParams& params) {
    if (params.memory_map.size() > kPvhMaxMemmapEntries) {
        throw Error(fmt::format("memory map has {} entries, the PVH start info has room for {}",
                                params.memory_map.size(), kPvhMaxMemmapEntries));
    }
    HvmStartInfo info{};
    info.magic = kHvmStartMagic;
    info.version = kHvmStartVersion;
    info.cmdline_paddr = params.cmdline_addr;
    info.rsdp_paddr = params.rsdp_addr;
    if (params.initrd_addr) {
        HvmModlistEntry module{};
        module.paddr = *params.initrd_addr;
        module.size = params.initrd_size;
        mem.write_obj(memory::GuestAddress(kPvhModlistAddr), module);
        info.nr_modules = 1;
        info.modlist_paddr = kPvhModlistAddr;
    }
    for (size_t i = 0; i < params.memory_map.size(); i++) {
        const auto& e = params.memory_map[i];
        const HvmMemmapEntry entry{e.addr, e.size, static_cast<uint32_t>(e.type), 0};
        mem.write_obj(memory::GuestAddress(kPvhMemmapAddr + i * sizeof(HvmMemmapEntry)), entry);
    }
    info.memmap_paddr = kPvhMemmapAddr;
    info.memmap_entries = static_cast<uint32_t>(params.memory_map.size());
    mem.write_obj(memory::GuestAddress(layout::kPvhInfoAddr), info);
}

}  // namespace embervm::boot
