// virtio-vsock device model (virtio 1.2, 5.10) with its host side on Unix sockets, in
// Firecracker's design (no vhost): the guest's AF_VSOCK stream connections become connections
// between host processes and the VMM's event loop.
//
//   queues    0 rx (packets to the guest, device-writable chains of at least one header),
//             1 tx (packets from the guest, device-readable chains), 2 event (never used:
//             the transport-reset event is sent only after a restore, which embervm lacks)
//   config    guest_cid, 64-bit little-endian, read-only
//
//   guest -> host   a REQUEST to port P connects (non-blocking) to the Unix socket
//                   "<uds_path>_P"; RESPONSE if that works, RST otherwise.
//   host -> guest   a process connects to the Unix socket at uds_path (the device listens
//                   there) and sends "CONNECT P\n"; the device picks a host port L, sends the
//                   guest a REQUEST from L to P and, once the guest answers RESPONSE, writes
//                   "OK L\n" to the process; a guest RST closes the process's connection.
//
// A connection is keyed by (host port, guest port). Stream sockets only (type 1; anything else
// is answered with RST). Flow control both ways, from the credit fields of every header:
//   - guest -> host: the device offers kConnectionBuffer bytes (buf_alloc) and counts in
//     fwd_cnt what it has written to the host socket; what the socket does not take at once
//     waits in the connection's buffer, which the guest's credit bounds. A guest that sends
//     beyond its credit gets RST. fwd_cnt goes back to the guest with every packet and in a
//     CREDIT_UPDATE once a quarter of the buffer has been freed since it was last told.
//   - host -> guest: the device reads the host socket only while the guest has credit
//     (buf_alloc - (bytes sent - fwd_cnt)) and receive buffers; otherwise it stops watching
//     the socket (the data waits in the host socket) and asks for credit (CREDIT_REQUEST).
// Shutdown and reset: a host EOF is a SHUTDOWN(SEND) to the guest; a guest SHUTDOWN(SEND)
// becomes shutdown(SHUT_WR) once its data has been written, and a guest SHUTDOWN of both
// directions is answered with RST and closes the socket. A guest RST closes the host socket; a
// host socket error resets the connection (RST to the guest).
//
// Guest errors: every header field is checked. A chain without a whole header, with
// device-writable buffers or from another CID is dropped (counted in bad_packets; the guest
// driver never sends one); a header with a bad dst_cid, type, op or len, or a packet that does
// not fit the connection's state, is answered with RST. Ring errors (QueueError), a receive
// chain with device-readable buffers or shorter than a header put the device in
// DEVICE_NEEDS_RESET (DeviceBase::fail_locked); the rest of the VM goes on.
//
// Bounds: at most Limits::max_connections connections (pending CONNECT lines included; the
// listener is not watched while at the limit, so newcomers wait in its backlog), at most
// Limits::max_connect_line bytes and Limits::connect_timeout for the CONNECT line, the same
// timeout for the guest to answer a REQUEST, kConnectionBuffer buffered bytes per connection,
// kMaxStrayRsts RST packets waiting for receive buffers (the transmit queue is not read while
// that many wait).
//
// Event sources (virtio/device_base.h): the device keeps its own epoll set of the listener and
// every connection's socket, and its fd is the one source it subscribes on the loop; a 250 ms
// timer checks the timeouts. On reset every connection is closed; the listener stays.
//
// Threading: everything runs under the device lock (DeviceBase::mutex()).
//
// Files: vsock_device.cpp has the queues, the packets both ways and the credit; host_side.cpp the
// constructor (which opens the listener), the CONNECT lines, the connections' host sockets and
// the epoll set; connection.h the per-connection state both share.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "virtio/device_base.h"
#include "virtio/vsock/packet.h"
#include "vmm/sys/fd.h"
#include "vmm/sys/log_limiter.h"

namespace embervm::virtio::vsock {

inline constexpr uint16_t kVsockQueueSize = 256;
inline constexpr uint16_t kRxQueue = 0;
inline constexpr uint16_t kTxQueue = 1;
inline constexpr uint16_t kEventQueue = 2;
// The receive buffer the device offers the guest per connection (buf_alloc).
inline constexpr uint32_t kConnectionBuffer = 256 * 1024;
// The largest payload the device takes in one guest packet or puts in one to the guest.
inline constexpr uint32_t kMaxPacketPayload = 64 * 1024;
// RSTs for packets without a connection that may wait for receive buffers.
inline constexpr size_t kMaxStrayRsts = 256;

struct Limits {
    size_t max_connections = 1024;
    size_t max_connect_line = 32;  // "CONNECT 4294967295\n" is 19
    std::chrono::milliseconds connect_timeout{5000};
};

// Counters for metrics (monotonic, but connections_open).
struct VsockCounters {
    uint64_t connections_open = 0;              // now, pending CONNECT lines included
    uint64_t host_connections = 0;              // host-initiated connections established
    uint64_t guest_connections = 0;             // guest-initiated connections established
    uint64_t connect_failures = 0;              // uds_path_P unreachable, bad or late CONNECT line, guest refused
    uint64_t connection_limit_refusals = 0;     // times the connection limit turned one away or held the listener
    uint64_t rx_packets = 0, rx_bytes = 0;      // packets / payload bytes to the guest
    uint64_t tx_packets = 0, tx_bytes = 0;      // packets / payload bytes from the guest
    uint64_t rst_sent = 0, rst_received = 0;
    uint64_t credit_updates_sent = 0, credit_requests_sent = 0;
    uint64_t bad_packets = 0;                   // dropped or answered with RST for a bad header
    uint64_t device_errors = 0;                 // guest errors: the device went to NEEDS_RESET
};
// The counters as a metrics section (vmm/metrics.h), without device_errors.
nlohmann::json counters_json(const VsockCounters& c);

class VsockDevice : public DeviceBase {
public:
    // Listens on `uds_path` at once (a stale socket there is replaced; another file, or a
    // socket some process accepts on, is an Error naming the path), so host processes may
    // connect before the guest's driver is up: they wait until it is.
    VsockDevice(uint64_t guest_cid, std::string uds_path, Limits limits = {});
    ~VsockDevice() override;

