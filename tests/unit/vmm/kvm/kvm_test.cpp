// Tests for vmm/kvm/kvm: opening /dev/kvm (and the errors when it cannot be used), VM and vCPU
// creation, memory slots, ioeventfds and irqfds seen from a real guest, MSR and translation
// ioctls, and the errors each wrapper gives. All but the first cases need /dev/kvm ([kvm]).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tests/unit/vmm/kvm/real_mode_vm.h"
#include "vmm/sys/error.h"
#include "vmm/sys/eventfd.h"
#include "vmm/sys/fd.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_kvm_test {

using embervm::Error;
using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using embervm::test::RealModeVm;
using embervm::vmm::EventFd;
using embervm::vmm::KvmSystem;
using embervm::vmm::KvmVcpu;
using embervm::vmm::KvmVm;

namespace {

constexpr uint64_t kMmioAddr = 0x8000;  // just past RealModeVm's RAM
constexpr uint16_t kPioPort = 0x510;

// What `what` throws, or "" if it does not.
template <typename Fn>
std::string error_of(Fn&& what) {
    try {
        what();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

std::string errno_text(int err) { return fmt::format("{} (errno {})", std::strerror(err), err); }

}  // namespace

TEST_CASE("kvm: a missing device names the path and what to do", "[kvm_wrappers]") {
    const std::string msg = error_of([] { KvmSystem kvm("/nonexistent/kvm"); });
    CHECK(msg.rfind("cannot open /nonexistent/kvm (this host offers no KVM: load kvm_intel or kvm_amd", 0) == 0);
    CHECK_THAT(msg, Catch::EndsWith(errno_text(ENOENT)));
}

TEST_CASE("kvm: a file that is not /dev/kvm fails the API version check", "[kvm_wrappers]") {
    CHECK(error_of([] { KvmSystem kvm("/dev/null"); }) == "KVM_GET_API_VERSION: " + errno_text(ENOTTY));
}

TEST_CASE("kvm: system and VM basics", "[kvm]") {
    KvmSystem kvm;
    CHECK(kvm.check_extension(KVM_CAP_USER_MEMORY) > 0);
    CHECK(kvm.check_extension(-1) == 0);  // unknown capabilities read as absent
    CHECK(kvm.vcpu_mmap_size() >= sizeof(kvm_run));
    const auto cpuid = kvm.supported_cpuid();
    REQUIRE_FALSE(cpuid.empty());
    CHECK(cpuid.front().function == 0);
    CHECK(cpuid.front().eax >= 1);  // at least the feature leaf

    KvmVm a(kvm), b(kvm);
    CHECK(a.fd() >= 0);
    CHECK(b.fd() >= 0);
    CHECK(a.fd() != b.fd());
    CHECK(a.check_extension(KVM_CAP_NR_MEMSLOTS) >= 32);
    KvmVcpu vcpu(kvm, a, 3);
    CHECK(vcpu.id() == 3);
    REQUIRE(vcpu.run_struct() != nullptr);
    // A second vCPU with the same id is refused.
    CHECK(error_of([&] { KvmVcpu again(kvm, a, 3); }) == "KVM_CREATE_VCPU: " + errno_text(EEXIST));
}

TEST_CASE("kvm: a guest runs from a registered memory slot", "[kvm]") {
    RealModeVm t;
    // mov ax, [0x100]; add ax, ax; mov [0x102], ax; hlt
    t.ram.write_obj<uint16_t>(GuestAddress(0x100), 0x1234);
    auto vcpu = t.make_vcpu({0xa1, 0x00, 0x01, 0x01, 0xc0, 0xa3, 0x02, 0x01, 0xf4});
    REQUIRE(vcpu->run());
    CHECK(vcpu->run_struct()->exit_reason == KVM_EXIT_HLT);
    CHECK(t.ram.read_obj<uint16_t>(GuestAddress(0x102)) == 0x2468);  // written by the guest
    const kvm_regs r = vcpu->get_regs();
    CHECK((r.rax & 0xffff) == 0x2468);
    CHECK(r.rip == RealModeVm::kCodeAddr + 9);
}

TEST_CASE("kvm: memory slot errors name the slot, the range and errno", "[kvm]") {
    RealModeVm t;  // slot 0: [0, 0x8000)
    const GuestMemory more({{GuestAddress(0), 0x10000}});
    uint8_t* host = more.regions().front().host_base();

    SECTION("a range overlapping another slot") {
        CHECK(error_of([&] { t.vm.set_user_memory_region(1, 0x4000, 0x8000, host); }) ==
              "KVM_SET_USER_MEMORY_REGION slot 1 at 0x4000 size 0x8000: " + errno_text(EEXIST));
    }
    SECTION("a slot number past KVM_CAP_NR_MEMSLOTS") {
        const auto slots = static_cast<uint32_t>(t.vm.check_extension(KVM_CAP_NR_MEMSLOTS));
        CHECK(error_of([&] { t.vm.set_user_memory_region(slots, 0x100000, 0x1000, host); }) ==
              fmt::format("KVM_SET_USER_MEMORY_REGION slot {} at 0x100000 size 0x1000: ", slots) + errno_text(EINVAL));
    }
    SECTION("a size that is not a whole number of pages") {
        CHECK(error_of([&] { t.vm.set_user_memory_region(1, 0x100000, 0x800, host); }) ==
              "KVM_SET_USER_MEMORY_REGION slot 1 at 0x100000 size 0x800: " + errno_text(EINVAL));
    }
    SECTION("a disjoint range in a free slot is accepted and reached by the guest") {
        t.vm.set_user_memory_region(1, 0x100000, 0x10000, host);
        // mov ax, 0x1000; mov ds, ax; mov word [0x0010], 0xbeef; hlt  (0x10000 + 0x10 = slot 1 + 0x10)
        auto vcpu = t.make_vcpu({0xb8, 0x00, 0x10, 0x8e, 0xd8, 0xc7, 0x06, 0x10, 0x00, 0xef, 0xbe, 0xf4});
        REQUIRE(vcpu->run());
        REQUIRE(vcpu->run_struct()->exit_reason == KVM_EXIT_MMIO);  // 0x10010 is not RAM (yet)
        CHECK(vcpu->run_struct()->mmio.phys_addr == 0x10010);
        // Move the slot to where the guest writes: a slot is deleted with size 0.
        t.vm.set_user_memory_region(1, 0x100000, 0, host);
        t.vm.set_user_memory_region(1, 0x10000, 0x10000, host);
        auto again = t.make_vcpu({0xb8, 0x00, 0x10, 0x8e, 0xd8, 0xc7, 0x06, 0x10, 0x00, 0xef, 0xbe, 0xf4}, 1);
        REQUIRE(again->run());
        CHECK(again->run_struct()->exit_reason == KVM_EXIT_HLT);
        CHECK(more.read_obj<uint16_t>(GuestAddress(0x10)) == 0xbeef);
    }
}

TEST_CASE("kvm: ioeventfds fire on guest writes instead of exits", "[kvm]") {
    RealModeVm t;
    EventFd any, match, pio;
    t.vm.register_ioeventfd(any.fd(), kMmioAddr, 4, false, std::nullopt);
    t.vm.register_ioeventfd(match.fd(), kMmioAddr + 4, 4, false, 0xcafef00d);
    t.vm.register_ioeventfd(pio.fd(), kPioPort, 1, true, std::nullopt);
    auto vcpu = t.make_vcpu({
        0x66, 0xc7, 0x06, 0x00, 0x80, 0x78, 0x56, 0x34, 0x12,  // mov dword [0x8000], 0x12345678
        0x66, 0xc7, 0x06, 0x04, 0x80, 0x11, 0x11, 0x11, 0x11,  // mov dword [0x8004], 0x11111111
        0x66, 0xc7, 0x06, 0x04, 0x80, 0x0d, 0xf0, 0xfe, 0xca,  // mov dword [0x8004], 0xcafef00d
        0xba, 0x10, 0x05,                                      // mov dx, 0x510
        0xb0, 0x07,                                            // mov al, 7
        0xee,                                                  // out dx, al
        0xf4,                                                  // hlt
    });
    kvm_run* run = vcpu->run_struct();

    // The first write signals `any` without leaving KVM_RUN; the second does not match the
    // datamatch and comes out as an ordinary MMIO exit.
    REQUIRE(vcpu->run());
    REQUIRE(run->exit_reason == KVM_EXIT_MMIO);
    CHECK(run->mmio.phys_addr == kMmioAddr + 4);
    CHECK(run->mmio.is_write == 1);
    CHECK(run->mmio.len == 4);
    uint32_t data = 0;
    std::memcpy(&data, run->mmio.data, sizeof(data));
    CHECK(data == 0x11111111);
    CHECK(any.consume() == 1);
    CHECK(match.consume() == 0);
    CHECK(pio.consume() == 0);

    // The matching write and the port write signal their eventfds; hlt ends the run.
    REQUIRE(vcpu->run());
    CHECK(run->exit_reason == KVM_EXIT_HLT);
    CHECK(match.consume() == 1);
    CHECK(pio.consume() == 1);
    CHECK(any.consume() == 0);
    CHECK(vcpu->get_regs().rip == RealModeVm::kCodeAddr + 34);
}

TEST_CASE("kvm: ioeventfd errors name the address and errno", "[kvm]") {
    RealModeVm t;
    EventFd event;
    t.vm.register_ioeventfd(event.fd(), kMmioAddr, 4, false, std::nullopt);
    CHECK(error_of([&] { t.vm.register_ioeventfd(event.fd(), kMmioAddr, 4, false, std::nullopt); }) ==
          "KVM_IOEVENTFD at 0x8000: " + errno_text(EEXIST));
    CHECK(error_of([&] { t.vm.register_ioeventfd(event.fd(), kMmioAddr + 8, 3, false, std::nullopt); }) ==
          "KVM_IOEVENTFD at 0x8008: " + errno_text(EINVAL));  // lengths are 0, 1, 2, 4 or 8
    CHECK(error_of([&] { t.vm.register_ioeventfd(-1, kMmioAddr + 8, 4, false, std::nullopt); }) ==
          "KVM_IOEVENTFD at 0x8008: " + errno_text(EBADF));
}

TEST_CASE("kvm: an irqfd takes the writes to its eventfd", "[kvm]") {
    RealModeVm t(true);
    EventFd event;
    t.vm.register_irqfd(event.fd(), 4);
    // KVM reads the eventfd itself when it injects the interrupt: the count the test writes is
    // gone at once (the write is consumed synchronously by the irqfd's wakeup).
    event.signal();
    event.signal(5);
    CHECK(event.consume() == 0);

    // The same eventfd twice is refused; a descriptor that is not an eventfd too.
    CHECK(error_of([&] { t.vm.register_irqfd(event.fd(), 4); }) == "KVM_IRQFD for GSI 4: " + errno_text(EBUSY));
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    embervm::FileDescriptor rd(fds[0]), wr(fds[1]);
    CHECK(error_of([&] { t.vm.register_irqfd(wr.get(), 5); }) == "KVM_IRQFD for GSI 5: " + errno_text(EINVAL));

    // An eventfd not bound to KVM keeps its count, for comparison.
    EventFd unbound;
    unbound.signal(6);
    CHECK(unbound.consume() == 6);
}

TEST_CASE("kvm: MSRs are written and read back; unknown ones are refused by index", "[kvm]") {
    RealModeVm t;
    auto vcpu = t.make_vcpu({0xf4});
    constexpr uint32_t kSysenterEsp = 0x175, kKernelGsBase = 0xc0000102, kBogus = 0x7ffffff0;
    vcpu->set_msrs({{kSysenterEsp, 0x1234'5678}, {kKernelGsBase, 0xffff'8000'0000'1000}});
    CHECK(vcpu->get_msr(kSysenterEsp) == 0x1234'5678);
    CHECK(vcpu->get_msr(kKernelGsBase) == 0xffff'8000'0000'1000);

    CHECK(error_of([&] { vcpu->set_msrs({{kSysenterEsp, 1}, {kBogus, 1}}); }) ==
          "KVM_SET_MSRS: MSR 0x7ffffff0 was refused");
    CHECK(vcpu->get_msr(kSysenterEsp) == 1);  // the entries before the refused one were set
    CHECK(error_of([&] { (void)vcpu->get_msr(kBogus); }) == "KVM_GET_MSRS: MSR 0x7ffffff0 not readable");
}

TEST_CASE("kvm: register, FPU and translation ioctls", "[kvm]") {
    RealModeVm t;
    auto vcpu = t.make_vcpu({0xf4});
    kvm_regs r = vcpu->get_regs();
    r.rbx = 0x1122334455667788;
    vcpu->set_regs(r);
    CHECK(vcpu->get_regs().rbx == 0x1122334455667788);

    kvm_fpu fpu = vcpu->get_fpu();
    CHECK(fpu.fcw == 0x37f);  // the reset value
    fpu.fcw = 0x27f;
    fpu.xmm[3][0] = 0xab;
    vcpu->set_fpu(fpu);
    CHECK(vcpu->get_fpu().fcw == 0x27f);
    CHECK(vcpu->get_fpu().xmm[3][0] == 0xab);

    // Real mode: linear addresses are physical ones, also past RAM.
    CHECK(vcpu->translate(0x1234) == std::optional<uint64_t>(0x1234));
    CHECK(vcpu->translate(0x9'0000) == std::optional<uint64_t>(0x9'0000));

    // Bad sregs are refused with the ioctl's name: CR0.PG without CR0.PE.
    kvm_sregs s = vcpu->get_sregs();
    s.cr0 |= 1u << 31;
    s.cr0 &= ~1ull;
    CHECK(error_of([&] { vcpu->set_sregs(s); }) == "KVM_SET_SREGS: " + errno_text(EINVAL));
}

TEST_CASE("kvm: 64-bit paging through KVM_TRANSLATE", "[kvm]") {
    RealModeVm t;
    auto vcpu = t.make_vcpu({0xf4});
    // Page tables at 0x4000: PML4 -> PDPT -> PD -> PT, mapping linear 0x400000 to 0x2000 and
    // linear 0x401000 to 0x7000; nothing else.
    constexpr uint64_t kPml4 = 0x4000, kPdpt = 0x5000, kPd = 0x6000, kPt = 0x3000;
    constexpr uint64_t kPresentWritable = 0x3;
    t.ram.write_obj<uint64_t>(GuestAddress(kPml4), kPdpt | kPresentWritable);
    t.ram.write_obj<uint64_t>(GuestAddress(kPdpt), kPd | kPresentWritable);
    t.ram.write_obj<uint64_t>(GuestAddress(kPd + 2 * 8), kPt | kPresentWritable);  // 0x400000 / 2 MiB = 2
    t.ram.write_obj<uint64_t>(GuestAddress(kPt), 0x2000 | kPresentWritable);
    t.ram.write_obj<uint64_t>(GuestAddress(kPt + 8), 0x7000 | kPresentWritable);
    kvm_sregs s = vcpu->get_sregs();
    s.cr3 = kPml4;
    s.cr4 = 1u << 5;                    // PAE
    s.cr0 = (1u << 31) | (1u << 0);     // PG, PE
    s.efer = (1u << 8) | (1u << 10);    // LME, LMA
    s.cs.l = 1;
    s.cs.db = 0;
    vcpu->set_sregs(s);

    CHECK(vcpu->translate(0x400000) == std::optional<uint64_t>(0x2000));
    CHECK(vcpu->translate(0x400abc) == std::optional<uint64_t>(0x2abc));
    CHECK(vcpu->translate(0x401008) == std::optional<uint64_t>(0x7008));
    CHECK_FALSE(vcpu->translate(0x402000));
    CHECK_FALSE(vcpu->translate(0x1000));
}

}  // namespace unit_kvm_test
