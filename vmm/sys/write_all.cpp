// write_all: writes a whole buffer to a file descriptor (short writes, EINTR, full pipes).
#include "vmm/sys/write_all.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

namespace embervm {

namespace {
constexpr int kFinishLineWaitMs = 100;
}  // namespace

bool write_all(int fd, std::span<const uint8_t> data, WhenFull when_full) {
    size_t off = 0;
    while (off < data.size()) {
        const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
        if (n > 0) {
            off += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            pollfd pfd{fd, POLLOUT, 0};
            if (when_full == WhenFull::Wait) {
                if (::poll(&pfd, 1, -1) < 0 && errno != EINTR) return false;
                continue;
            }
            // FinishLine: nothing written yet gives up at once; a started line gets a moment.
            if (off > 0 && ::poll(&pfd, 1, kFinishLineWaitMs) > 0) continue;
            errno = EAGAIN;
            return false;
        }
        if (n == 0) errno = EIO;
        return false;
    }
    return true;
}

bool write_all(int fd, std::string_view data, WhenFull when_full) {
    return write_all(fd, std::span(reinterpret_cast<const uint8_t*>(data.data()), data.size()), when_full);
}

}  // namespace embervm
