// Building the Linux zero page (struct boot_params).
#include "boot/zero_page.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "boot/bzimage.h"
#include "boot/kernel_image.h"
#include "boot/layout.h"
#include "vmm/sys/error.h"

namespace embervm::boot {

setup_header default_setup_header() {
    setup_header h{};
    h.boot_flag = kBootFlag;
    h.header = kHeaderMagic;
    h.version = kBootProtocol64;
    h.type_of_loader = kTypeOfLoaderUndefined;
    h.loadflags = LOADED_HIGH;
    h.kernel_alignment = 0x1000000;
    h.initrd_addr_max = static_cast<uint32_t>(kDefaultInitrdAddrMax);
    h.cmdline_size = static_cast<uint32_t>(kElfCmdlineMax);
    h.xloadflags = XLF_KERNEL_64;
    return h;
}

boot_params build_zero_page(const ZeroPageParams& params) {
    boot_params bp{};
    auto* raw = reinterpret_cast<uint8_t*>(&bp);
    if (params.header_bytes.empty()) {
        bp.hdr = default_setup_header();
    } else {
        // boot.rst: copy the setup header (from 0x1f1 to its end) into the zero page, then fill
        // in what the boot loader must write.
        const size_t len = std::min(params.header_bytes.size(), sizeof(setup_header));
        std::memcpy(raw + kSetupHeaderOffset, params.header_bytes.data(), len);
    }
    bp.hdr.type_of_loader = kTypeOfLoaderUndefined;
    bp.hdr.loadflags = static_cast<uint8_t>(bp.hdr.loadflags | CAN_USE_HEAP);
    bp.hdr.heap_end_ptr = kHeapEndPtr;
    bp.hdr.ext_loader_ver = 0;
    bp.hdr.ext_loader_type = 0;
    bp.hdr.cmd_line_ptr = static_cast<uint32_t>(params.cmdline_addr);
    bp.ext_cmd_line_ptr = static_cast<uint32_t>(params.cmdline_addr >> 32);
    bp.hdr.ramdisk_image = static_cast<uint32_t>(params.initrd_addr);
    bp.ext_ramdisk_image = static_cast<uint32_t>(params.initrd_addr >> 32);
    bp.hdr.ramdisk_size = static_cast<uint32_t>(params.initrd_size);
    bp.ext_ramdisk_size = static_cast<uint32_t>(params.initrd_size >> 32);
    bp.hdr.setup_data = 0;        // no setup_data list
    bp.hdr.hardware_subarch = 0;  // X86_SUBARCH_PC
    if (params.header_bytes.empty() || bp.hdr.version >= kBootProtocolAcpiRsdp) {
        bp.acpi_rsdp_addr = params.acpi_rsdp_addr;
    }

    if (params.memory_map.size() > E820_MAX_ENTRIES_ZEROPAGE) {
        throw Error(fmt::format("memory map has {} entries, the zero page holds at most {}", params.memory_map.size(),
                                E820_MAX_ENTRIES_ZEROPAGE));
    }
    for (size_t i = 0; i < params.memory_map.size(); i++) {
        const auto& e = params.memory_map[i];
        bp.e820_table[i].addr = e.addr;
        bp.e820_table[i].size = e.size;
        bp.e820_table[i].type = static_cast<uint32_t>(e.type);
    }
    bp.e820_entries = static_cast<uint8_t>(params.memory_map.size());
    return bp;
}

void write_zero_page(const memory::GuestMemory& mem, const boot_params& params) {
    mem.write_obj(memory::GuestAddress(layout::kZeroPageAddr), params);
}

}  // namespace embervm::boot
