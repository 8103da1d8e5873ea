// Error types shared by every layer: host/user errors carry what was attempted and errno.
#pragma once

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace embervm {

// An error caused by the host or the user (ioctl failure, missing file, bad config).
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Builds an Error from the current errno: "<what>: <strerror> (errno N)".
inline Error sys_error(const std::string& what, int err = errno) {
    return Error(fmt::format("{}: {} (errno {})", what, std::strerror(err), err));
}

}  // namespace embervm
