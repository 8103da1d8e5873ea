// Tests for vmm/kvm/vcpu ([kvm]): a vCPU thread dispatching a real guest's port I/O and MMIO
// to the buses (unclaimed accesses read as all ones and are counted), reporting hlt as the end
// of the VM, and being paused, resumed and stopped while the guest spins.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "devices/bus.h"
#include "tests/unit/vmm/kvm/real_mode_vm.h"
#include "vmm/kvm/vcpu.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_vcpu_test {

namespace vmm = embervm::vmm;
using embervm::memory::GuestAddress;
using embervm::test::RealModeVm;

namespace {

// Records writes; reads return `value`.
class RecordingDevice : public vmm::BusDevice {
public:
    explicit RecordingDevice(uint64_t value) : value_(value) {}
    void read(uint64_t offset, std::span<uint8_t> data) override {
        std::lock_guard lock(mutex_);
        reads.push_back({offset, data.size()});
        std::memcpy(data.data(), &value_, data.size());
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        std::lock_guard lock(mutex_);
        uint64_t v = 0;
        std::memcpy(&v, data.data(), data.size());
        writes.push_back({offset, data.size(), v});
    }
    struct Read {
        uint64_t offset;
        size_t size;
        bool operator==(const Read&) const = default;
    };
    struct Write {
        uint64_t offset;
        size_t size;
        uint64_t value;
        bool operator==(const Write&) const = default;
    };
    std::vector<Read> reads;
    std::vector<Write> writes;

private:
    std::mutex mutex_;
    uint64_t value_;
};

// Waits until `done` holds, checking often; gives up (false) only after a minute, which no
// healthy run comes near.
template <typename Pred>
bool eventually(Pred&& done) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while (!done()) {
        if (std::chrono::steady_clock::now() > give_up) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
}

}  // namespace

TEST_CASE("vcpu: port I/O and MMIO reach the buses; hlt ends the VM", "[kvm][vcpu]") {
    vmm::Vcpu::install_kick_handler();
    RealModeVm t;
    vmm::Bus pio("pio"), mmio("mmio");
    auto port = std::make_shared<RecordingDevice>(0);
    auto reg = std::make_shared<RecordingDevice>(0xbeef);
    pio.insert(port, 0x3f0, 8);
    mmio.insert(reg, 0x8000, 0x100);

    std::vector<vmm::VmExit> exits;
    std::mutex exits_mutex;
    vmm::Vcpu vcpu(t.make_vcpu({
                       0xa1, 0x10, 0x80,        // mov ax, [0x8010]     device read: 0xbeef
                       0xba, 0xf2, 0x03,        // mov dx, 0x3f2
                       0xef,                    // out dx, ax           device write
                       0x8b, 0x1e, 0x00, 0x90,  // mov bx, [0x9000]     unclaimed: 0xffff
                       0x89, 0x1e, 0x00, 0x90,  // mov [0x9000], bx     unclaimed: dropped
                       0xe4, 0x70,              // in al, 0x70          unclaimed: 0xff
                       0xf4,                    // hlt
                   }),
                   pio, mmio, t.ram, [&](vmm::VmExit e) {
                       std::lock_guard lock(exits_mutex);
                       exits.push_back(std::move(e));
                   });
    vcpu.start();
    vcpu.join();  // the thread ends on hlt

    REQUIRE(exits.size() == 1);
    CHECK(exits[0].reason == vmm::VmExit::Reason::GuestShutdown);
    CHECK(exits[0].detail == "vcpu0 halted");
    CHECK(reg->reads == std::vector<RecordingDevice::Read>{{0x10, 2}});
    CHECK(reg->writes.empty());
    CHECK(port->writes == std::vector<RecordingDevice::Write>{{2, 2, 0xbeef}});
    const kvm_regs r = vcpu.kvm().get_regs();
    CHECK((r.rax & 0xffff) == 0xbeff);  // in al replaced the low byte
    CHECK((r.rbx & 0xffff) == 0xffff);

    const vmm::VcpuStats& s = vcpu.stats();
    CHECK(s.mmio_exits.load() == 3);
    CHECK(s.io_exits.load() == 2);
    CHECK(s.hlt_exits.load() == 1);
    CHECK(s.unclaimed_accesses.load() == 3);
    CHECK(s.other_exits.load() == 0);
    CHECK(s.internal_error_exits.load() == 0);
}

