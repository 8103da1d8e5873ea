// Unix socket paths: as socket addresses, and taking one over to listen on (a stale socket left by
// a process that is gone is removed, anything else there is an error; the API server and the
// vsock device).
#pragma once

#include <sys/types.h>
#include <sys/un.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "vmm/sys/fd.h"

namespace embervm {

// The longest path a sockaddr_un holds (without its NUL).
inline constexpr size_t kMaxUnixSocketPath = sizeof(sockaddr_un::sun_path) - 1;

// `path` as an AF_UNIX address; nullopt when it is empty or longer than kMaxUnixSocketPath.
std::optional<sockaddr_un> unix_address(std::string_view path);

// Whether some process accepts connections on the Unix socket at `path`.
bool unix_socket_is_live(const std::string& path);

// Makes `path` free for bind(): nothing there, or a socket no process serves on, which is
// removed. A file that is not a socket, or a live socket, is an Error; so is a failed unlink
// (with errno). Messages read "<what> socket <path>: ...".
void remove_stale_unix_socket(const std::string& path, std::string_view what);

// A listening Unix stream socket at `path` (SOCK_CLOEXEC, plus SOCK_NONBLOCK if `nonblocking`):
// takes the path over as remove_stale_unix_socket does, then binds a temporary name in the same
// directory, sets its permission bits to `mode` (when given; otherwise the umask decides),
// listens, and only then renames it to `path`. So the path appears already listening: a client
// that waits for the file and connects at once is never refused (binding `path` itself would
// show the file before listen()). Should another process create `path` meanwhile, that is an
// Error and its file stays. Messages read "<what> socket <path>: ...".
FileDescriptor listen_unix_socket(const std::string& path, std::string_view what, int backlog,
                                  std::optional<mode_t> mode, bool nonblocking);

}  // namespace embervm
