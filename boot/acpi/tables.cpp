// Building the RSDP, XSDT, FADT, MADT and MCFG.
#include "boot/acpi/tables.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "vmm/sys/error.h"

namespace embervm::boot::acpi {

namespace {

constexpr char kOemId[] = "EMBRVM";
constexpr uint32_t kOemRevision = 1;
constexpr char kCreatorId[] = "EMBR";
constexpr uint32_t kCreatorRevision = 1;
constexpr uint8_t kXsdtRevision = 1;
constexpr char kHypervisorVendor[] = "EMBERVM ";

// Copies `text` into a fixed-size, space-padded, not NUL-terminated field.
template <size_t N>
void set_field(char (&field)[N], std::string_view text) {
    std::memset(field, ' ', N);
    std::memcpy(field, text.data(), std::min(N, text.size()));
}

template <typename T>
void append_obj(std::vector<uint8_t>& out, const T& obj) {
    const auto* p = reinterpret_cast<const uint8_t*>(&obj);
    out.insert(out.end(), p, p + sizeof(T));
}

GenericAddress io_port_register(uint16_t port) {
    return GenericAddress{kGasSystemIo, 8, 0, kGasAccessByte, port};
}

}  // namespace

SdtHeader make_sdt_header(std::string_view signature, uint32_t length, uint8_t revision, std::string_view table_id) {
    SdtHeader h{};
    set_field(h.signature, signature);
    h.length = length;
    h.revision = revision;
    set_field(h.oem_id, kOemId);
    set_field(h.oem_table_id, table_id);
    h.oem_revision = kOemRevision;
    set_field(h.creator_id, kCreatorId);
    h.creator_revision = kCreatorRevision;
    return h;
}

Rsdp build_rsdp(uint64_t xsdt_addr) {
    Rsdp r{};
    set_field(r.signature, "RSD PTR ");
    set_field(r.oem_id, kOemId);
    r.revision = 2;
    r.length = sizeof(Rsdp);
    r.xsdt_address = xsdt_addr;
    auto* bytes = reinterpret_cast<uint8_t*>(&r);
    r.checksum = checksum(std::span<const uint8_t>(bytes, kRsdpChecksumLength));
    r.extended_checksum = checksum(std::span<const uint8_t>(bytes, sizeof(Rsdp)));
    return r;
}

std::vector<uint8_t> build_xsdt(std::span<const uint64_t> entries) {
    const auto length = static_cast<uint32_t>(sizeof(SdtHeader) + entries.size() * sizeof(uint64_t));
    std::vector<uint8_t> out;
    append_obj(out, make_sdt_header("XSDT", length, kXsdtRevision, "EVMXSDT"));
    for (uint64_t e : entries) {
        append_obj(out, e);
    }
    fix_checksum(out, offsetof(SdtHeader, checksum));
    return out;
}

std::vector<uint8_t> build_fadt(const AcpiLayout& guest, uint64_t dsdt_addr) {
    Fadt f{};
    f.header = make_sdt_header("FACP", sizeof(Fadt), kFadtRevision, "EVMFACP");
    f.minor_version = kFadtMinorVersion;
    f.flags = kFadtWbinvd | kFadtPowerButtonIsControlMethod | kFadtSleepButtonIsControlMethod |
              kFadtResetRegSupported | kFadtHardwareReduced;
    // "MSI not supported" only without PCI: Linux disables MSI for every device when it is set,
    // and the PCI functions signal with MSI-X only.
    f.iapc_boot_arch = static_cast<uint16_t>(kIapcVgaNotPresent | (guest.pci ? 0 : kIapcMsiNotSupported) |
                                             kIapcNoCmosRtc | (guest.i8042 ? kIapcI8042 : 0));
    f.dsdt = dsdt_addr <= UINT32_MAX ? static_cast<uint32_t>(dsdt_addr) : 0;
    f.x_dsdt = dsdt_addr;
    f.reset_reg = io_port_register(kResetPort);
    f.reset_value = kResetValue;
    f.sleep_control_reg = io_port_register(kSleepControlPort);
    f.sleep_status_reg = io_port_register(kSleepStatusPort);
    std::memcpy(&f.hypervisor_vendor_id, kHypervisorVendor, sizeof(f.hypervisor_vendor_id));
    std::vector<uint8_t> out;
    append_obj(out, f);
    fix_checksum(out, offsetof(SdtHeader, checksum));
    return out;
}

std::vector<uint8_t> build_madt(const AcpiLayout& guest) {
    const unsigned vcpus = guest.vcpus;
    if (vcpus == 0 || vcpus > kMadtMaxVcpus) {
        throw Error(fmt::format("ACPI MADT: {} vCPUs; 1 to {} are supported", vcpus, kMadtMaxVcpus));
    }
    std::vector<uint8_t> out;
    append_obj(out, MadtHeader{});
    for (unsigned i = 0; i < vcpus; i++) {
        append_obj(out, MadtLocalApic{kMadtLocalApic, sizeof(MadtLocalApic), static_cast<uint8_t>(i),
                                      static_cast<uint8_t>(i), kMadtLocalApicEnabled});
    }
    append_obj(out, MadtIoApic{kMadtIoApic, sizeof(MadtIoApic), static_cast<uint8_t>(vcpus), 0,
                               static_cast<uint32_t>(layout::kIoapicAddr), 0});
    append_obj(out, MadtLocalApicNmi{kMadtLocalApicNmi, sizeof(MadtLocalApicNmi), kMadtAllProcessors, 0, 1});

    MadtHeader h{};
    h.header = make_sdt_header("APIC", static_cast<uint32_t>(out.size()), kMadtRevision, "EVMAPIC");
    h.local_apic_address = static_cast<uint32_t>(layout::kLapicAddr);
    h.flags = kMadtPcatCompat;
    std::memcpy(out.data(), &h, sizeof(h));
    fix_checksum(out, offsetof(SdtHeader, checksum));
    return out;
}

std::vector<uint8_t> build_mcfg(const PciRootInfo& pci) {
    constexpr uint64_t kEcamBusBytes = 0x100000;
    if (pci.ecam_base % kEcamBusBytes != 0 || pci.ecam_base + kEcamBusBytes > (uint64_t{1} << 32)) {
        throw Error(fmt::format("ACPI MCFG: ECAM window {:#x} must be 1 MiB-aligned and below 4 GiB", pci.ecam_base));
    }
    McfgHeader h{};
    h.header = make_sdt_header("MCFG", sizeof(McfgHeader) + sizeof(McfgAllocation), kMcfgRevision, "EVMMCFG");
    std::vector<uint8_t> out;
    append_obj(out, h);
    append_obj(out, McfgAllocation{pci.ecam_base, 0, 0, 0, 0});
    fix_checksum(out, offsetof(SdtHeader, checksum));
    return out;
}

}  // namespace embervm::boot::acpi
