// The HTTP/1.1 server of the API on a Unix domain socket (Boost.Beast), on a thread of its own.
//
// It knows HTTP, not the API: every well-formed request goes to one handler, which returns the
// status and JSON body. Requests are handled one at a time on the server's thread (so the
// handler needs no locking against itself), while reading and writing of any number of
// connections proceeds asynchronously; a slow or silent client holds nothing but its own
// connection, which is closed after `idle_timeout`.
//
// Limits: at most `max_connections` at once. When a new client comes at the limit, the
// connection that has waited longest for (the rest of) a request is closed to make room (a flood
// of silent or slow clients, slowloris style, cannot lock a well-behaved client out; each of
// them holds one fd and a few KiB for at most `idle_timeout`); only when every connection has a
// request in progress is the new one closed instead. Both are logged, at most every 10 s.
//
// What the handler never sees: malformed HTTP (400), a header block over the limit (431), a
// body over the limit (413), a body on a request without a length (411). The server answers
// those itself with {"fault_message": "..."} and closes the connection; it keeps serving the
// others.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

namespace embervm::vmm {

struct ApiRequest {
    std::string method;  // "GET", "PUT", "PATCH", ... as sent
    std::string target;  // "/drives/rootfs" (path and query as sent)
    std::string body;
};

struct ApiResponse {
    unsigned status = 200;
    std::string body;  // JSON, or empty (204)
};

// {"fault_message": message} with `status` (Firecracker's error shape).
ApiResponse api_fault(unsigned status, std::string_view message);

struct ApiServerOptions {
    size_t max_body_bytes = 51200;  // Firecracker's default payload limit
    size_t max_header_bytes = 8192;
    size_t max_connections = 64;  // see "Limits" above
    std::chrono::milliseconds idle_timeout{30000};  // for a whole request to arrive, or a reply to leave
    // The server's thread runs under the API allowlist (vmm/sys/seccomp.h) from before its first
    // accept. Off by default (an embedding program decides); the embervm program turns it on.
    // Its handler then must not create threads (InstanceStart: ApiControllerOptions).
    bool seccomp = false;
};

class ApiServer {
public:
    using Handler = std::function<ApiResponse(const ApiRequest&)>;

    // Binds and listens on `socket_path` (mode 0600). A stale socket (nobody accepts on it) is
    // replaced; a live one or any other file there is an error. Throws embervm::Error.
    ApiServer(std::string socket_path, Handler handler, ApiServerOptions options = {});
    // stop().
    ~ApiServer();
    ApiServer(const ApiServer&) = delete;
    ApiServer& operator=(const ApiServer&) = delete;

    // Starts serving on the thread "api". Once. Throws embervm::Error if its seccomp filter
    // cannot be loaded (then nothing is served).
    void start();
    // Closes every connection, joins the thread and removes the socket file. Idempotent; not
    // from the handler.
    void stop();

    const std::string& socket_path() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace embervm::vmm
