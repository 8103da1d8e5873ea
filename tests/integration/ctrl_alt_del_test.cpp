// Ctrl+Alt+Del through the library API (embervm::Vm::send_ctrl_alt_del) into the ticker test
// guest (tests/guests/ticker.c): the guest takes the scancodes from the i8042 one per IRQ 1
// through its I/O APIC and, once Ctrl, Alt and Del are down, resets through the i8042, which
// ends the VM with exit reason GuestReset and status 0. The guests' paths come from the
// environment: EMBERVM_TEST_GUEST_TICKER and EMBERVM_TEST_GUEST_TICKER_PVH.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "vmm/embervm.h"

using embervm::Vm;
using embervm::VmState;
using embervm::vmm::VmExit;
namespace fs = std::filesystem;

namespace {

std::string guest_path(const char* env) {
    const char* p = std::getenv(env);
    if (p == nullptr || *p == '\0') FAIL(env << " is not set (meson sets it)");
    return p;
}

std::string read_file(const fs::path& path) {
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

// Waits until `pred` holds, polling every 10 ms; false after `timeout`.
template <typename Pred>
bool wait_until(Pred pred, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
}

struct TickerVm {
    TickerVm(const std::string& guest, const std::string& cmdline, bool pvh) {
        static int n = 0;
        console = fs::temp_directory_path() / fmt::format("embervm-cad-{}-{}.log", ::getpid(), n++);
        const std::string config = fmt::format(
            R"({{"boot-source": {{"kernel_image_path": "{}", "boot_args": "{}"}},
                 "machine-config": {{"vcpu_count": 1, "mem_size_mib": 64}}}})",
            guest, cmdline);
        embervm::VmOptions options;
        options.serial_out = console.string();
        options.prefer_pvh = pvh;
        vm = Vm::from_json(config, options);
    }
    ~TickerVm() {
        vm.reset();  // ends the VM if it still runs
        fs::remove(console);
    }
    // The console without the '\r' the guest's serial driver sends before each '\n'.
    std::string output() const {
        std::string s = read_file(console);
        std::erase(s, '\r');
        return s;
    }

    fs::path console;
    std::unique_ptr<Vm> vm;
};

// Checks that `needles` occur in `haystack` in this order.
void check_in_order(const std::string& haystack, const std::vector<std::string>& needles) {
    size_t pos = 0;
    for (const auto& n : needles) {
        const size_t at = haystack.find(n, pos);
        INFO("looking for \"" << n << "\" in the console output:\n" << haystack);
        REQUIRE(at != std::string::npos);
        pos = at + n.size();
    }
}

void run_ctrl_alt_del(const std::string& guest, const std::string& cmdline, bool pvh, int set,
                      const std::vector<std::string>& press_bytes) {
    TickerVm t(guest, cmdline, pvh);
    t.vm->start();
    INFO("console so far:\n" << t.output());
    REQUIRE(wait_until([&] { return t.output().find("tick 2\n") != std::string::npos; }, std::chrono::seconds(20)));
    const std::string out = t.output();
    CHECK(out.find(fmt::format("ticker: ready (boot protocol {}, scancode set {})", pvh ? "pvh" : "linux64", set)) !=
          std::string::npos);
    CHECK(out.find("ticker: kbd") == std::string::npos);  // no key before we press one

    const auto sent = std::chrono::steady_clock::now();
    REQUIRE(t.vm->send_ctrl_alt_del());
    const bool ended = wait_until([&] { return t.vm->state() == VmState::Ended; }, std::chrono::seconds(5));
    INFO("console:\n" << t.output());
    REQUIRE(ended);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - sent);
    UNSCOPED_INFO("Ctrl+Alt+Del to the end of the VM: " << took.count() << " ms");
    const VmExit exit = t.vm->wait();
    CHECK(exit.reason == VmExit::Reason::GuestReset);
    CHECK(exit.status == 0);

    std::vector<std::string> expect;
    for (const auto& b : press_bytes) expect.push_back("ticker: kbd " + b + "\n");
    expect.push_back("ticker: ctrl-alt-del\n");
    check_in_order(t.output(), expect);
    CHECK(t.output().find("FAIL") == std::string::npos);
    CHECK_FALSE(t.vm->send_ctrl_alt_del());  // ended
}

}  // namespace

TEST_CASE("ctrl-alt-del: set 1 (translated), 64-bit boot", "[ctrl-alt-del]") {
    run_ctrl_alt_del(guest_path("EMBERVM_TEST_GUEST_TICKER"), "ticker", false, 1, {"0x1d", "0x38", "0xe0", "0x53"});
}

TEST_CASE("ctrl-alt-del: set 2 (translation off by the guest), 64-bit boot", "[ctrl-alt-del]") {
    run_ctrl_alt_del(guest_path("EMBERVM_TEST_GUEST_TICKER"), "ticker.no_xlate", false, 2,
                     {"0x14", "0x11", "0xe0", "0x71"});
}

TEST_CASE("ctrl-alt-del: set 1, PVH boot", "[ctrl-alt-del]") {
    run_ctrl_alt_del(guest_path("EMBERVM_TEST_GUEST_TICKER_PVH"), "ticker", true, 1, {"0x1d", "0x38", "0xe0", "0x53"});
}

TEST_CASE("ctrl-alt-del: false unless the VM runs", "[ctrl-alt-del]") {
    TickerVm t(guest_path("EMBERVM_TEST_GUEST_TICKER"), "ticker", false);
    CHECK_FALSE(t.vm->send_ctrl_alt_del());  // not started
    t.vm->start();
    // Only once the guest routed IRQ 1 (it prints ticks after that): an edge on a masked I/O
    // APIC pin is lost.
    REQUIRE(wait_until([&] { return t.output().find("tick 1\n") != std::string::npos; }, std::chrono::seconds(20)));
    REQUIRE(t.vm->pause());
    // A paused VM takes the key strokes; the guest handles them once it runs again.
    CHECK(t.vm->send_ctrl_alt_del());
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    CHECK(t.vm->state() == VmState::Paused);
    REQUIRE(t.vm->resume());
    REQUIRE(wait_until([&] { return t.vm->state() == VmState::Ended; }, std::chrono::seconds(5)));
    CHECK(t.vm->wait().reason == VmExit::Reason::GuestReset);
    CHECK_FALSE(t.vm->send_ctrl_alt_del());
}
