// Raw-mode terminal for the guest console.
#include "vmm/terminal.h"

#include <unistd.h>

namespace embervm::vmm {

RawTerminal::RawTerminal(int fd) : fd_(fd) {
    if (::isatty(fd) == 0 || ::tcgetattr(fd, &saved_) < 0) {
        return;
    }
    termios raw = saved_;
    // Bytes go to the guest as typed: no echo, no line editing, no signals from ^C/^Z
    // (the console escape Ctrl-A x quits the VMM), but keep output post-processing so the
    // host terminal's own output (logs) still gets CR-LF.
    raw.c_iflag &= ~static_cast<tcflag_t>(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    raw.c_lflag &= ~static_cast<tcflag_t>(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    raw.c_cflag &= ~static_cast<tcflag_t>(CSIZE | PARENB);
    raw.c_cflag |= CS8;
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    if (::tcsetattr(fd, TCSANOW, &raw) == 0) {
        active_ = true;
    }
}

void RawTerminal::restore() {
    if (active_) {
        ::tcsetattr(fd_, TCSANOW, &saved_);
        active_ = false;
    }
}

RawTerminal::~RawTerminal() { restore(); }

}  // namespace embervm::vmm
