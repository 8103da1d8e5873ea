// virtio-vsock: guest packets to host Unix sockets and back (virtio/vsock/vsock_device.h).
#include "virtio/vsock/vsock_device.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "vmm/sys/error.h"
#include "vmm/sys/log.h"

namespace embervm::virtio::vsock {

namespace log = embervm::log;

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kListenerTag = UINT64_MAX;
constexpr uint64_t kPendingTag = uint64_t{1} << 32;  // | fd; a connection's entry is its fd alone

sockaddr_un unix_address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());  // callers checked the length
    return addr;
}

// Whether some process accepts connections on the Unix socket at `path`.
bool socket_is_live(const std::string& path) {
    FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return false;
    const sockaddr_un addr = unix_address(path);
    return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
}

FileDescriptor listen_at(const std::string& path) {
    if (path.empty()) throw Error("vsock socket: empty path");
    // "<path>_4294967295" must fit too: the guest's connections go there.
    if (path.size() + 11 >= sizeof(sockaddr_un::sun_path)) {
        throw Error(fmt::format("vsock socket {}: longer than {} bytes", path, sizeof(sockaddr_un::sun_path) - 12));
    }
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) throw Error(fmt::format("vsock socket {}: a file that is not a socket is in the way", path));
        if (socket_is_live(path)) throw Error(fmt::format("vsock socket {}: another process is serving on it", path));
        if (::unlink(path.c_str()) != 0) throw sys_error(fmt::format("vsock socket {}: removing the stale socket", path));
    }
    FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) throw sys_error(fmt::format("vsock socket {}: socket", path));
    const sockaddr_un addr = unix_address(path);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
        throw sys_error(fmt::format("vsock socket {}: bind", path));
    }
    if (::listen(fd.get(), 128) != 0) throw sys_error(fmt::format("vsock socket {}: listen", path));
    return fd;
}

