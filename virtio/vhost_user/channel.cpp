// The frontend's end of a vhost-user Unix socket.
#include "virtio/vhost_user/channel.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "vmm/sys/unix_socket.h"

namespace embervm::virtio::vhost_user {

Channel::Channel(FileDescriptor socket, std::chrono::milliseconds reply_timeout)
    : socket_(std::move(socket)), timeout_(reply_timeout) {}

Channel Channel::connect(const std::string& path, std::chrono::milliseconds reply_timeout) {
    const auto addr = unix_address(path);
    if (!addr) {
        throw Error(fmt::format("vhost-user socket {}: the path must be 1 to {} bytes long", path, kMaxUnixSocketPath));
    }
    FileDescriptor s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) {
        throw sys_error("vhost-user: socket(AF_UNIX)");
    }
    if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
        throw sys_error(fmt::format("vhost-user socket {}: connect", path));
    }
    return Channel(std::move(s), reply_timeout);
}

void Channel::send(const OutMessage& m, std::span<const int> fds) {
    if (fds.size() > kMaxFds) {
        throw Error(fmt::format("vhost-user: {} with {} descriptors (at most {})", request_name(m.request), fds.size(),
                                kMaxFds));
    }
    const std::vector<uint8_t> bytes = m.bytes();
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)]{};
    iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!fds.empty()) {
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    // The descriptors go with the first byte; the rest of a long message may need more sends.
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::sendmsg(socket_.get(), &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw ProtocolError(fmt::format("vhost-user: sending {}: {}", request_name(m.request),
                                            std::strerror(errno)));
        }
        done += static_cast<size_t>(n);
        iov.iov_base = const_cast<uint8_t*>(bytes.data()) + done;
        iov.iov_len = bytes.size() - done;
        msg.msg_control = nullptr;
        msg.msg_controllen = 0;
    }
}

void Channel::read_exact(std::span<uint8_t> out, Request asked) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    size_t done = 0;
    while (done < out.size()) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                                 std::chrono::steady_clock::now());
        pollfd p{socket_.get(), POLLIN, 0};
        const int ready = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) {
            throw ProtocolError(fmt::format("vhost-user: no reply to {} within {} ms", request_name(asked),
                                            timeout_.count()));
        }
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)]{};
        iovec iov{out.data() + done, out.size() - done};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
        const ssize_t n = ::recvmsg(socket_.get(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            throw ProtocolError(fmt::format("vhost-user: reading the reply to {}: {}", request_name(asked),
                                            std::strerror(errno)));
        }
        // No reply embervm asks for carries descriptors: close any that came and refuse the reply.
        bool had_fds = false;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < count; i++) {
                    int fd = -1;
                    std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                    FileDescriptor{fd};
                }
                had_fds = true;
            }
        }
        if (had_fds || (msg.msg_flags & MSG_CTRUNC) != 0) {
            throw ProtocolError(fmt::format("vhost-user: the reply to {} carries file descriptors",
                                            request_name(asked)));
        }
        if (n == 0) {
            throw ProtocolError(fmt::format("vhost-user: the backend closed the connection (waiting for the reply "
                                            "to {})",
                                            request_name(asked)));
        }
        done += static_cast<size_t>(n);
    }
}

Channel::Reply Channel::receive(Request asked) {
    std::array<uint8_t, kHeaderSize> raw{};
    read_exact(raw, asked);
    Reply r{decode_header(raw), {}};
    check_reply_header(r.header, asked);
    r.payload.resize(r.header.size);
    read_exact(r.payload, asked);
    return r;
}

}  // namespace embervm::virtio::vhost_user
