// The guest console on the host: output to a file or stdout, stdin into the guest's console device.
#include "vmm/console.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include "devices/console_input.h"
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

// Shared by the console and the device's input-ready callback. `console` is read and cleared on
// the loop thread only, so a wake-up posted before the console went is dropped there.
struct StdinConsole::Wakeup {
    explicit Wakeup(asio::io_context& io) : io(io) {}
    asio::io_context& io;
    StdinConsole* console = nullptr;
};

std::unique_ptr<StdinConsole> StdinConsole::attach(asio::io_context& io, devices::ConsoleInput& target,
                                                   std::function<void()> quit, int input_fd) {
    struct stat st{};
    if (::fstat(input_fd, &st) < 0) return nullptr;
    // epoll cannot watch regular files (or /dev/null); only terminals, pipes and sockets feed the guest.
    const bool pollable = S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || ::isatty(input_fd) != 0;
    if (!pollable) return nullptr;
    const int fd = ::fcntl(input_fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) throw sys_error("dup of the console input");
    std::unique_ptr<StdinConsole> console(new StdinConsole(io, fd, input_fd, target, std::move(quit)));
    console->feed_guest();
    return console;
}

StdinConsole::StdinConsole(asio::io_context& io, int fd, int terminal_fd, devices::ConsoleInput& target,
                           std::function<void()> quit)
    : descriptor_(io, fd),
      terminal_(terminal_fd),
      target_(target),
      quit_(std::move(quit)),
      wakeup_(std::make_shared<Wakeup>(io)) {
    wakeup_->console = this;
    // The device calls this (the UART on a vCPU thread, virtio-console on the loop thread with
    // its lock held: it only posts) once the guest has made room after it turned bytes away. It runs at most once per refusal, and a
    // refusal happens in feed_guest() on the loop, before the handler that got it returns: the
    // wake-up posted here always finds the bytes that wait (it cannot come too early, and one
    // that finds nothing to do is harmless).
    target_.set_input_ready_callback([wakeup = wakeup_] {
        asio::post(wakeup->io, [wakeup] {
            if (wakeup->console != nullptr) wakeup->console->feed_guest();
        });
    });
}

StdinConsole::~StdinConsole() {
    target_.set_input_ready_callback(nullptr);
    wakeup_->console = nullptr;
}

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

void StdinConsole::feed_guest() {
    // Back-pressure: while the device has not taken every waiting byte, nothing more is read
    // from the host. Its input-ready callback calls this again once the guest made room.
    if (!pending_.empty()) {
        const size_t taken = target_.enqueue_input(pending_);
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(taken));
        if (!pending_.empty()) return;
    }
    if (reading_ || input_closed_) return;
    reading_ = true;
    // The handler may run after the console went (cancelled): it then finds no console.
    descriptor_.async_read_some(asio::buffer(buffer_), [wakeup = wakeup_](const boost::system::error_code& ec,
                                                                          size_t n) {
        StdinConsole* const self = wakeup->console;
        if (self == nullptr) return;
        self->reading_ = false;
        if (ec) {
            self->input_closed_ = true;
            log::debug("console input closed: {}", ec.message());
            return;
        }
        self->take_input(std::span<const uint8_t>(self->buffer_.data(), n));
        self->feed_guest();
    });
}

}  // namespace embervm::vmm
