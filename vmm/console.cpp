// The guest console on the host: output to a file or stdout, stdin into the guest's UART.
#include "vmm/console.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "devices/serial.h"
#include "vmm/config/config.h"
#include "vmm/sys/error.h"
#include "vmm/sys/log.h"
#include "vmm/sys/write_all.h"

namespace embervm::vmm {

namespace asio = boost::asio;

namespace {
constexpr uint8_t kConsoleEscape = 0x01;  // Ctrl-A, then 'x' quits
}  // namespace

ConsoleOutput::ConsoleOutput(const std::optional<std::string>& path) {
    if (!path) {
        fd_ = STDOUT_FILENO;
        return;
    }
    fd_ = ::open(path->c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) {
        const int err = errno;
        throw ConfigError(fmt::format("--serial-out: cannot open {}: {}", *path, std::strerror(err)));
    }
}

ConsoleOutput::~ConsoleOutput() {
    if (fd_ >= 0 && fd_ != STDOUT_FILENO) ::close(fd_);
}

void ConsoleOutput::write(std::span<const uint8_t> bytes) const {
    // A full terminal is waited on; EOF/EPIPE drops the bytes: the guest must not stall on it.
    write_all(fd_, bytes, WhenFull::Wait);
}

std::unique_ptr<StdinConsole> StdinConsole::attach(asio::io_context& io, devices::Serial& serial,
                                                   std::function<void()> quit) {
    struct stat st{};
    if (::fstat(STDIN_FILENO, &st) < 0) return nullptr;
    // epoll cannot watch regular files (or /dev/null); only terminals, pipes and sockets feed the guest.
    const bool pollable = S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || ::isatty(STDIN_FILENO) != 0;
    if (!pollable) return nullptr;
    const int fd = ::fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) throw sys_error("dup of stdin");
    std::unique_ptr<StdinConsole> console(new StdinConsole(io, fd, serial, std::move(quit)));
    console->read();
    return console;
}

StdinConsole::StdinConsole(asio::io_context& io, int fd, devices::Serial& serial, std::function<void()> quit)
    : descriptor_(io, fd), retry_(io), terminal_(STDIN_FILENO), serial_(serial), quit_(std::move(quit)) {}

void StdinConsole::take_input(std::span<const uint8_t> bytes) {
    for (const uint8_t c : bytes) {
        if (escape_pending_) {
            escape_pending_ = false;
            if (c == 'x' || c == 'X') {
                quit_();
                return;
            }
            if (c != kConsoleEscape) pending_.push_back(kConsoleEscape);
        } else if (c == kConsoleEscape && terminal_.active()) {
            escape_pending_ = true;
            continue;
        }
        pending_.push_back(c);
    }
}

void StdinConsole::read() {
    // Offer what the UART has not taken yet; while its buffer is full, try again shortly
    // instead of reading more from the host (back-pressure, no bytes dropped).
    if (!pending_.empty()) {
        const size_t taken = serial_.enqueue_input(pending_);
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(taken));
        if (!pending_.empty()) {
            retry_.expires_after(std::chrono::milliseconds(10));
            retry_.async_wait([this](const boost::system::error_code& ec) {
                if (!ec) read();
            });
            return;
        }
    }
    descriptor_.async_read_some(asio::buffer(buffer_), [this](const boost::system::error_code& ec, size_t n) {
        if (ec) {
            log::debug("stdin closed: {}", ec.message());
            return;
        }
        take_input(std::span<const uint8_t>(buffer_.data(), n));
        read();
    });
}

}  // namespace embervm::vmm
