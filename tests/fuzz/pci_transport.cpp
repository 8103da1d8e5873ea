// Fuzz target: virtio-pci (virtio/pci_transport.h) on the PCI root bus (devices/pci/pci_bus.h),
// as a guest reaches them: two functions with real devices behind them (virtio-blk on an
// in-memory backend, virtio-net on a backend that takes every frame, virtio-balloon; the input
// picks them), configuration space through ports 0xCF8-0xCFF and through the ECAM window, and
// their BARs through the MMIO window, all on the VMM's own buses. The input is a sequence of
// raw accesses of any address and width, mixed with steps a driver takes (memory decoding on, a
// BAR moved, a feature negotiation, a queue set up at the layout of embervm::fuzz::RingDriver,
// DRIVER_OK, MSI-X vectors programmed and enabled) so that fuzzing gets past DRIVER_OK, and
// with chains made available there, then kicked through the notify region.
//
// Oracles besides the sanitizers and the guard pages: the read-only parts of each function's
// configuration space (IDs, class, the capability list, the MSI-X table location) never change;
// a decoded BAR lies inside the window, aligned to its size, and overlaps no other; the MSI-X
// sink hears only of vectors the function has, and is told a vector's message before the vector
// is delivered; an activated device has FEATURES_OK and DRIVER_OK, features accepted within
// those offered (with VERSION_1), and only valid ready queues.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "devices/bus.h"
#include "devices/pci/config_space.h"
#include "devices/pci/msix.h"
#include "devices/pci/pci_bus.h"
#include "tests/fuzz/transport_devices.h"
#include "tests/fuzz/virtio_fuzz.h"
#include "virtio/pci_transport.h"

using embervm::fuzz::check;
using embervm::fuzz::FuzzInput;
using namespace embervm::virtio;
namespace pci = embervm::devices::pci;

namespace {

constexpr size_t kMaxOps = 160;
constexpr size_t kFunctions = 2;
// Where the buses put things (as the VMM's layout does: ECAM and the BAR window above RAM).
constexpr uint64_t kEcamBase = 0xe0000000;
constexpr uint64_t kWindowBase = 0xc0000000;
constexpr uint64_t kWindowSize = 0x100000;
// The second function's rings lie above the first's (RingDriver puts queue q at q * 0x1000).
constexpr uint16_t kRingSlotsPerFunction = 8;

// An MSI-X sink that checks what the function tells it.
class CheckingVectors final : public pci::MsiVectors {
public:
    void route(uint16_t index, const pci::MsiMessage&) override {
        check(index < routed.size(), "MSI-X route for a vector the function does not have");
        routed[index] = true;
    }
    void trigger(uint16_t index) override {
        check(index < routed.size(), "MSI-X trigger of a vector the function does not have");
        check(routed[index], "MSI-X vector delivered before its message was routed");
        ++triggers;
    }
    std::vector<bool> routed;
    uint64_t triggers = 0;
};

// Common-config fields a driver writes, with their widths.
struct Field {
    uint64_t offset;
    size_t width;
};
constexpr Field kDriverFields[] = {
    {common_cfg::kDeviceFeatureSelect, 4}, {common_cfg::kDriverFeatureSelect, 4}, {common_cfg::kDriverFeature, 4},
    {common_cfg::kConfigMsixVector, 2},    {common_cfg::kDeviceStatus, 1},        {common_cfg::kQueueSelect, 2},
    {common_cfg::kQueueSize, 2},           {common_cfg::kQueueMsixVector, 2},     {common_cfg::kQueueEnable, 2},
    {common_cfg::kQueueDesc, 8},           {common_cfg::kQueueDesc + 4, 4},       {common_cfg::kQueueDriver, 4},
    {common_cfg::kQueueDevice, 8},         {common_cfg::kQueueReset, 2},          {common_cfg::kQueueNotifyData, 2},
};

struct Function {
    std::shared_ptr<PciTransport> transport;
    std::shared_ptr<CheckingVectors> vectors;
    embervm::virtio::testing::FakeBlockBackend* fake_block = nullptr;
    std::vector<embervm::fuzz::RingDriver> rings;
    uint8_t slot = 0;
    pci::PciConfigSpace::Bytes initial{};  // the configuration space as made
};

class PciFuzzer {
public:
    PciFuzzer(const embervm::memory::GuestMemory& mem, FuzzInput& input) : mem_(mem), in_(input) {}

