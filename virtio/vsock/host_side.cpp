// virtio-vsock, the host's side (virtio/vsock/vsock_device.h): the listening socket at
// uds_path and the CONNECT lines of the processes that connect there, the connections the guest
// opens to "<uds_path>_P", the I/O on each connection's host socket and the device's epoll set.
#include "virtio/vsock/vsock_device.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "virtio/vsock/connection.h"
#include "vmm/sys/error.h"
#include "vmm/sys/log.h"
#include "vmm/sys/unix_socket.h"

namespace embervm::virtio::vsock {

namespace log = embervm::log;

namespace {

constexpr uint64_t kListenerTag = UINT64_MAX;
constexpr uint64_t kPendingTag = uint64_t{1} << 32;  // | fd; a connection's entry is its fd alone

sockaddr_un unix_address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());  // callers checked the length
    return addr;
}

FileDescriptor listen_at(const std::string& path) {
    if (path.empty()) throw Error("vsock socket: empty path");
    // "<path>_4294967295" must fit too: the guest's connections go there.
    if (path.size() + 11 >= sizeof(sockaddr_un::sun_path)) {
        throw Error(fmt::format("vsock socket {}: longer than {} bytes", path, sizeof(sockaddr_un::sun_path) - 12));
    }
    return listen_unix_socket(path, "vsock", 128, std::nullopt, true);
}

// "CONNECT <port>" (the line without its newline): the port, or nullopt.
std::optional<uint32_t> parse_connect_line(std::string_view line) {
    constexpr std::string_view kPrefix = "CONNECT ";
    if (!line.starts_with(kPrefix)) return std::nullopt;
    const std::string_view digits = line.substr(kPrefix.size());
    if (digits.empty() || digits.size() > 10) return std::nullopt;
    uint32_t port = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
    return port;
}

}  // namespace

VsockDevice::VsockDevice(uint64_t guest_cid, std::string uds_path, Limits limits)
    : guest_cid_(guest_cid), uds_path_(std::move(uds_path)), limits_(limits) {
    if (guest_cid_ < kMinGuestCid || guest_cid_ > UINT32_MAX) {
        throw Error(fmt::format("vsock guest_cid {}: must be in [3, 4294967295]", guest_cid_));
    }
    listener_ = listen_at(uds_path_);
    epoll_ = FileDescriptor(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) throw sys_error("vsock: epoll_create1");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenerTag;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listener_.get(), &ev) != 0) throw sys_error("vsock: epoll_ctl");
    listener_watched_ = true;
}

VsockDevice::~VsockDevice() {
    ::unlink(uds_path_.c_str());
}

// ---------------------------------------------------------------------------------------------
// Connection sockets

void VsockDevice::connect_to_host_locked(const PacketHeader& h) {
    const Key key{h.dst_port, h.src_port};
    if (open_connections_locked() >= limits_.max_connections) {
        counters_.connection_limit_refusals++;
        queue_stray_rst_locked(h);
        return;
    }
    FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    const std::string path = fmt::format("{}_{}", uds_path_, h.dst_port);
    const sockaddr_un addr = unix_address(path);
    if (!fd || ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
        // A Unix stream connect completes at once or fails (EAGAIN: the listener's backlog is full).
        counters_.connect_failures++;
        log::debug("{}: guest port {} to {}: {}", name(), h.src_port, path, std::strerror(errno));
        queue_stray_rst_locked(h);
        return;
    }
    auto c = std::make_unique<Connection>();
    c->fd = std::move(fd);
    c->key = key;
    c->state = Connection::State::kEstablished;
    c->want_response = true;
    Connection& ref = *c;
    by_fd_[ref.fd.get()] = key;
    connections_.emplace(key, std::move(c));
    counters_.guest_connections++;
    update_peer_credit_locked(ref, h);
    update_interest_locked(ref);
    schedule_locked(ref);
}

