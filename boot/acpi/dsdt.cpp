// Building the DSDT's AML from the guest's devices.
#include "boot/acpi/dsdt.h"

#include <cstddef>
#include <cstring>

#include <fmt/format.h>

#include "boot/acpi/aml.h"
#include "boot/acpi/tables.h"
#include "vmm/sys/error.h"

namespace embervm::boot::acpi {

namespace {

constexpr uint8_t kI8042CommandPort = 0x64;
constexpr uint16_t kPciConfigPort = 0xcf8;
constexpr uint8_t kPciConfigPorts = 8;

aml::Bytes com1_device() {
    return aml::device("COM1", {
                                   aml::name("_HID", aml::eisa_id("PNP0501")),
                                   aml::name("_UID", aml::integer(1)),
                                   aml::name("_CRS", aml::resource_template({
                                                         aml::io(layout::kCom1Port, layout::kCom1Port, 1, 8),
                                                         aml::irq_no_flags({layout::kCom1Irq}),
                                                     })),
                               });
}

aml::Bytes i8042_device() {
    return aml::device("PS2K", {
                                   aml::name("_HID", aml::eisa_id("PNP0303")),
                                   aml::name("_CRS", aml::resource_template({
                                                         aml::io(layout::kI8042Port, layout::kI8042Port, 1, 1),
                                                         aml::io(kI8042CommandPort, kI8042CommandPort, 1, 1),
                                                         aml::irq_no_flags({layout::kI8042KbdIrq}),
                                                     })),
                               });
}

aml::Bytes pci_root_device(const PciRootInfo& pci) {
    if (pci.window_size == 0 || pci.window_base + pci.window_size > (uint64_t{1} << 32) ||
        pci.window_base + pci.window_size < pci.window_base) {
        throw Error(fmt::format("ACPI DSDT: PCI BAR window [{:#x}, +{:#x}) must be non-empty and below 4 GiB",
                                pci.window_base, pci.window_size));
    }
    return aml::device(
        "PCI0", {
                    aml::name("_HID", aml::eisa_id("PNP0A03")),
                    aml::name("_SEG", aml::integer(0)),
                    aml::name("_BBN", aml::integer(0)),
                    aml::name("_UID", aml::integer(0)),
                    aml::name("_CRS", aml::resource_template({
                                          aml::word_bus_number(0, 0),
                                          aml::io(kPciConfigPort, kPciConfigPort, 1, kPciConfigPorts),
                                          aml::dword_memory(aml::MemoryCaching::NonCacheable,
                                                            static_cast<uint32_t>(pci.window_base),
                                                            static_cast<uint32_t>(pci.window_size)),
                                      })),
                });
}

aml::Bytes virtio_device(size_t index, const VirtioMmioDeviceInfo& dev) {
    if (dev.size == 0 || dev.addr + dev.size > (uint64_t{1} << 32) || dev.addr + dev.size < dev.addr) {
        throw Error(fmt::format("ACPI DSDT: virtio-mmio window {} [{:#x}, +{:#x}) must be non-empty and below 4 GiB",
                                index, dev.addr, dev.size));
    }
    return aml::device(
        fmt::format("VR{:02X}", index),
        {
            aml::name("_HID", aml::string("LNRO0005")),
            aml::name("_UID", aml::integer(index)),
            aml::name("_CRS", aml::resource_template({
                                  aml::memory32_fixed(true, static_cast<uint32_t>(dev.addr),
                                                      static_cast<uint32_t>(dev.size)),
                                  aml::extended_interrupt(aml::Trigger::Edge, aml::Polarity::ActiveHigh,
                                                          aml::Sharing::Exclusive, {dev.gsi}),
                              })),
        });
}

}  // namespace

std::vector<uint8_t> build_dsdt_aml(const AcpiLayout& guest) {
    if (guest.virtio.size() > kDsdtMaxVirtioDevices) {
        throw Error(fmt::format("ACPI DSDT: {} virtio-mmio devices; at most {}", guest.virtio.size(),
                                kDsdtMaxVirtioDevices));
    }
    std::vector<aml::Bytes> devices;
    if (guest.com1) {
        devices.push_back(com1_device());
    }
    if (guest.i8042) {
        devices.push_back(i8042_device());
    }
    for (size_t i = 0; i < guest.virtio.size(); i++) {
        devices.push_back(virtio_device(i, guest.virtio[i]));
    }
    if (guest.pci) {
        devices.push_back(pci_root_device(*guest.pci));
    }
    aml::Bytes out = aml::scope("\\_SB", devices);
    aml::append(out, aml::name("\\_S5", aml::package({aml::integer(kSleepTypeS5), aml::integer(kSleepTypeS5),
                                                        aml::integer(0), aml::integer(0)})));
    return out;
}

std::vector<uint8_t> build_dsdt(const AcpiLayout& guest) {
    const std::vector<uint8_t> body = build_dsdt_aml(guest);
    const SdtHeader h = make_sdt_header("DSDT", static_cast<uint32_t>(sizeof(SdtHeader) + body.size()),
                                        kDsdtRevision, "EVMDSDT");
    std::vector<uint8_t> out(sizeof(SdtHeader) + body.size());
    std::memcpy(out.data(), &h, sizeof(h));
    std::memcpy(out.data() + sizeof(h), body.data(), body.size());
    fix_checksum(out, offsetof(SdtHeader, checksum));
    return out;
}

}  // namespace embervm::boot::acpi
