// Bytes with file descriptors beside them on a Unix stream socket (SCM_RIGHTS): one sendmsg or
// recvmsg, for the places that hand a descriptor to another process or take one (the Uffd
// memory backend and its example handler, the vhost-user tests).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "vmm/sys/fd.h"

namespace embervm {

// One sendmsg (MSG_NOSIGNAL) of `bytes` on `sock` with `fd` attached (none when fd < 0); its
// result (the bytes sent, or -1 with errno).
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

// One recvmsg (MSG_CMSG_CLOEXEC) into `out`; the descriptors that came with the bytes (up to
// four per call; more are cut off by the kernel and closed) are appended to `fds`, owned. Its
// result (the bytes read, 0 at the end of the stream, or -1 with errno).
inline ssize_t receive_with_fds(int sock, std::span<uint8_t> out, std::vector<FileDescriptor>& fds) {
    constexpr size_t kMax = 4;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMax)]{};
    iovec iov{out.data(), out.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return n;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd = -1;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            fds.emplace_back(fd);
        }
    }
    return n;
}

}  // namespace embervm
