// Tests for vmm/kvm/vcpu_state and vm_state against a real /dev/kvm ([kvm]): a vCPU's state
// saved in one VM and restored into a vCPU of another VM continues the guest where it stopped,
// with its registers and MSRs; the irqchip, PIT and clock come back; the encoding round-trips and
// its checks name the field. The encoding cases without KVM are [snapshot].
#include <catch2/catch.hpp>

#include <sys/ioctl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "tests/unit/vmm/kvm/real_mode_vm.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/vcpu_state.h"
#include "vmm/kvm/vm_state.h"
#include "vmm/sys/state_stream.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_vcpu_state_test {

using embervm::StateReader;
using embervm::StateWriter;
using embervm::test::RealModeVm;
namespace vmm = embervm::vmm;

namespace {

constexpr uint32_t kMsrSysenterCs = 0x174;

// mov dx, 0x3f8; mov al, 'x'; out dx, al; inc ax; out dx, al; hlt
const std::vector<uint8_t> kCode = {0xba, 0xf8, 0x03, 0xb0, 'x', 0xee, 0x40, 0xee, 0xf4};

struct Machine {
    Machine() : t(true) {
        t.vm.create_pit2();
        vcpu = t.make_vcpu(kCode);
        vcpu->set_cpuid(t.kvm.supported_cpuid());
    }
    RealModeVm t;
    std::unique_ptr<vmm::KvmVcpu> vcpu;
};

uint8_t next_out(vmm::KvmVcpu& vcpu) {
    REQUIRE(vcpu.run());
    const kvm_run* run = vcpu.run_struct();
    REQUIRE(run->exit_reason == KVM_EXIT_IO);
    REQUIRE(run->io.port == 0x3f8);
    return reinterpret_cast<const uint8_t*>(run)[run->io.data_offset];
}

// The guest TSC of `vcpu` at the instant of a KVM_GET_CLOCK, with that clock (host TSC + the
// vCPU's offset: the test's TSC is unscaled).
std::pair<uint64_t, kvm_clock_data> tsc_at_clock(const vmm::KvmVm& vm, const vmm::KvmVcpu& vcpu) {
    kvm_clock_data clock{};
    REQUIRE(::ioctl(vm.fd(), KVM_GET_CLOCK, &clock) == 0);
    REQUIRE((clock.flags & KVM_CLOCK_HOST_TSC) != 0);
    uint64_t offset = 0;
    kvm_device_attr attr{};
    attr.group = KVM_VCPU_TSC_CTRL;
    attr.attr = KVM_VCPU_TSC_OFFSET;
    attr.addr = reinterpret_cast<uint64_t>(&offset);
    REQUIRE(::ioctl(vcpu.fd(), KVM_GET_DEVICE_ATTR, &attr) == 0);
    return {clock.host_tsc + offset, clock};
}

}  // namespace

TEST_CASE("vcpu state: the restored TSC stands to kvmclock as it did, however slow the restore", "[kvm]") {
    // Linux marks its TSC unstable when it drifts from kvmclock by ~0.1 ms; restore steps
    // milliseconds apart (nested KVM) used to put that much between them.
    Machine a;
    // Run it once: KVM starts its master clock (and KVM_GET_CLOCK reports the host TSC) once a
    // vCPU has entered, as in any VM worth a snapshot.
    REQUIRE(next_out(*a.vcpu) == 'x');
    a.vcpu->run_struct()->immediate_exit = 1;
    REQUIRE_FALSE(a.vcpu->run());
    const std::vector<uint32_t> msrs = vmm::saved_msr_indices(a.t.kvm, *a.vcpu);
    const vmm::KvmVmState vm_saved = vmm::save_vm_state(a.t.vm);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a slow save: the TSC is read later
    const vmm::VcpuState saved = vmm::save_vcpu_state(a.t.vm, *a.vcpu, msrs);
    REQUIRE(saved.tsc_offset);
    REQUIRE((vm_saved.clock.flags & KVM_CLOCK_HOST_TSC) != 0);
    const uint64_t tsc_a = vm_saved.clock.host_tsc + *saved.tsc_offset;

    Machine b;
    vmm::restore_vm_state(b.t.vm, vm_saved);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));  // a slow restore
    vmm::restore_vcpu_state(b.t.vm, *b.vcpu, saved);
    vmm::KvmVcpu* vcpus[] = {b.vcpu.get()};
    REQUIRE(vmm::restore_tsc_offsets(b.t.vm, vcpus, std::span(&saved, 1), vm_saved.clock));
    const auto [tsc_b, clock_b] = tsc_at_clock(b.t.vm, *b.vcpu);
    // The guest TSC advanced exactly as kvmclock did, within 20 us.
    const double expected = static_cast<double>(tsc_a) +
                            static_cast<double>(clock_b.clock - vm_saved.clock.clock) * saved.tsc_khz / 1e6;
    const double skew_us = (static_cast<double>(tsc_b) - expected) / saved.tsc_khz * 1000;
    INFO("TSC skew against kvmclock after the restore: " << skew_us << " us");
    CHECK(std::abs(skew_us) < 20);
    // And a decoded version-2 state carries the offset.
    StateWriter w;
    vmm::encode_vcpu_state(w, saved);
    StateReader r(w.bytes(), "vcpu0");
    CHECK(vmm::decode_vcpu_state(r).tsc_offset == saved.tsc_offset);
}

