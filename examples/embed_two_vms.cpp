// Embedding example: one program runs two microVMs in-process through embervm's library API
// (vmm/embervm.h), pauses one, shows that it makes no progress while paused, resumes it and
// ends both.
//
//   embed_two_vms GUEST_ELF [WORKDIR]
//
// GUEST_ELF is a kernel that prints to the serial console continuously (the test guest
// tests/guests/ticker.c prints "tick N" every few milliseconds). Each VM's console goes to a
// file in WORKDIR (default /tmp); progress is measured as the number of console lines.
// Exit status 0 if everything behaved, 1 otherwise (with the reason).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "embervm.h"

namespace {

size_t lines_in(const std::string& path) {
    std::ifstream f(path);
    size_t n = 0;
    std::string line;
    while (std::getline(f, line)) n++;
    return n;
}

// Waits up to `timeout` for the console to reach `want` lines; returns the count.
size_t wait_lines(const std::string& path, size_t want, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    size_t n = 0;
    while ((n = lines_in(path)) < want && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return n;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: embed_two_vms GUEST_ELF [WORKDIR]\n");
        return 2;
    }
    const std::string guest = argv[1];
    const std::string dir = argc > 2 ? argv[2] : "/tmp";
    const std::string config = fmt::format(R"({{"boot-source": {{"kernel_image_path": "{}"}},
                                                 "machine-config": {{"vcpu_count": 1, "mem_size_mib": 64}}}})",
                                           guest);
    try {
        const std::string con_a = fmt::format("{}/embed-a-{}.log", dir, ::getpid());
        const std::string con_b = fmt::format("{}/embed-b-{}.log", dir, ::getpid());
        auto a = embervm::Vm::from_json(config, {con_a});
        auto b = embervm::Vm::from_json(config, {con_b});
        a->start();
        b->start();
        std::printf("embed: both VMs running (%s, %s)\n", embervm::to_string(a->state()), embervm::to_string(b->state()));
        if (wait_lines(con_a, 20, std::chrono::seconds(30)) < 20 || wait_lines(con_b, 20, std::chrono::seconds(30)) < 20) {
            std::printf("embed: FAIL: the guests do not print\n");
            return 1;
        }

        if (!a->pause() || a->state() != embervm::VmState::Paused) {
            std::printf("embed: FAIL: pause\n");
            return 1;
        }
        const size_t a_paused = lines_in(con_a);
        const size_t b_before = lines_in(con_b);
        std::this_thread::sleep_for(std::chrono::milliseconds(1000));
        const size_t a_after = lines_in(con_a);
        const size_t b_after = lines_in(con_b);
        std::printf("embed: VM a paused for 1 s: %zu -> %zu console lines; VM b running: %zu -> %zu\n", a_paused,
                    a_after, b_before, b_after);
        // At most one line that was being printed when the pause hit.
        if (a_after > a_paused + 1) {
            std::printf("embed: FAIL: the paused VM made progress\n");
            return 1;
        }
        if (b_after <= b_before) {
            std::printf("embed: FAIL: the other VM stopped too\n");
            return 1;
        }
        if (!a->resume()) {
            std::printf("embed: FAIL: resume\n");
            return 1;
        }
        if (wait_lines(con_a, a_after + 10, std::chrono::seconds(30)) < a_after + 10) {
            std::printf("embed: FAIL: the resumed VM makes no progress\n");
            return 1;
        }
        std::printf("embed: VM a resumed: %zu console lines now\n", lines_in(con_a));

        a->request_shutdown();
        b->request_shutdown();
        const auto ea = a->wait();
        const auto eb = b->wait();
        std::printf("embed: VM a ended: %s (status %d); VM b ended: %s (status %d)\n",
                    embervm::vmm::to_string(ea.reason), ea.status, embervm::vmm::to_string(eb.reason), eb.status);
        std::remove(con_a.c_str());
        std::remove(con_b.c_str());
        if (ea.reason != embervm::vmm::VmExit::Reason::Requested || eb.reason != embervm::vmm::VmExit::Reason::Requested) {
            std::printf("embed: FAIL: unexpected exit reason\n");
            return 1;
        }
    } catch (const std::exception& e) {
        std::printf("embed: FAIL: %s\n", e.what());
        return 1;
    }
    std::printf("embed: PASS\n");
    return 0;
}
