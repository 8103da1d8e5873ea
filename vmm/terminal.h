// Puts a terminal into raw mode for the guest console and restores it on destruction.
#pragma once

#include <termios.h>

namespace embervm::vmm {

class RawTerminal {
public:
    // Does nothing unless fd is a terminal.
    explicit RawTerminal(int fd);
    RawTerminal(const RawTerminal&) = delete;
    RawTerminal& operator=(const RawTerminal&) = delete;
    ~RawTerminal();
    bool active() const { return active_; }
    void restore();

private:
    int fd_;
    bool active_ = false;
    termios saved_{};
};

}  // namespace embervm::vmm