TEST_CASE("vcpu state: restored into another VM's vCPU, the guest goes on from the saved instruction", "[kvm]") {
    Machine a;
    REQUIRE(next_out(*a.vcpu) == 'x');
    // The OUT completes (RIP moves past it) only on the next KVM_RUN: enter with immediate_exit,
    // as a paused vCPU thread has, so the state is the instruction after it.
    a.vcpu->run_struct()->immediate_exit = 1;
    REQUIRE_FALSE(a.vcpu->run());
    a.vcpu->run_struct()->immediate_exit = 0;
    kvm_regs regs = a.vcpu->get_regs();
    regs.rbx = 0x1122334455667788;
    a.vcpu->set_regs(regs);
    a.vcpu->set_msrs({{kMsrSysenterCs, 0x10}});
    const std::vector<uint32_t> msrs = vmm::saved_msr_indices(a.t.kvm, *a.vcpu);
    CHECK(std::find(msrs.begin(), msrs.end(), kMsrSysenterCs) != msrs.end());
    CHECK(msrs.front() == 0x10);  // IA32_TSC restores first
    const vmm::VcpuState saved = vmm::save_vcpu_state(a.t.vm, *a.vcpu, msrs);
    CHECK(saved.tsc_khz > 0);
    CHECK(saved.xsave.size() >= 4096);
    const vmm::KvmVmState vm_saved = vmm::save_vm_state(a.t.vm);

    // Through the encoding, as a snapshot file would carry it.
    StateWriter w;
    vmm::encode_vcpu_state(w, saved);
    vmm::encode_vm_state(w, vm_saved);
    StateReader r(w.bytes(), "test");
    const vmm::VcpuState decoded = vmm::decode_vcpu_state(r);
    const vmm::KvmVmState vm_decoded = vmm::decode_vm_state(r);
    r.expect_end();

    Machine b;
    vmm::restore_vm_state(b.t.vm, vm_decoded);
    vmm::restore_vcpu_state(b.t.vm, *b.vcpu, decoded);
    CHECK(b.vcpu->get_regs().rbx == 0x1122334455667788);
    CHECK(b.vcpu->get_regs().rip == a.vcpu->get_regs().rip);
    CHECK(b.vcpu->get_msr(kMsrSysenterCs) == 0x10);
    // The guest's clock goes on from the saved value, not from the new VM's zero.
    const vmm::KvmVmState vm_b = vmm::save_vm_state(b.t.vm);
    CHECK(vm_b.clock.clock >= vm_saved.clock.clock);
    CHECK(vm_b.clock.clock - vm_saved.clock.clock < 10'000'000'000ULL);
    CHECK(std::memcmp(&vm_b.ioapic, &vm_saved.ioapic, sizeof(vm_b.ioapic)) == 0);
    CHECK(vm_b.pit.channels[0].mode == vm_saved.pit.channels[0].mode);
    // The port write after the saved one: 'x' + 1, then the hlt.
    CHECK(next_out(*b.vcpu) == 'y');
}

TEST_CASE("vcpu state: a decoded state with a bad layout or field is refused naming it", "[snapshot]") {
    vmm::VcpuState s;
    s.xsave.resize(4096);
    s.tsc_khz = 1000000;
    StateWriter good;
    vmm::encode_vcpu_state(good, s);
    {
        StateReader r(good.bytes(), "vcpu0");
        const vmm::VcpuState back = vmm::decode_vcpu_state(r);
        r.expect_end();
        CHECK(back.tsc_khz == 1000000);
    }
    SECTION("truncated anywhere") {
        for (size_t len = 0; len < good.bytes().size(); len++) {
            StateReader r(std::span(good.bytes()).first(len), "vcpu0");
            CHECK_THROWS_WITH(vmm::decode_vcpu_state(r), Catch::StartsWith("vcpu0: saved state field '"));
        }
    }
    SECTION("a struct of another size") {
        StateWriter w;
        w.put<uint32_t>(1);
        w.put<uint32_t>(3);  // kvm_mp_state is 4 bytes
        w.put_bytes(std::vector<uint8_t>(3, 0));
        StateReader r(w.bytes(), "vcpu0");
        CHECK_THROWS_WITH(vmm::decode_vcpu_state(r), "vcpu0: saved state field 'mp_state': size 3 where 4 was expected");
    }
    SECTION("an XSAVE area too small") {
        s.xsave.resize(100);
        StateWriter w;
        vmm::encode_vcpu_state(w, s);
        StateReader r(w.bytes(), "vcpu0");
        CHECK_THROWS_WITH(vmm::decode_vcpu_state(r),
                          "vcpu0: saved state field 'xsave': 100 bytes (an XSAVE area has 4096 to 65536)");
    }
}

}  // namespace unit_vcpu_state_test