    uint32_t device_type() const override { return device_id::kVsock; }
    uint64_t available_features() const override;
    std::vector<uint16_t> queue_max_sizes() const override {
        return {kVsockQueueSize, kVsockQueueSize, kVsockQueueSize};
    }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    std::string name() const override { return "virtio-vsock"; }
    DeviceProgress progress() const override;
    nlohmann::json metrics_json() const override;
    void log_counters() const override;

    uint64_t guest_cid() const { return guest_cid_; }
    const std::string& uds_path() const { return uds_path_; }
    VsockCounters counters() const;

private:
    struct Connection;
    struct PendingConnect;
    using Key = std::pair<uint32_t, uint32_t>;  // (host port, guest port)

    void on_activate_locked(const Activation& a) override;
    void on_queue_locked(uint16_t queue_index) override;
    void on_reset_locked() override;
    std::vector<EventSource> event_sources_locked() override;
    std::optional<std::chrono::nanoseconds> timer_interval_locked() const override;
    void on_timer_locked() override;
    // Snapshots: the state is the guest CID (checked); connections are not saved. A restored
    // device starts with none and sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue
    // at its activation (or at the event queue's next kick if it had no buffer), so the guest
    // drops its side of every connection.
    void save_state_locked(StateWriter& w) const override;
    void restore_state_locked(StateReader& r) override;
    void send_transport_reset_locked();

    // Runs one of the entry points, turning a QueueError into DEVICE_NEEDS_RESET, then moves
    // whatever waits for the guest.
    template <typename Fn>
    void guarded_locked(Fn&& fn);

    // ---- The guest's side ----
    void process_tx_locked();
    void handle_packet_locked(const DescriptorChain& chain);
    void process_rx_locked();
    // Writes the next waiting packet into `chain`; its used length, or 0 if nothing waits.
    uint32_t fill_rx_chain_locked(const DescriptorChain& chain);
    uint32_t connection_packet_locked(Connection& c, const DescriptorChain& chain, bool& erase);
    PacketHeader header_for_locked(Connection& c, uint16_t op);
    void queue_stray_rst_locked(const PacketHeader& from_guest);

    // ---- Connections ----
    Connection* find_locked(Key key);
    size_t open_connections_locked() const { return connections_.size() + pending_.size(); }
    void update_peer_credit_locked(Connection& c, const PacketHeader& h);
    uint32_t peer_credit(const Connection& c) const;
    // Something for the guest waits on `c`: queue it for the receive queue.
    void schedule_locked(Connection& c);
    bool has_packet_locked(const Connection& c) const;
    // RST to the guest, then the connection goes; its socket is closed now.
    void reset_connection_locked(Connection& c);
    void erase_locked(Key key);

    // ---- The host's side (host_side.cpp) ----
    // A guest REQUEST: connect to "<uds_path>_P" now; RESPONSE or RST.
    void connect_to_host_locked(const PacketHeader& h);
    void guest_data_locked(Connection& c, const PacketHeader& h, Reader& payload);
    void flush_to_host_locked(Connection& c);
    void after_flush_locked(Connection& c);
    void update_interest_locked(Connection& c);
    void on_epoll_locked();
    void accept_locked();
    void update_listener_locked();
    void read_connect_line_locked(int fd);
    void start_host_connection_locked(FileDescriptor fd, uint32_t guest_port);
    void on_connection_event_locked(Connection& c, uint32_t events);

    const uint64_t guest_cid_;
    const std::string uds_path_;
    const Limits limits_;
    FileDescriptor listener_;
    FileDescriptor epoll_;

    // The rest under mutex().
    Queue* rxq_ = nullptr;
    Queue* txq_ = nullptr;
    bool listener_watched_ = false;
    std::map<Key, std::unique_ptr<Connection>> connections_;
    std::unordered_map<int, Key> by_fd_;  // connection sockets
    std::map<int, std::unique_ptr<PendingConnect>> pending_;  // host sockets before their CONNECT line
    std::deque<Key> rx_queue_;            // connections with something for the guest
    std::deque<PacketHeader> stray_rsts_;
    bool rx_used_ = false, tx_used_ = false;  // used buffers not yet signalled
    uint32_t next_host_port_ = 1U << 30;
    bool transport_reset_due_ = false;  // restored: the guest must hear of the lost connections
    VsockCounters counters_;
    log::Limiter bad_packet_log_;
};

}  // namespace embervm::virtio::vsock
