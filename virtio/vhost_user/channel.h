// The frontend's end of a vhost-user Unix socket: sends messages with descriptors attached
// (SCM_RIGHTS) and reads the backend's replies, with a deadline, so that a backend which never
// answers or hangs up fails the device instead of stalling the VMM.
#pragma once

#include <chrono>
#include <span>
#include <string>
#include <vector>

#include "virtio/vhost_user/message.h"
#include "vmm/sys/fd.h"

namespace embervm::virtio::vhost_user {

class Channel {
public:
    // Takes a connected SOCK_STREAM Unix socket (a socketpair end in the tests).
    explicit Channel(FileDescriptor socket, std::chrono::milliseconds reply_timeout = std::chrono::seconds(5));
    // Connects to the backend listening at `path`; throws Error naming the path.
    static Channel connect(const std::string& path,
                           std::chrono::milliseconds reply_timeout = std::chrono::seconds(5));

    // Sends `m` with `fds` (at most kMaxFds) attached. A backend gone (EPIPE, ECONNRESET) or any
    // other send failure throws ProtocolError; SIGPIPE is never raised.
    void send(const OutMessage& m, std::span<const int> fds = {});

    struct Reply {
        Header header;
        std::vector<uint8_t> payload;
    };
    // Reads one reply to `asked`: checks its header (check_reply_header) before reading the
    // payload it announces, refuses (and closes) any descriptor the backend attached. Throws
    // ProtocolError on EOF, a timeout, or a bad header.
    Reply receive(Request asked);

    int fd() const { return socket_.get(); }

private:
    void read_exact(std::span<uint8_t> out, Request asked);

    FileDescriptor socket_;
    std::chrono::milliseconds timeout_;
};

}  // namespace embervm::virtio::vhost_user
