// The backend side's sendmsg in the vhost-user tests and fuzz target: bytes with at most one
// descriptor attached (SCM_RIGHTS), as a backend sends a reply.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <cstring>
#include <span>

namespace embervm::test::vhost_user {

// One sendmsg of `bytes` on `sock` with `fd` attached (none when fd < 0); its result.
inline ssize_t send_with_fd(int sock, std::span<const uint8_t> bytes, int fd) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))]{};
    iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (fd >= 0) {
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    return ::sendmsg(sock, &msg, MSG_NOSIGNAL);
}

}  // namespace embervm::test::vhost_user
