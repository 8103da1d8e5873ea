// embervm's C++ library API: build a microVM from a configuration, run it on threads of its
// own, pause, resume, change the balloon target and end it, from the embedding program. Several
// VMs may run in one process. The `embervm` command-line program is a thin client of the same
// VMM.
//
//   auto vm = embervm::Vm::from_json(R"({"boot-source": {"kernel_image_path": "vmlinux"}})");
//   vm->start();              // returns once the vCPUs run; throws if the VM cannot be built
//   vm->pause(); vm->resume();
//   vm->request_shutdown();   // or wait for the guest to power off / reboot
//   embervm::vmm::VmExit exit = vm->wait();
//
// Errors: a bad configuration throws embervm::vmm::ConfigError (one line naming the field);
// other failures to build the VM throw embervm::Error.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "vmm/config.h"
#include "vmm/vm_exit.h"

namespace embervm {

struct VmOptions {
    // The guest console goes to this file (created or truncated); by default it is discarded.
    std::optional<std::string> serial_out;
    // ELF kernels with a PVH note boot through it (else the 64-bit Linux boot protocol).
    bool prefer_pvh = true;
};

enum class VmState { Created, Running, Paused, Ended };
const char* to_string(VmState state);

class Vm {
public:
    // Parses a Firecracker-style configuration document (the --config-file schema).
    static std::unique_ptr<Vm> from_json(std::string_view config_json, VmOptions options = {});
    explicit Vm(vmm::VmConfig config, VmOptions options = {});
    // Ends a VM that still runs (as request_shutdown()) and waits for it.
    ~Vm();
    Vm(const Vm&) = delete;
    Vm& operator=(const Vm&) = delete;

    // Builds the VM and starts it. Throws if it cannot be built (then state() is Ended).
    // Once only.
    void start();
    // false if the VM is not running (not started, already ended).
    bool pause();
    bool resume();
    // Ends the VM now (exit reason Requested, status 0). Returns at once; wait() for the end.
    void request_shutdown();
    // Blocks until the VM ended; its exit (also after it was returned once).
    vmm::VmExit wait();
    VmState state() const;

    // The balloon's target in MiB; false without a balloon device or above the guest's memory.
    bool set_balloon_target_mib(uint64_t mib);
    // The guest's last balloon statistics as a JSON object (Firecracker's GET /balloon/statistics
    // field names, bytes), or nullopt without a balloon or statistics.
    std::optional<std::string> balloon_statistics_json() const;

    const vmm::VmConfig& config() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace embervm