void VsockDevice::guest_data_locked(Connection& c, const PacketHeader& h, Reader& payload) {
    if (c.buffered() + h.len > kConnectionBuffer) {
        counters_.bad_packets++;
        log::debug("{}: guest port {} sent beyond its credit", name(), c.key.second);
        reset_connection_locked(c);
        return;
    }
    counters_.tx_bytes += h.len;
    const auto slices = payload.take_slices(h.len);
    size_t written = 0;
    if (c.buffered() == 0) {
        std::vector<iovec> iov;
        iov.reserve(slices.size());
        for (const auto& s : slices) iov.push_back({const_cast<uint8_t*>(s.data()), s.size()});
        msghdr msg{};
        msg.msg_iov = iov.data();
        msg.msg_iovlen = iov.size();
        const ssize_t n = ::sendmsg(c.fd.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            reset_connection_locked(c);
            return;
        }
        written = n > 0 ? static_cast<size_t>(n) : 0;
        c.fwd_cnt += static_cast<uint32_t>(written);
    }
    // What the socket did not take waits, within the credit the guest was given.
    size_t skip = written;
    for (const auto& s : slices) {
        const size_t k = std::min(skip, s.size());
        skip -= k;
        c.to_host.insert(c.to_host.end(), s.begin() + static_cast<ptrdiff_t>(k), s.end());
    }
    after_flush_locked(c);
    if (!c.want_rst) update_interest_locked(c);
}

void VsockDevice::flush_to_host_locked(Connection& c) {
    while (c.buffered() > 0) {
        const ssize_t n = ::send(c.fd.get(), c.to_host.data() + c.to_host_head, c.buffered(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            reset_connection_locked(c);
            return;
        }
        c.to_host_head += static_cast<size_t>(n);
        c.fwd_cnt += static_cast<uint32_t>(n);
    }
    if (c.buffered() == 0) {
        c.to_host.clear();
        c.to_host_head = 0;
    } else if (c.to_host_head > c.to_host.size() / 2) {
        c.to_host.erase(c.to_host.begin(), c.to_host.begin() + static_cast<ptrdiff_t>(c.to_host_head));
        c.to_host_head = 0;
    }
    after_flush_locked(c);
    if (!c.want_rst) update_interest_locked(c);
}

// The guest's freed credit and its shutdown, once its data is out.
void VsockDevice::after_flush_locked(Connection& c) {
    if (c.want_rst) return;
    if (c.fwd_cnt - c.fwd_cnt_sent >= kConnectionBuffer / 4) {
        c.want_credit_update = true;
        schedule_locked(c);
    }
    if (c.buffered() > 0 || !c.guest_shut_send) return;
    if (c.guest_shut_rcv) {
        reset_connection_locked(c);  // both directions shut: the guest waits for our RST
    } else {
        ::shutdown(c.fd.get(), SHUT_WR);
    }
}

void VsockDevice::update_interest_locked(Connection& c) {
    if (!c.fd) return;
    uint32_t want = 0;
    if (c.can_read() && !c.readable) want |= EPOLLIN;
    if (c.buffered() > 0) want |= EPOLLOUT;
    if (want == c.interest) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = static_cast<uint64_t>(c.fd.get());
    // Without interest the socket leaves the set: a hung-up socket would report EPOLLHUP anyway.
    const int op = want == 0 ? EPOLL_CTL_DEL : c.interest == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (::epoll_ctl(epoll_.get(), op, c.fd.get(), &ev) != 0) {
        throw sys_error(fmt::format("{}: epoll_ctl on a connection's socket", name()));
    }
    c.interest = want;
}

// ---------------------------------------------------------------------------------------------
// The listener, the CONNECT lines and the epoll set

void VsockDevice::on_epoll_locked() {
    epoll_event events[64];
    const int n = ::epoll_wait(epoll_.get(), events, 64, 0);
    for (int i = 0; i < n; i++) {
        const uint64_t tag = events[i].data.u64;
        if (tag == kListenerTag) {
            accept_locked();
        } else if ((tag & kPendingTag) != 0) {
            read_connect_line_locked(static_cast<int>(tag & 0xffffffff));
        } else {
            const auto it = by_fd_.find(static_cast<int>(tag));
            if (it == by_fd_.end()) continue;  // closed by an earlier event of this batch
            on_connection_event_locked(*connections_.at(it->second), events[i].events);
        }
    }
}

void VsockDevice::on_connection_event_locked(Connection& c, uint32_t events) {
    if ((events & EPOLLOUT) != 0 || ((events & (EPOLLHUP | EPOLLERR)) != 0 && c.buffered() > 0)) {
        flush_to_host_locked(c);
        if (c.want_rst) return;
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 && c.can_read()) {
        c.readable = true;
        update_interest_locked(c);  // not watched for reading until drained
        if (peer_credit(c) == 0 && !c.credit_requested) c.want_credit_request = true;
        schedule_locked(c);
    }
}

void VsockDevice::update_listener_locked() {
    const bool want = open_connections_locked() < limits_.max_connections;
    if (want == listener_watched_) return;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenerTag;
    if (::epoll_ctl(epoll_.get(), want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, listener_.get(), &ev) != 0) {
        throw sys_error(fmt::format("{}: epoll_ctl on the listener", name()));
    }
    listener_watched_ = want;
}

void VsockDevice::accept_locked() {
    while (open_connections_locked() < limits_.max_connections) {
        FileDescriptor fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED) {
                log::warn("{}: accept on {}: {}", name(), uds_path_, std::strerror(errno));
            }
            break;
        }
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = kPendingTag | static_cast<uint32_t>(fd.get());
        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) {
            throw sys_error(fmt::format("{}: epoll_ctl on a new host connection", name()));
        }
        auto p = std::make_unique<PendingConnect>();
        const int raw = fd.get();
        p->fd = std::move(fd);
        p->deadline = Clock::now() + limits_.connect_timeout;
        pending_.emplace(raw, std::move(p));
    }
    if (open_connections_locked() >= limits_.max_connections) counters_.connection_limit_refusals++;
    update_listener_locked();
}