// Copies `bytes` into the host views of guest buffers `dst`, in order.
void scatter(std::span<const uint8_t> bytes, const std::vector<std::span<uint8_t>>& dst) {
    size_t done = 0;
    for (const auto& d : dst) {
        const size_t k = std::min(d.size(), bytes.size() - done);
        std::memcpy(d.data(), bytes.data() + done, k);
        done += k;
    }
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

uint64_t VsockDevice::available_features() const { return feature::kRingEventIdx | feature::kRingIndirectDesc; }

void VsockDevice::read_config(uint64_t offset, std::span<uint8_t> data) const {
    uint8_t config[8];
    std::memcpy(config, &guest_cid_, sizeof(config));  // little-endian host (queue.h asserts it)
    read_config_space(config, offset, data);
}

void VsockDevice::write_config(uint64_t offset, std::span<const uint8_t> data) {
    log::debug("{}: ignored config write of {} bytes at offset {:#x}", name(), data.size(), offset);
}

void VsockDevice::on_activate_locked(const Activation& a) {
    if (a.queues.size() < 3 || !a.queues[kRxQueue].ready() || !a.queues[kTxQueue].ready()) {
        throw QueueError("the rx and tx queues must both be set up");
    }
    rxq_ = &a.queues[kRxQueue];
    txq_ = &a.queues[kTxQueue];
    log::info("{}: activated, guest CID {}, host socket {} (features {:#x})", name(), guest_cid_, uds_path_,
              a.acked_features);
    guarded_locked([this] { process_tx_locked(); });
}

void VsockDevice::on_reset_locked() {
    if (!connections_.empty() || !pending_.empty()) {
        log::info("{}: reset, closing {} connections", name(), open_connections_locked());
    }
    connections_.clear();  // closing the sockets takes them out of the epoll set
    by_fd_.clear();
    pending_.clear();
    rx_queue_.clear();
    stray_rsts_.clear();
    rxq_ = nullptr;
    txq_ = nullptr;
    rx_used_ = tx_used_ = false;
    update_listener_locked();
}

std::vector<DeviceBase::EventSource> VsockDevice::event_sources_locked() {
    return {EventSource{epoll_.get(), [this] {
                            guarded_locked([this] { on_epoll_locked(); });
                            return true;
                        }}};
}

std::optional<std::chrono::nanoseconds> VsockDevice::timer_interval_locked() const {
    return std::chrono::milliseconds(250);
}

void VsockDevice::on_timer_locked() {
    const auto now = Clock::now();
    for (auto it = pending_.begin(); it != pending_.end();) {
        if (now >= it->second->deadline) {
            counters_.connect_failures++;
            it = pending_.erase(it);
        } else {
            ++it;
        }
    }
    update_listener_locked();
    std::vector<Key> late;
    for (auto& [key, c] : connections_) {
        if (c->state == Connection::State::kLocalInit && !c->want_rst && now >= c->deadline) late.push_back(key);
    }
    for (const Key& key : late) {
        counters_.connect_failures++;
        reset_connection_locked(*connections_.at(key));
    }
    guarded_locked([] {});
}

void VsockDevice::on_queue_locked(uint16_t queue_index) {
    guarded_locked([this, queue_index] {
        if (queue_index == kTxQueue) process_tx_locked();
        // rx: buffers came, which the pass below fills; event: nothing to send there.
    });
}

template <typename Fn>
void VsockDevice::guarded_locked(Fn&& fn) {
    if (!active() || broken()) return;
    try {
        fn();
        process_rx_locked();
        if (!broken() && stray_rsts_.size() < kMaxStrayRsts) process_tx_locked();  // it may have waited for room
        if (rx_used_ && !broken()) {
            rx_used_ = false;
            if (rxq_->needs_notification(mem())) interrupt().signal_used_queue(kRxQueue);
        }
        if (tx_used_ && !broken()) {
            tx_used_ = false;
            if (txq_->needs_notification(mem())) interrupt().signal_used_queue(kTxQueue);
        }
    } catch (const QueueError& e) {
        fail_locked(e.what());
    }
}

// ---------------------------------------------------------------------------------------------
// Packets from the guest

void VsockDevice::process_tx_locked() {
    Queue& q = *txq_;
    q.disable_notification(mem());
    for (;;) {
        if (broken()) return;
        if (stray_rsts_.size() >= kMaxStrayRsts) return;  // kicks stay off; the rx pass calls again
        auto chain = q.pop_available(mem());
        if (!chain) {
            if (q.enable_notification(mem())) {
                q.disable_notification(mem());
                continue;
            }
            return;
        }
        handle_packet_locked(*chain);
        q.add_used(mem(), chain->head_index(), 0);
        tx_used_ = true;
    }
}

void VsockDevice::handle_packet_locked(const DescriptorChain& chain) {
    Reader r = chain.reader(mem());
    const auto bad = [this](const std::string& why) {
        counters_.bad_packets++;
        uint64_t not_logged = 0;
        if (bad_packet_log_.admit(&not_logged)) {
            log::warn("{}: bad packet from the guest: {}{}", name(), why,
                      not_logged ? fmt::format(" ({} more since the last report)", not_logged) : "");
        }
    };
    std::optional<PacketHeader> hdr;
    if (chain.writable().empty()) hdr = r.read_obj<PacketHeader>();
    if (!hdr) {
        bad("a transmit chain without a whole header or with device-writable buffers (dropped)");
        return;
    }
    const PacketHeader& h = *hdr;
    if (h.src_cid != guest_cid_) {
        bad(fmt::format("src_cid {} is not the guest's {} (dropped)", h.src_cid, guest_cid_));
        return;
    }
    counters_.tx_packets++;
    if (h.op == op::kRst) {
        counters_.rst_received++;
        if (Connection* c = find_locked({h.dst_port, h.src_port})) erase_locked(c->key);
        return;
    }
    const char* why = nullptr;
    if (h.dst_cid != kHostCid) {
        why = "dst_cid is not the host (2)";
    } else if (h.type != socket_type::kStream) {
        why = "not a stream socket";
    } else if (h.len > r.available() || h.len > kMaxPacketPayload) {
        why = "len beyond the chain or above 64 KiB";
    } else if (h.op < op::kRequest || h.op > op::kCreditRequest) {
        why = "unknown op";
    } else if (h.len != 0 && h.op != op::kRw) {
        why = "payload on a packet that is not RW";
    }
    Connection* c = find_locked({h.dst_port, h.src_port});
    if (why != nullptr) {
        bad(fmt::format("{} (op {}, type {}, dst_cid {}, len {}; answered with RST)", why, h.op, h.type, h.dst_cid, h.len));
        if (c != nullptr) {
            reset_connection_locked(*c);
        } else {
            queue_stray_rst_locked(h);
        }
        return;
    }
    if (h.op == op::kRequest) {
        if (c != nullptr) {
            reset_connection_locked(*c);  // a second REQUEST for a live connection: both sides start over
            return;
        }
        connect_to_host_locked(h);
        return;
    }
    if (c == nullptr || c->want_rst) {
        if (c == nullptr) queue_stray_rst_locked(h);
        return;
    }
    update_peer_credit_locked(*c, h);
    switch (h.op) {
        case op::kResponse: {
            if (c->state != Connection::State::kLocalInit) {
                reset_connection_locked(*c);
                return;
            }
            c->state = Connection::State::kEstablished;
            const std::string ok = fmt::format("OK {}\n", c->key.first);
            if (::send(c->fd.get(), ok.data(), ok.size(), MSG_NOSIGNAL | MSG_DONTWAIT) != static_cast<ssize_t>(ok.size())) {
                reset_connection_locked(*c);
                return;
            }
            counters_.host_connections++;
            update_interest_locked(*c);
            return;
        }
        case op::kRw:
            if (c->state != Connection::State::kEstablished || c->guest_shut_send) {
                reset_connection_locked(*c);
                return;
            }
            guest_data_locked(*c, h, r);
            return;
        case op::kShutdown:
            if (c->state != Connection::State::kEstablished) {
                reset_connection_locked(*c);
                return;
            }
            if ((h.flags & shutdown_flag::kRcv) != 0) c->guest_shut_rcv = true;
            if ((h.flags & shutdown_flag::kSend) != 0) c->guest_shut_send = true;
            after_flush_locked(*c);
            if (!c->want_rst) update_interest_locked(*c);
            return;
        case op::kCreditUpdate:
            return;  // the credit fields were taken above
        case op::kCreditRequest:
            c->want_credit_update = true;
            schedule_locked(*c);
            return;
        default:
            return;
    }
}

void VsockDevice::queue_stray_rst_locked(const PacketHeader& from_guest) {
    PacketHeader rst;
    rst.src_cid = kHostCid;
    rst.dst_cid = guest_cid_;
    rst.src_port = from_guest.dst_port;
    rst.dst_port = from_guest.src_port;
    rst.type = socket_type::kStream;
    rst.op = op::kRst;
    stray_rsts_.push_back(rst);
}

void VsockDevice::update_peer_credit_locked(Connection& c, const PacketHeader& h) {
    c.peer_buf_alloc = h.buf_alloc;
    c.peer_fwd_cnt = h.fwd_cnt;
    if (peer_credit(c) > 0) {
        c.credit_requested = false;
        if (c.readable) schedule_locked(c);
    }
}

uint32_t VsockDevice::peer_credit(const Connection& c) const {
    const uint32_t in_flight = c.rx_cnt - c.peer_fwd_cnt;
    return in_flight >= c.peer_buf_alloc ? 0 : c.peer_buf_alloc - in_flight;
}

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

// ---------------------------------------------------------------------------------------------
// Packets to the guest

bool VsockDevice::has_packet_locked(const Connection& c) const {
    return c.want_rst || c.want_request || c.want_response || c.want_shutdown || c.want_credit_update ||
           c.want_credit_request || (c.readable && c.can_read() && peer_credit(c) > 0);
}

void VsockDevice::schedule_locked(Connection& c) {
    if (c.in_rx_queue || !has_packet_locked(c)) return;
    c.in_rx_queue = true;
    rx_queue_.push_back(c.key);
}

void VsockDevice::process_rx_locked() {
    Queue& q = *rxq_;
    q.disable_notification(mem());
    while (!stray_rsts_.empty() || !rx_queue_.empty()) {
        if (broken()) return;
        auto chain = q.pop_available(mem());
        if (!chain) {
            if (q.enable_notification(mem())) {
                q.disable_notification(mem());
                continue;
            }
            return;  // the guest's next receive buffers come with a kick
        }
        if (!chain->readable().empty() || chain->writable_len() < sizeof(PacketHeader)) {
            fail_locked("a receive buffer with device-readable descriptors or shorter than a packet header");
            return;
        }
        const uint32_t len = fill_rx_chain_locked(*chain);
        if (len == 0) {
            q.undo_pop();
            break;
        }
        q.add_used(mem(), chain->head_index(), len);
        rx_used_ = true;
        counters_.rx_packets++;
    }
    q.enable_notification(mem());
}

uint32_t VsockDevice::fill_rx_chain_locked(const DescriptorChain& chain) {
    if (!stray_rsts_.empty()) {
        Writer w = chain.writer(mem());
        w.write_obj(stray_rsts_.front());
        stray_rsts_.pop_front();
        counters_.rst_sent++;
        return sizeof(PacketHeader);
    }
    // Each waiting connection once at most: one whose data needs a bigger buffer goes back.
    for (size_t turns = rx_queue_.size(); turns > 0 && !rx_queue_.empty(); --turns) {
        const Key key = rx_queue_.front();
        rx_queue_.pop_front();
        Connection* c = find_locked(key);
        if (c == nullptr || !c->in_rx_queue) continue;
        c->in_rx_queue = false;
        bool erase = false;
        const uint32_t len = connection_packet_locked(*c, chain, erase);
        if (erase) {
            erase_locked(key);
        } else {
            schedule_locked(*c);  // more of it waits: to the back, so every connection gets its turn
        }
        if (len > 0) return len;
    }
    return 0;
}

PacketHeader VsockDevice::header_for_locked(Connection& c, uint16_t packet_op) {
    PacketHeader h;
    h.src_cid = kHostCid;
    h.dst_cid = guest_cid_;
    h.src_port = c.key.first;
    h.dst_port = c.key.second;
    h.type = socket_type::kStream;
    h.op = packet_op;
    h.buf_alloc = kConnectionBuffer;
    h.fwd_cnt = c.fwd_cnt;
    c.fwd_cnt_sent = c.fwd_cnt;
    c.want_credit_update = false;  // every header carries the credit
    return h;
}

uint32_t VsockDevice::connection_packet_locked(Connection& c, const DescriptorChain& chain, bool& erase) {
    Writer w = chain.writer(mem());
    const auto control = [&](uint16_t packet_op, uint32_t flags = 0) {
        PacketHeader h = header_for_locked(c, packet_op);
        h.flags = flags;
        w.write_obj(h);
        return static_cast<uint32_t>(sizeof(PacketHeader));
    };
    if (c.want_rst) {
        erase = true;
        counters_.rst_sent++;
        return control(op::kRst);
    }
    if (c.want_request) {
        c.want_request = false;
        return control(op::kRequest);
    }
    if (c.want_response) {
        c.want_response = false;
        return control(op::kResponse);
    }
    if (c.readable && c.can_read() && peer_credit(c) > 0) {
        const uint64_t room = std::min<uint64_t>({chain.writable_len() - sizeof(PacketHeader), peer_credit(c), kMaxPacketPayload});
        if (room > 0) {
            const auto header_slices = w.take_slices(sizeof(PacketHeader));
            const auto data_slices = w.take_slices(room);
            std::vector<iovec> iov;
            for (const auto& s : data_slices) iov.push_back({s.data(), s.size()});
            const ssize_t n = ::readv(c.fd.get(), iov.data(), static_cast<int>(iov.size()));
            if (n > 0) {
                PacketHeader h = header_for_locked(c, op::kRw);
                h.len = static_cast<uint32_t>(n);
                scatter(std::span(reinterpret_cast<const uint8_t*>(&h), sizeof(h)), header_slices);
                c.rx_cnt += h.len;
                counters_.rx_bytes += h.len;
                if (peer_credit(c) == 0 && !c.credit_requested) {
                    c.want_credit_request = true;  // more may wait in the socket
                }
                return sizeof(PacketHeader) + h.len;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                c.readable = false;  // drained: watch it again
                update_interest_locked(c);
            } else if (n == 0) {
                c.host_eof = true;  // the host sends no more: tell the guest
                c.want_shutdown = true;
                update_interest_locked(c);
            } else {
                reset_connection_locked(c);
                erase = true;
                counters_.rst_sent++;
                return control(op::kRst);
            }
            w = chain.writer(mem());  // nothing of the slices was used
        }
    }
    if (c.want_shutdown) {
        c.want_shutdown = false;
        return control(op::kShutdown, shutdown_flag::kSend);
    }
    if (c.want_credit_request) {
        c.want_credit_request = false;
        c.credit_requested = true;
        counters_.credit_requests_sent++;
        return control(op::kCreditRequest);
    }
    if (c.want_credit_update) {
        counters_.credit_updates_sent++;
        return control(op::kCreditUpdate);
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Connections

VsockDevice::Connection* VsockDevice::find_locked(Key key) {
    const auto it = connections_.find(key);
    return it == connections_.end() ? nullptr : it->second.get();
}

void VsockDevice::reset_connection_locked(Connection& c) {
    if (c.fd) {
        by_fd_.erase(c.fd.get());
        c.fd.reset();  // the host side sees the connection end now
    }
    c.interest = 0;
    c.readable = false;
    c.want_rst = true;
    schedule_locked(c);
}

void VsockDevice::erase_locked(Key key) {
    const auto it = connections_.find(key);
    if (it == connections_.end()) return;
    if (it->second->fd) by_fd_.erase(it->second->fd.get());
    // Out of the receive queue too: a guest that opens and resets connections without giving
    // receive buffers must not grow it.
    if (it->second->in_rx_queue) std::erase(rx_queue_, key);
    connections_.erase(it);
    update_listener_locked();
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
// The host's side

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

// ---------------------------------------------------------------------------------------------

DeviceProgress VsockDevice::progress() const {
    std::lock_guard lock(mutex());
    return queues_progress_locked();
}

VsockCounters VsockDevice::counters() const {
    std::lock_guard lock(mutex());
    VsockCounters c = counters_;
    c.connections_open = open_connections_locked();
    c.device_errors = device_errors();
    return c;
}

nlohmann::json VsockDevice::metrics_json() const { return counters_json(counters()); }

nlohmann::json counters_json(const VsockCounters& c) {
    return {{"connections_open", c.connections_open},
            {"host_connections", c.host_connections},
            {"guest_connections", c.guest_connections},
            {"connect_failures", c.connect_failures},
            {"connection_limit_refusals", c.connection_limit_refusals},
            {"rx_packets", c.rx_packets},
            {"rx_bytes", c.rx_bytes},
            {"tx_packets", c.tx_packets},
            {"tx_bytes", c.tx_bytes},
            {"rst_sent", c.rst_sent},
            {"rst_received", c.rst_received},
            {"credit_updates_sent", c.credit_updates_sent},
            {"credit_requests_sent", c.credit_requests_sent},
            {"bad_packets", c.bad_packets}};
}

void VsockDevice::log_counters() const {
    const VsockCounters c = counters();
    log::info("{}: {} host- and {} guest-initiated connections ({} failed to connect, {} open), rx {} packets / {} "
              "bytes, tx {} packets / {} bytes, RST {} sent / {} received, {} bad packets, {} device errors",
              name(), c.host_connections, c.guest_connections, c.connect_failures, c.connections_open, c.rx_packets,
              c.rx_bytes, c.tx_packets, c.tx_bytes, c.rst_sent, c.rst_received, c.bad_packets, c.device_errors);
}

}  // namespace embervm::virtio::vsock