    void run() {
        io_.insert(root_.config_io(), pci::PciRoot::kConfigAddressPort, 8);
        mmio_.insert(root_.ecam(), kEcamBase, pci::kEcamBusSize);
        mmio_.insert(root_.mmio_window(), kWindowBase, kWindowSize);
        for (size_t i = 0; i < kFunctions; i++) {
            Function& f = functions_[i];
            f.vectors = std::make_shared<CheckingVectors>();
            f.transport = std::make_shared<PciTransport>(mem_, embervm::fuzz::make_transport_device(in_, &f.fake_block),
                                                         f.vectors);
            f.vectors->routed.assign(f.transport->num_vectors(), false);
            for (uint16_t q = 0; q < f.transport->num_queues(); q++) {
                f.rings.emplace_back(mem_, static_cast<uint16_t>(i * kRingSlotsPerFunction + q));
            }
            f.slot = root_.add(f.transport);
            config_bytes(f, f.initial);
            // Firmware (or the guest's PCI core) turns memory decoding and bus mastering on.
            config_write(f, pci::reg::kCommand, 2, pci::command::kMemorySpace | pci::command::kBusMaster);
        }
        for (size_t n = 0; n < kMaxOps && !in_.empty(); n++) {
            // The configuration spaces are compared after the steps that write them, and at
            // the end (reading them whole after every step took most of the target's time).
            const bool config_step = step();
            check_invariants(config_step || n + 1 == kMaxOps || in_.empty());
        }
    }

private:
    // --- Accesses as the guest makes them -------------------------------------------------

    uint64_t config_read(const Function& f, uint16_t reg, size_t width) {
        uint8_t b[8] = {};
        root_.config_read(f.slot, 0, reg, std::span(b, width));
        uint64_t v = 0;
        std::memcpy(&v, b, sizeof v);
        return v;
    }
    void config_write(const Function& f, uint16_t reg, size_t width, uint64_t v) {
        uint8_t b[8];
        std::memcpy(b, &v, sizeof v);
        root_.config_write(f.slot, 0, reg, std::span<const uint8_t>(b, width));
    }
    void config_bytes(const Function& f, pci::PciConfigSpace::Bytes& out) {
        for (uint16_t off = 0; off < pci::kConfigSize; off += 4) {
            const auto v = static_cast<uint32_t>(config_read(f, off, 4));
            std::memcpy(&out[off], &v, 4);
        }
    }
    // An access inside BAR 0 of `f` where it is decoded now (nothing answers when it is not).
    std::optional<uint64_t> bar_read(const Function& f, uint64_t offset, size_t width) {
        const auto base = root_.decoded_bar(f.slot, pci_layout::kBar);
        if (!base) return std::nullopt;
        uint8_t b[8] = {};
        if (!mmio_.read(*base + offset, std::span(b, width))) return std::nullopt;
        uint64_t v = 0;
        std::memcpy(&v, b, sizeof v);
        return v;
    }
    void bar_write(const Function& f, uint64_t offset, size_t width, uint64_t v) {
        const auto base = root_.decoded_bar(f.slot, pci_layout::kBar);
        if (!base) return;
        uint8_t b[8];
        std::memcpy(b, &v, sizeof v);
        mmio_.write(*base + offset, std::span<const uint8_t>(b, width));
    }
    // Any access on a bus: `width` 1, 2, 4 or 8, at any address (the bus finds the device).
    void raw_access(embervm::vmm::Bus& bus, uint64_t addr) {
        const size_t width = size_t{1} << in_.below(4);
        uint8_t b[8] = {};
        if (in_.flag()) {
            bus.read(addr, std::span(b, width));
        } else {
            const uint64_t v = in_.u64();
            std::memcpy(b, &v, sizeof v);
            bus.write(addr, std::span<const uint8_t>(b, width));
        }
    }

    // --- The input's operations -------------------------------------------------------------

    Function& pick() { return functions_[in_.below(kFunctions)]; }