TEST_CASE("vcpu: pause, resume and stop a spinning guest", "[kvm][vcpu]") {
    vmm::Vcpu::install_kick_handler();
    RealModeVm t;
    vmm::Bus pio("pio"), mmio("mmio");
    constexpr uint64_t kCounter = 0x2000;
    std::atomic<int> exits{0};
    // loop: inc dword [0x2000]; jmp loop
    vmm::Vcpu vcpu(t.make_vcpu({0x66, 0xff, 0x06, 0x00, 0x20, 0xeb, 0xf9}), pio, mmio, t.ram,
                   [&](vmm::VmExit) { exits++; });
    const auto counter = [&] { return t.ram.read_obj<uint32_t>(GuestAddress(kCounter)); };
    vcpu.start();
    REQUIRE(eventually([&] { return counter() > 0; }));  // the guest runs

    // pause() returns with the thread out of KVM_RUN: the counter stands still, and the
    // registers can be read (they show the loop).
    vcpu.pause();
    const uint32_t paused_at = counter();
    const kvm_regs r = vcpu.kvm().get_regs();
    CHECK(r.rip >= RealModeVm::kCodeAddr);
    CHECK(r.rip < RealModeVm::kCodeAddr + 7);
    CHECK(counter() == paused_at);
    CHECK(vcpu.kvm().get_regs().rip == r.rip);

    vcpu.resume();
    REQUIRE(eventually([&] { return counter() != paused_at; }));  // running again

    vcpu.request_stop();
    vcpu.join();
    CHECK(exits.load() == 0);  // a requested stop is not a VM exit
    CHECK(vcpu.stats().interrupted.load() >= 1);  // the kick took the thread out of KVM_RUN
    CHECK(vcpu.stats().other_exits.load() == 0);
}

TEST_CASE("vcpu: a shutdown exit's account says when KVM has already reset the registers", "[vcpu]") {
    kvm_regs r{};
    kvm_sregs s{};
    SECTION("the reset state (KVM on AMD): no registers passed off as the fault's") {
        r.rip = 0xfff0;
        s.cs.selector = 0xf000;
        s.cs.base = 0xffff0000;
        s.cr0 = 0x60000010;
        const std::string text = vmm::describe_shutdown(r, s);
        CHECK(text.find("already the reset state") != std::string::npos);
        CHECK(text.find("kvm:kvm_exit") != std::string::npos);
        CHECK(text.find("rip=") == std::string::npos);
    }
    SECTION("the state kept (Intel): the fault's registers") {
        r.rip = 0xffffffff81000123;
        s.cs.selector = 0x10;
        s.cr0 = 0x80050033;
        s.cr2 = 0xdead000;
        const std::string text = vmm::describe_shutdown(r, s);
        CHECK(text.find("rip=0xffffffff81000123") != std::string::npos);
        CHECK(text.find("cr2=0xdead000") != std::string::npos);
        CHECK(text.find("reset state") == std::string::npos);
    }
    SECTION("a guest that jumped to fff0 in protected mode is not taken for a reset") {
        r.rip = 0xfff0;
        s.cs.selector = 0xf000;
        s.cs.base = 0xffff0000;
        s.cr0 = 0x11;
        CHECK(vmm::describe_shutdown(r, s).find("rip=0xfff0") != std::string::npos);
    }
}

TEST_CASE("vcpu: a triple fault ends the VM as a crash (status 3), once, with an account of the state",
          "[kvm][vcpu]") {
    vmm::Vcpu::install_kick_handler();
    RealModeVm t;
    vmm::Bus pio("pio"), mmio("mmio");
    // An empty interrupt vector table: int3 raises #GP, which raises #DF, which shuts down.
    t.ram.write(GuestAddress(0x1100), std::vector<uint8_t>(6, 0));
    std::vector<vmm::VmExit> exits;
    std::mutex exits_mutex;
    vmm::Vcpu vcpu(t.make_vcpu({
                       0x0f, 0x01, 0x1e, 0x00, 0x11,  // lidt [0x1100]    limit 0
                       0xcc,                          // int3
                       0xf4,                          // hlt (not reached)
                   }),
                   pio, mmio, t.ram, [&](vmm::VmExit e) {
                       std::lock_guard lock(exits_mutex);
                       exits.push_back(std::move(e));
                   });
    vcpu.start();
    vcpu.join();

    REQUIRE(exits.size() == 1);
    CHECK(exits[0].reason == vmm::VmExit::Reason::TripleFault);
    CHECK(exits[0].status == 3);
    CHECK(exits[0].detail == "triple fault");
    CHECK(vcpu.stats().shutdown_exits.load() == 1);
    CHECK(vcpu.stats().hlt_exits.load() == 0);
    // Either KVM kept the faulting state (the IVT limit of 0 is still loaded) or it reset the
    // vCPU, and the account says which.
    const kvm_regs r = vcpu.kvm().get_regs();
    const kvm_sregs s = vcpu.kvm().get_sregs();
    const std::string text = vmm::describe_shutdown(r, s);
    INFO(text);
    if (r.rip == 0xfff0 && s.cs.base == 0xffff0000) {
        CHECK(text.find("already the reset state") != std::string::npos);
    } else {
        CHECK(s.idt.limit == 0);
        CHECK(text.find("idt=0x0/0x0") != std::string::npos);
    }
}

}  // namespace unit_vcpu_test
