// Writing a whole buffer to a file descriptor: the one loop for short writes, EINTR and a full
// non-blocking descriptor, used by the logs, the metrics file and the guest's console output.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace embervm {

// What write_all() does when a non-blocking descriptor is full (EAGAIN).
enum class WhenFull {
    // Waits in poll() until it takes more: nothing is dropped (the guest's console output).
    Wait,
    // Fails with EAGAIN; but once part of the data went out, the rest is given up to 100 ms, so a
    // reader of a pipe sees whole lines (logs, metrics).
    FinishLine,
};

// Writes all of `data` to `fd`, retrying short writes and EINTR. false if it could not, with
// errno set (EAGAIN, EPIPE, ENOSPC, ...; EIO if write(2) made no progress).
bool write_all(int fd, std::span<const uint8_t> data, WhenFull when_full);
bool write_all(int fd, std::string_view data, WhenFull when_full);

}  // namespace embervm
