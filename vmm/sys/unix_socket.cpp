// Taking over a Unix socket path (vmm/sys/unix_socket.h).
#include "vmm/sys/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

#include "vmm/sys/error.h"
#include "vmm/sys/fd.h"

namespace embervm {

std::optional<sockaddr_un> unix_address(std::string_view path) {
    if (path.empty() || path.size() > kMaxUnixSocketPath) return std::nullopt;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    return addr;
}

bool unix_socket_is_live(const std::string& path) {
    const auto addr = unix_address(path);
    FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!addr || !fd) return false;
    return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) == 0;
}

void remove_stale_unix_socket(const std::string& path, std::string_view what) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return;
    if (!S_ISSOCK(st.st_mode)) throw Error(fmt::format("{} socket {}: a file that is not a socket is in the way", what, path));
    if (unix_socket_is_live(path)) throw Error(fmt::format("{} socket {}: another process is serving on it", what, path));
    if (::unlink(path.c_str()) != 0) throw sys_error(fmt::format("{} socket {}: removing the stale socket", what, path));
}

}  // namespace embervm
