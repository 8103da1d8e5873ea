// Building the MP table (Intel MultiProcessor Specification 1.4).
#include "boot/mptable.h"

#include <cstring>
#include <numeric>

#include <fmt/format.h>

#include "boot/layout.h"
#include "vmm/sys/error.h"

namespace embervm::boot {

namespace {

constexpr uint32_t kCpuSignature = 0x600;             // family 6
constexpr uint32_t kCpuFeatures = (1u << 0) | (1u << 9);  // CPUID.1:EDX FPU | APIC
constexpr uint8_t kCpuEnabled = 1;
constexpr uint8_t kCpuBootstrap = 2;
constexpr uint8_t kAllLocalApics = 0xff;

constexpr size_t kFixedEntriesSize = sizeof(MpBusEntry) + sizeof(MpIoapicEntry) +
                                     kMpIoapicPins * sizeof(MpInterruptEntry) + 2 * sizeof(MpInterruptEntry);

template <typename T>
void append(std::vector<uint8_t>& out, const T& obj) {
    const auto* p = reinterpret_cast<const uint8_t*>(&obj);
    out.insert(out.end(), p, p + sizeof(T));
}

uint8_t checksum(const uint8_t* begin, size_t len) {
    const uint8_t sum = std::accumulate(begin, begin + len, uint8_t{0},
                                        [](uint8_t a, uint8_t b) { return static_cast<uint8_t>(a + b); });
    return static_cast<uint8_t>(-sum);
}

}  // namespace

size_t mptable_size(unsigned vcpus) {
    return sizeof(MpFloatingPointer) + sizeof(MpConfigHeader) + vcpus * sizeof(MpProcessorEntry) +
           kFixedEntriesSize;
}

unsigned mptable_max_vcpus() {
    return static_cast<unsigned>((kMpTableMaxSize - mptable_size(0)) / sizeof(MpProcessorEntry));
}

std::vector<uint8_t> build_mptable(unsigned vcpus, uint64_t addr) {
    if (vcpus == 0) {
        throw Error("MP table: need at least one vCPU");
    }
    if (vcpus > mptable_max_vcpus()) {
        throw Error(fmt::format("MP table: {} vCPUs need {} bytes, more than the {} bytes reserved at {:#x}; at most "
                                "{} vCPUs are supported",
                                vcpus, mptable_size(vcpus), kMpTableMaxSize, layout::kEbdaStart, mptable_max_vcpus()));
    }
    std::vector<uint8_t> out;
    out.reserve(mptable_size(vcpus));

    MpFloatingPointer fp{};
    std::memcpy(fp.signature, "_MP_", 4);
    fp.config_table = static_cast<uint32_t>(addr + sizeof(MpFloatingPointer));
    fp.length = 1;
    fp.spec_rev = kMpSpecRev;
    append(out, fp);

    MpConfigHeader hdr{};
    std::memcpy(hdr.signature, "PCMP", 4);
    hdr.spec_rev = kMpSpecRev;
    std::memcpy(hdr.oem_id, "EMBERVM ", 8);
    std::memcpy(hdr.product_id, "000000000000", 12);
    hdr.lapic_addr = static_cast<uint32_t>(layout::kLapicAddr);
    hdr.entry_count = static_cast<uint16_t>(vcpus + 1 + 1 + kMpIoapicPins + 2);
    hdr.base_length = static_cast<uint16_t>(mptable_size(vcpus) - sizeof(MpFloatingPointer));
    const size_t hdr_offset = out.size();
    append(out, hdr);

    for (unsigned i = 0; i < vcpus; i++) {
        MpProcessorEntry cpu{};
        cpu.type = kMpProcessor;
        cpu.apic_id = static_cast<uint8_t>(i);
        cpu.apic_version = kMpApicVersion;
        cpu.cpu_flags = static_cast<uint8_t>(kCpuEnabled | (i == 0 ? kCpuBootstrap : 0));
        cpu.cpu_signature = kCpuSignature;
        cpu.feature_flags = kCpuFeatures;
        append(out, cpu);
    }

    MpBusEntry bus{};
    bus.type = kMpBus;
    bus.bus_id = kMpIsaBusId;
    std::memcpy(bus.bus_type, "ISA   ", 6);
    append(out, bus);

    const auto ioapic_id = static_cast<uint8_t>(vcpus);
    MpIoapicEntry ioapic{};
    ioapic.type = kMpIoapic;
    ioapic.id = ioapic_id;
    ioapic.version = kMpIoapicVersion;
    ioapic.flags = 1;  // enabled
    ioapic.address = static_cast<uint32_t>(layout::kIoapicAddr);
    append(out, ioapic);

    for (unsigned pin = 0; pin < kMpIoapicPins; pin++) {
        const MpInterruptEntry irq{kMpIoInterrupt, kMpIntInt, 0, kMpIsaBusId, static_cast<uint8_t>(pin), ioapic_id,
                                   static_cast<uint8_t>(pin)};
        append(out, irq);
    }
    append(out, MpInterruptEntry{kMpLocalInterrupt, kMpIntExtInt, 0, kMpIsaBusId, 0, kAllLocalApics, 0});  // LINT0
    append(out, MpInterruptEntry{kMpLocalInterrupt, kMpIntNmi, 0, kMpIsaBusId, 0, kAllLocalApics, 1});     // LINT1

    out[offsetof(MpFloatingPointer, checksum)] = checksum(out.data(), sizeof(MpFloatingPointer));
    out[hdr_offset + offsetof(MpConfigHeader, checksum)] = checksum(out.data() + hdr_offset, out.size() - hdr_offset);
    return out;
}

void write_mptable(const memory::GuestMemory& mem, unsigned vcpus) {
    mem.write(memory::GuestAddress(layout::kEbdaStart), build_mptable(vcpus, layout::kEbdaStart));
}

}  // namespace embervm::boot
