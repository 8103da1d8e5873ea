// virtio-vsock: guest packets to host Unix sockets and back (virtio/vsock/vsock_device.h); the
// host sockets, the listener and the epoll set are in host_side.cpp.
#include "virtio/vsock/vsock_device.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "virtio/vsock/connection.h"
#include "virtio/saved_state.h"
#include "vmm/sys/log.h"

namespace embervm::virtio::vsock {

namespace log = embervm::log;

namespace {

// Copies `bytes` into the host views of guest buffers `dst`, in order.
void scatter(std::span<const uint8_t> bytes, const std::vector<std::span<uint8_t>>& dst) {
    size_t done = 0;
    for (const auto& d : dst) {
        const size_t k = std::min(d.size(), bytes.size() - done);
        std::memcpy(d.data(), bytes.data() + done, k);
        done += k;
    }
}

}  // namespace

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
    guarded_locked([this] {
        send_transport_reset_locked();
        process_tx_locked();
    });
}

void VsockDevice::save_state_locked(StateWriter& w) const {
    w.put<uint32_t>(state_version::kVsock);
    w.put<uint64_t>(guest_cid_);
}

void VsockDevice::restore_state_locked(StateReader& r) {
    r.get_version(state_version::kVsock);
    if (const auto cid = r.get<uint64_t>("guest CID"); cid != guest_cid_) {
        r.fail("guest CID", fmt::format("{} where this device has {}", cid, guest_cid_));
    }
    transport_reset_due_ = true;
}

void VsockDevice::send_transport_reset_locked() {
    if (!transport_reset_due_ || queues().size() <= kEventQueue || !queues()[kEventQueue].ready()) return;
    Queue& q = queues()[kEventQueue];
    auto chain = q.pop_available(mem());
    if (!chain) return;  // the driver's next event buffer (a kick) takes it
    const uint32_t event = kEventTransportReset;
    if (!chain->writer(mem()).write_obj(event)) {
        fail_locked("event buffer shorter than an event");
        return;
    }
    q.add_used(mem(), chain->head_index(), sizeof(event));
    transport_reset_due_ = false;
    log::info("{}: restored: transport reset sent to the guest", name());
    if (q.needs_notification(mem())) interrupt().signal_used_queue(kEventQueue);
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
    transport_reset_due_ = false;  // a new driver has no connections to drop
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
        // rx: buffers came, which the pass below fills; event: a restored device's reset event.
        if (queue_index == kEventQueue) send_transport_reset_locked();
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