    // Returns whether the step wrote configuration space.
    bool step() {
        const size_t op = in_.below(16);
        switch (op) {
            case 0:
            case 1: {  // a write to a common-config field a driver writes
                Function& f = pick();
                const Field field = kDriverFields[in_.below(std::size(kDriverFields))];
                bar_write(f, pci_layout::kCommonCfg + field.offset, field.width, in_.u64());
                break;
            }
            case 2:  // any access inside the BAR window
                raw_access(mmio_, kWindowBase + in_.u32() % kWindowSize);
                break;
            case 3: {  // ports 0xCF8-0xCFF: the address latch (biased to our functions), then data
                if (in_.flag()) {
                    const uint32_t a = in_.flag() ? in_.u32()
                                                  : 0x80000000u | (in_.below(4) << 11) | (in_.below(2) << 8) | (in_.u8() & 0xfc);
                    const std::array<uint8_t, 4> b{static_cast<uint8_t>(a), static_cast<uint8_t>(a >> 8),
                                                   static_cast<uint8_t>(a >> 16), static_cast<uint8_t>(a >> 24)};
                    io_.write(pci::PciRoot::kConfigAddressPort, b);
                }
                raw_access(io_, pci::PciRoot::kConfigAddressPort + in_.below(8));
                break;
            }
            case 4: {  // the ECAM window: a slot (biased to ours), a function, any register
                const uint64_t slot = in_.flag() ? in_.below(pci::kSlots) : in_.below(kFunctions + 1);
                raw_access(mmio_, kEcamBase + (slot << 15) + (uint64_t{in_.below(2)} << 12) + in_.u16() % 0x1000);
                break;
            }
            case 5: {  // feature negotiation: reset, ACK | DRIVER, accept a subset, FEATURES_OK
                Function& f = pick();
                bar_write(f, common_cfg::kDeviceStatus, 1, 0);
                bar_write(f, common_cfg::kDeviceStatus, 1, status::kAcknowledge | status::kDriver);
                const uint64_t mask = in_.u64();
                for (uint32_t sel = 0; sel < 2; sel++) {
                    bar_write(f, common_cfg::kDeviceFeatureSelect, 4, sel);
                    const uint64_t offered = bar_read(f, common_cfg::kDeviceFeature, 4).value_or(0);
                    bar_write(f, common_cfg::kDriverFeatureSelect, 4, sel);
                    bar_write(f, common_cfg::kDriverFeature, 4, offered & static_cast<uint32_t>(mask >> (32 * sel)));
                }
                bar_write(f, common_cfg::kDeviceStatus, 1, status::kAcknowledge | status::kDriver | status::kFeaturesOk);
                break;
            }
            case 6: {  // a queue set up at the driver layout, with a vector (or none, or any value)
                Function& f = pick();
                const auto q = static_cast<uint16_t>(in_.below(f.transport->num_queues() + 1));
                bar_write(f, common_cfg::kQueueSelect, 2, q);
                if (q >= f.rings.size()) break;
                const auto size = static_cast<uint16_t>(1u << in_.below(8));
                embervm::fuzz::RingDriver& ring = f.rings[q];
                bar_write(f, common_cfg::kQueueSize, 2, size);
                bar_write(f, common_cfg::kQueueDesc, 8, ring.desc());
                bar_write(f, common_cfg::kQueueDriver, 8, ring.avail());
                bar_write(f, common_cfg::kQueueDevice, 8, ring.used());
                const uint8_t v = in_.u8();
                bar_write(f, common_cfg::kQueueMsixVector, 2, v == 0xff ? in_.u16() : v % (f.transport->num_vectors() + 1));
                bar_write(f, common_cfg::kQueueEnable, 2, 1);
                mem_.fill(embervm::memory::GuestAddress(ring.desc()), 0x1000, 0);
                ring.restart(size);
                break;
            }
            case 7: {  // DRIVER_OK, with the configuration-change vector first
                Function& f = pick();
                bar_write(f, common_cfg::kConfigMsixVector, 2, in_.below(f.transport->num_vectors() + 1));
                bar_write(f, common_cfg::kDeviceStatus, 1,
                          status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk);
                break;
            }
            case 8:
            case 9: {
                Function& f = pick();
                if (!f.rings.empty()) f.rings[in_.below(f.rings.size())].act(in_);
                break;
            }
            case 10: {  // a notification: queue index (or any value) to its notify address
                Function& f = pick();
                const auto q = static_cast<uint16_t>(in_.below(f.transport->num_queues() + 1));
                const uint64_t at = in_.flag() ? pci_layout::kNotify + uint64_t{pci_layout::kNotifyOffMultiplier} * q
                                               : pci_layout::kNotify + in_.below(0x100);
                bar_write(f, at, size_t{1} << in_.below(3), in_.flag() ? q : in_.u32());
                break;
            }
            case 11: {  // an MSI-X table entry: address, data, vector control
                Function& f = pick();
                const uint64_t entry = pci_layout::kMsixTable + pci::kMsixEntrySize * in_.below(f.transport->num_vectors() + 1);
                bar_write(f, entry, 8, 0xfee00000u | (uint32_t{in_.u8()} << 12));
                bar_write(f, entry + 8, 4, in_.u32());
                bar_write(f, entry + 12, 4, in_.flag() ? 0 : in_.u32());
                break;
            }
            case 12: {  // MSI-X message control: enable and function mask (or any value)
                Function& f = pick();
                const uint16_t control = in_.flag() ? in_.u16() : static_cast<uint16_t>(in_.below(4) << 14);
                config_write(f, static_cast<uint16_t>(f.transport->msix_capability() + 2), 2, control);
                break;
            }
            case 13: {  // the command register, or BAR 0/1 moved (mostly inside the window)
                Function& f = pick();
                switch (in_.below(3)) {
                    case 0:
                        config_write(f, pci::reg::kCommand, 2, in_.u16());
                        break;
                    case 1: {
                        const uint64_t to = in_.flag() ? in_.u64() : kWindowBase + uint64_t{in_.u8()} * 0x1000;
                        config_write(f, pci::reg::kBar0, 4, static_cast<uint32_t>(to));
                        config_write(f, pci::reg::kBar0 + 4, 4, to >> 32);
                        break;
                    }
                    default: {  // BAR sizing: all ones, read back, then any value
                        const auto bar = static_cast<uint16_t>(pci::reg::kBar0 + 4 * in_.below(6));
                        config_write(f, bar, 4, 0xffffffff);
                        config_read(f, bar, 4);
                        config_write(f, bar, 4, in_.u32());
                        break;
                    }
                }
                break;
            }
            case 14: {  // reads a driver makes: ISR (read-to-clear), the PBA, config generation
                Function& f = pick();
                bar_read(f, pci_layout::kIsr, 1);
                bar_read(f, pci_layout::kMsixPba, 8);
                bar_read(f, common_cfg::kConfigGeneration, 1);
                bar_read(f, pci_layout::kDeviceCfg + in_.below(64), size_t{1} << in_.below(4));
                break;
            }
            default: {  // the backend full or failing, or the watchdog's view of interrupts
                Function& f = pick();
                if (!embervm::fuzz::vary_block_backend(in_, f.fake_block)) {
                    f.transport->raise_used_again();
                    f.transport->used_interrupt_pending_since();
                }
                break;
            }
        }
        return op == 3 || op == 4 || op == 12 || op == 13;
    }

