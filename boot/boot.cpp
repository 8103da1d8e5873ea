// setup_boot(): validates a boot request, then writes the kernel, initrd, command line and
// every boot structure into guest memory.
#include "boot/boot.h"

#include <optional>

#include <fmt/format.h>

#include "boot/acpi/acpi.h"
#include "boot/cmdline.h"
#include "boot/cpu_tables.h"
#include "boot/image_copy.h"
#include "boot/initrd.h"
#include "boot/kernel_image.h"
#include "boot/layout.h"
#include "boot/memory_map.h"
#include "boot/mptable.h"
#include "boot/pvh.h"
#include "boot/reset_vector.h"
#include "boot/zero_page.h"
#include "vmm/sys/error.h"

namespace embervm::boot {

BootSetup setup_boot(const memory::GuestMemory& mem, const BootOptions& options) {
    // Everything is validated before the first byte is written.
    if (options.vcpu_count == 0 || options.vcpu_count > mptable_max_vcpus()) {
        throw Error(fmt::format("boot: {} vCPUs requested, the MP table supports 1 to {}", options.vcpu_count,
                                mptable_max_vcpus()));
    }
    std::vector<MemoryMapEntry> memory_map = guest_memory_map(mem);
    // Linux uses the ECAM window that the MCFG announces only if the firmware reserved it.
    if (options.acpi && options.acpi->pci) {
        reserve_in_memory_map(memory_map, options.acpi->pci->ecam_base, layout::kPciEcamSize);
    }
    const KernelImage kernel = parse_kernel_image(options.kernel);
    check_kernel_placement(kernel, mem);
    check_cmdline(options.cmdline, kernel.cmdline_max,
                  kernel.kind == KernelKind::BzImage ? "cmdline_size in the bzImage setup header"
                                                     : "COMMAND_LINE_SIZE - 1 for an ELF vmlinux");
    std::optional<acpi::AcpiTables> acpi_tables;
    if (options.acpi) {
        if (options.acpi->vcpus != options.vcpu_count) {
            throw Error(fmt::format("boot: the ACPI tables describe {} vCPUs, the VM has {}", options.acpi->vcpus,
                                    options.vcpu_count));
        }
        acpi_tables = acpi::build_acpi_tables(*options.acpi, layout::kAcpiTablesStart);
    }

    BootSetup setup;
    setup.kernel_kind = kernel.kind;
    setup.kernel_start = kernel.start;
    setup.kernel_end = kernel.end;
    if (kernel.pvh_entry && options.prefer_pvh) {
        setup.protocol = EntryProtocol::Pvh;
        setup.entry = *kernel.pvh_entry;
        setup.boot_info_addr = layout::kPvhInfoAddr;
    } else {
        setup.protocol = EntryProtocol::Linux64;
        setup.entry = kernel.entry64;
        setup.boot_info_addr = layout::kZeroPageAddr;
    }
    if (options.initrd) {
        setup.initrd_size = options.initrd->size();
        setup.initrd_addr = place_initrd(setup.initrd_size, kernel.end, kernel.initrd_addr_max, low_ram_end(mem));
    }

    load_kernel_image(kernel, options.kernel, mem, options.kernel_fd);
    if (options.initrd) {
        copy_image(mem, memory::GuestAddress(setup.initrd_addr), *options.initrd, 0, setup.initrd_size,
                   options.initrd_fd, "initrd");
    }
    setup.cmdline_addr = layout::kCmdlineAddr;
    setup.cmdline_size = write_cmdline(mem, options.cmdline);
    // The MP table stays with the ACPI tables: a kernel without CONFIG_ACPI, or booted with
    // acpi=off, finds its CPUs and I/O APIC there.
    write_mptable(mem, options.vcpu_count);
    if (acpi_tables) {
        acpi::write_acpi_tables(mem, *acpi_tables);
        setup.rsdp_addr = acpi_tables->rsdp_addr;
    }
    write_reset_vector_stub(mem);
    write_gdt_and_idt(mem, setup.protocol);
    write_page_tables(mem);

    if (setup.protocol == EntryProtocol::Pvh) {
        PvhParams pvh;
        pvh.cmdline_addr = setup.cmdline_addr;
        if (options.initrd) {
            pvh.initrd_addr = setup.initrd_addr;
            pvh.initrd_size = setup.initrd_size;
        }
        pvh.memory_map = memory_map;
        pvh.rsdp_addr = setup.rsdp_addr;
        write_pvh_start_info(mem, pvh);
    } else {
        ZeroPageParams zp;
        if (kernel.bzimage) {
            zp.header_bytes = kernel.bzimage->header_bytes;
        }
        zp.cmdline_addr = setup.cmdline_addr;
        zp.initrd_addr = setup.initrd_addr;
        zp.initrd_size = setup.initrd_size;
        zp.memory_map = memory_map;
        zp.acpi_rsdp_addr = setup.rsdp_addr;
        write_zero_page(mem, build_zero_page(zp));
    }
    return setup;
}

}  // namespace embervm::boot
