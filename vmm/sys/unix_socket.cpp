// Taking over a Unix socket path (vmm/sys/unix_socket.h).
#include "vmm/sys/unix_socket.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
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

namespace {

// Renames `from` to `to` inside `dir` unless `to` exists; where the file system cannot promise
// that (RENAME_NOREPLACE unsupported), checks first and renames.
int rename_no_replace(int dir, const char* from, const char* to) {
    if (::renameat2(dir, from, dir, to, RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
    struct stat st {};
    if (::fstatat(dir, to, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        errno = EEXIST;
        return -1;
    }
    return ::renameat(dir, from, dir, to);
}

}  // namespace

FileDescriptor listen_unix_socket(const std::string& path, std::string_view what, int backlog,
                                  std::optional<mode_t> mode, bool nonblocking) {
    if (!unix_address(path)) {
        throw Error(path.empty() ? fmt::format("{} socket: empty path", what)
                                 : fmt::format("{} socket {}: path longer than {} bytes", what, path, kMaxUnixSocketPath));
    }
    remove_stale_unix_socket(path, what);

    const size_t slash = path.rfind('/');
    const std::string dir_name = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
    if (base.empty() || base == "." || base == "..") throw Error(fmt::format("{} socket {}: not a file name", what, path));
    FileDescriptor dir(::open(dir_name.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir) throw sys_error(fmt::format("{} socket {}: its directory", what, path));

    // The temporary name: in the same directory (a rename cannot cross file systems), reached
    // through /proc/self/fd when the directory's own path leaves no room for it.
    static std::atomic<unsigned> sequence{0};
    const std::string temp = fmt::format(".embervm-{}-{}.sock", ::getpid(), sequence.fetch_add(1));
    std::string temp_path = dir_name + "/" + temp;
    if (!unix_address(temp_path)) temp_path = fmt::format("/proc/self/fd/{}/{}", dir.get(), temp);
    const auto temp_addr = unix_address(temp_path);
    if (!temp_addr) throw Error(fmt::format("{} socket {}: no room for a temporary name", what, path));

    FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
    if (!fd) throw sys_error(fmt::format("{} socket {}: socket", what, path));
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*temp_addr), sizeof(*temp_addr)) != 0) {
        throw sys_error(fmt::format("{} socket {}: bind (as {})", what, path, temp_path));
    }
    const auto fail = [&](std::string_view step) {
        const int saved = errno;
        ::unlinkat(dir.get(), temp.c_str(), 0);
        errno = saved;
        return sys_error(fmt::format("{} socket {}: {}", what, path, step));
    };
    if (mode && ::fchmodat(dir.get(), temp.c_str(), *mode, 0) != 0) throw fail("chmod");
    if (::listen(fd.get(), backlog) != 0) throw fail("listen");
    if (rename_no_replace(dir.get(), temp.c_str(), base.c_str()) != 0) {
        if (errno == EEXIST) {
            ::unlinkat(dir.get(), temp.c_str(), 0);
            throw Error(fmt::format("{} socket {}: another process created it meanwhile", what, path));
        }
        throw fail("rename into place");
    }
    return fd;
}

}  // namespace embervm
