// Taking over a Unix socket path (vmm/sys/unix_socket.h).
#include "vmm/sys/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "vmm/sys/error.h"
#include "vmm/sys/fd.h"

namespace embervm {

bool unix_socket_is_live(const std::string& path) {
    FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof(addr.sun_path) - 1));
    return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
}

void remove_stale_unix_socket(const std::string& path, std::string_view what) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return;
    if (!S_ISSOCK(st.st_mode)) throw Error(fmt::format("{} socket {}: a file that is not a socket is in the way", what, path));
    if (unix_socket_is_live(path)) throw Error(fmt::format("{} socket {}: another process is serving on it", what, path));
    if (::unlink(path.c_str()) != 0) throw sys_error(fmt::format("{} socket {}: removing the stale socket", what, path));
}

}  // namespace embervm
