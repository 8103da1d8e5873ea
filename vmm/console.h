// The host side of the guest's console: where the guest's output goes (a file or the
// process's stdout), and the process's stdin fed to the guest's console device (the UART or
// virtio-console: devices/console_input.h) on the event loop, with
// the terminal in raw mode and the Ctrl-A x escape that ends the VM.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "vmm/terminal.h"

namespace embervm::devices {
class ConsoleInput;
}

namespace embervm::vmm {

// The guest console's output: the file `path` (created or truncated), or stdout without one.
class ConsoleOutput {
public:
    // Throws ConfigError "--serial-out: cannot open <path>: <strerror>".
    explicit ConsoleOutput(const std::optional<std::string>& path);
    ~ConsoleOutput();
    ConsoleOutput(const ConsoleOutput&) = delete;
    ConsoleOutput& operator=(const ConsoleOutput&) = delete;

    // Writes all of `bytes`, waiting on a full non-blocking terminal so that no output is
    // dropped; a console that is gone (EOF, EPIPE) drops them: the guest must not stall on it.
    void write(std::span<const uint8_t> bytes) const;
    // The descriptor written to (stdout or the file; owned by this object).
    int fd() const { return fd_; }

private:
    int fd_ = -1;
};

// The process's stdin (or another terminal, pipe or socket) feeding the guest's console device.
// Ctrl-A x calls `quit`; Ctrl-A Ctrl-A sends one Ctrl-A (the escape works on a terminal only:
// from a pipe every byte goes through).
//
// Back-pressure without polling: the bytes the device turns away (the UART's input buffer is
// full, the virtio-console driver has no receive buffers) wait here, and no more is read from
// the host meanwhile. The device calls its input-ready callback (the UART on the vCPU thread
// whose RBR read drained its buffer, virtio-console when the driver adds receive buffers) once
// there is room again; the callback posts to the event loop, where the waiting bytes are
// offered again and reading goes on. Everything but that post runs on the loop thread.
class StdinConsole {
public:
    // Null when `input_fd` cannot be watched on the event loop (a regular file, /dev/null,
    // closed). Throws Error if it cannot be duplicated. Starts reading at once. `target` must
    // outlive the console; its input-ready callback belongs to the console until destruction.
    static std::unique_ptr<StdinConsole> attach(boost::asio::io_context& io, devices::ConsoleInput& target,
                                                std::function<void()> quit, int input_fd = STDIN_FILENO);
    // On the loop thread or while the loop does not run.
    ~StdinConsole();
    StdinConsole(const StdinConsole&) = delete;
    StdinConsole& operator=(const StdinConsole&) = delete;

    // Puts the terminal back as it was (at the end of the run; also on destruction).
    void restore_terminal() { terminal_.restore(); }

private:
    // What the device's callback reaches the console through: it may outlive the console.
    struct Wakeup;

    StdinConsole(boost::asio::io_context& io, int fd, int terminal_fd, devices::ConsoleInput& target,
                 std::function<void()> quit);
    // Hands the waiting bytes to the device, then reads the host once all of them were taken.
    void feed_guest();
    void take_input(std::span<const uint8_t> bytes);

    boost::asio::posix::stream_descriptor descriptor_;
    RawTerminal terminal_;
    devices::ConsoleInput& target_;
    std::function<void()> quit_;
    std::shared_ptr<Wakeup> wakeup_;
    std::array<uint8_t, 512> buffer_{};
    std::vector<uint8_t> pending_;  // read from the host but not yet accepted by the device
    bool reading_ = false;          // an async read of the host is outstanding
    bool input_closed_ = false;     // EOF or a read error: nothing more to read
    bool escape_pending_ = false;
};

}  // namespace embervm::vmm