    // --- Oracles ---------------------------------------------------------------------------

    // The read-only parts of `f`'s configuration space are as made.
    void check_config(const Function& f) {
        pci::PciConfigSpace::Bytes now{};
        config_bytes(f, now);
        const auto same = [&](uint16_t from, uint16_t to) {
            return std::equal(now.begin() + from, now.begin() + to, f.initial.begin() + from);
        };
        const uint16_t msix = f.transport->msix_capability();
        check(same(0x00, 0x04) && same(0x08, 0x10) && same(0x2c, 0x30) && same(0x34, 0x35),
              "a read-only header register changed (IDs, class, subsystem, capability pointer)");
        check(same(pci::reg::kFirstCapability, static_cast<uint16_t>(msix + 3)) &&
                  (now[msix + 3] & 0x3f) == (f.initial[msix + 3] & 0x3f) &&
                  same(static_cast<uint16_t>(msix + 4), static_cast<uint16_t>(msix + 12)),
              "the capability list changed beyond MSI-X enable and function mask");
    }

    void check_invariants(bool config) {
        std::vector<std::pair<uint64_t, uint64_t>> decoded;
        for (Function& f : functions_) {
            if (config) check_config(f);
            if (const auto base = root_.decoded_bar(f.slot, pci_layout::kBar)) {
                check(*base >= kWindowBase && *base + pci_layout::kBarSize <= kWindowBase + kWindowSize,
                      "a BAR decoded outside the window");
                check(*base % pci_layout::kBarSize == 0, "a BAR decoded at an unaligned address");
                for (const auto& [b, size] : decoded) {
                    check(*base + pci_layout::kBarSize <= b || b + size <= *base, "two decoded BARs overlap");
                }
                decoded.emplace_back(*base, pci_layout::kBarSize);
            }
            const PciTransport& t = *f.transport;
            if (!t.is_activated()) continue;
            const uint32_t s = t.status();
            check((s & status::kFeaturesOk) != 0 && (s & status::kDriverOk) != 0, "activated without FEATURES_OK and DRIVER_OK");
            const uint64_t features = t.driver_features();
            check((features & ~t.offered_features()) == 0, "activated with features that were not offered");
            check((features & feature::kVersion1) != 0, "activated without VERSION_1");
            for (uint16_t q = 0; q < t.num_queues(); q++) {
                const Queue queue = t.queue(q);
                check(!queue.ready() || queue.is_valid(mem_), "activated with an invalid ready queue");
            }
        }
    }

    const embervm::memory::GuestMemory& mem_;
    FuzzInput& in_;
    // Destroyed in reverse: the buses, the root (both hold the functions), then the functions
    // (a transport resets an activated device when it goes).
    std::array<Function, kFunctions> functions_;
    pci::PciRoot root_{kWindowBase, kWindowSize};
    embervm::vmm::Bus io_{"pio"};
    embervm::vmm::Bus mmio_{"mmio"};
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    return embervm::fuzz::run_device_target<PciFuzzer>(data, size);
}
