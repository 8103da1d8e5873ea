// VsockDevice's per-connection state, shared by vsock_device.cpp (packets to and from the
// guest) and host_side.cpp (the host sockets and the epoll set). Internal to virtio/vsock.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "virtio/vsock/vsock_device.h"
#include "vmm/sys/fd.h"

namespace embervm::virtio::vsock {

using Clock = std::chrono::steady_clock;

// One stream connection between a guest port and a host socket.
struct VsockDevice::Connection {
    enum class State { kLocalInit, kEstablished };
    FileDescriptor fd;
    Key key;  // (host port, guest port)
    State state = State::kLocalInit;
    bool host_initiated = false;
    Clock::time_point deadline{};  // kLocalInit: the guest must answer the REQUEST by then

    // Guest bytes the host socket has not taken yet (at most kConnectionBuffer: the credit).
    std::vector<uint8_t> to_host;
    size_t to_host_head = 0;
    uint32_t fwd_cnt = 0;       // guest bytes written to the host socket
    uint32_t fwd_cnt_sent = 0;  // the fwd_cnt the guest was last told
    // Host -> guest credit, from the guest's headers.
    uint32_t rx_cnt = 0;  // payload bytes sent to the guest
    uint32_t peer_buf_alloc = 0;
    uint32_t peer_fwd_cnt = 0;

    bool guest_shut_send = false;  // the guest sends no more
    bool guest_shut_rcv = false;   // the guest takes no more
    bool host_eof = false;
    bool readable = false;         // the socket was readable and has not been drained since

    // Packets waiting for a receive buffer.
    bool want_request = false, want_response = false, want_rst = false, want_shutdown = false;
    bool want_credit_update = false, want_credit_request = false;
    bool credit_requested = false;  // a CREDIT_REQUEST went out and no credit came since
    bool in_rx_queue = false;

    uint32_t interest = 0;  // the epoll events registered (0: not in the epoll set)

    size_t buffered() const { return to_host.size() - to_host_head; }
    bool can_read() const {
        return state == State::kEstablished && !host_eof && !guest_shut_rcv && !want_rst;
    }
};

// A host process that connected to uds_path and has not sent its whole CONNECT line yet.
struct VsockDevice::PendingConnect {
    FileDescriptor fd;
    std::string line;
    Clock::time_point deadline;
};

}  // namespace embervm::virtio::vsock