void VsockDevice::read_connect_line_locked(int fd) {
    const auto it = pending_.find(fd);
    if (it == pending_.end()) return;
    PendingConnect& p = *it->second;
    // Peek, then take the bytes up to the newline only: what follows it is the connection's data.
    char buf[64];
    const size_t want = std::min(sizeof(buf), limits_.max_connect_line - p.line.size() + 1);
    const ssize_t n = ::recv(fd, buf, want, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    const auto fail = [&](const char* why) {
        counters_.connect_failures++;
        log::debug("{}: a host connection on {} closed: {}", name(), uds_path_, why);
        pending_.erase(it);
        update_listener_locked();
    };
    if (n <= 0) return fail("closed before its CONNECT line");
    const char* nl = static_cast<const char*>(std::memchr(buf, '\n', static_cast<size_t>(n)));
    const size_t take = nl != nullptr ? static_cast<size_t>(nl - buf) + 1 : static_cast<size_t>(n);
    if (::recv(fd, buf, take, MSG_DONTWAIT) != static_cast<ssize_t>(take)) return fail("read error");
    p.line.append(buf, nl != nullptr ? take - 1 : take);
    if (p.line.size() > limits_.max_connect_line) return fail("CONNECT line too long");
    if (nl == nullptr) return;  // more to come
    const auto port = parse_connect_line(p.line);
    if (!port) return fail("not a CONNECT <port> line");
    FileDescriptor sock = std::move(p.fd);
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, sock.get(), nullptr);
    pending_.erase(it);
    start_host_connection_locked(std::move(sock), *port);
}

void VsockDevice::start_host_connection_locked(FileDescriptor fd, uint32_t guest_port) {
    // A host port no connection to this guest port uses (2^30 on, wrapping there).
    uint32_t port = next_host_port_;
    while (connections_.count({port, guest_port}) != 0) {
        port = port == UINT32_MAX ? 1U << 30 : port + 1;
    }
    next_host_port_ = port == UINT32_MAX ? 1U << 30 : port + 1;
    auto c = std::make_unique<Connection>();
    c->fd = std::move(fd);
    c->key = {port, guest_port};
    c->host_initiated = true;
    c->state = Connection::State::kLocalInit;
    c->deadline = Clock::now() + limits_.connect_timeout;
    c->want_request = true;
    Connection& ref = *c;
    by_fd_[ref.fd.get()] = ref.key;
    connections_.emplace(ref.key, std::move(c));
    schedule_locked(ref);
}

}  // namespace embervm::virtio::vsock
