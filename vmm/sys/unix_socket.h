// Taking over a Unix socket path to listen on: a stale socket left by a process that is gone is
// removed, anything else there is an error. Used by the API server and the vsock device.
#pragma once

#include <string>
#include <string_view>

namespace embervm {

// Whether some process accepts connections on the Unix socket at `path`.
bool unix_socket_is_live(const std::string& path);

// Makes `path` free for bind(): nothing there, or a socket no process serves on, which is
// removed. A file that is not a socket, or a live socket, is an Error; so is a failed unlink
// (with errno). Messages read "<what> socket <path>: ...".
void remove_stale_unix_socket(const std::string& path, std::string_view what);

}  // namespace embervm
