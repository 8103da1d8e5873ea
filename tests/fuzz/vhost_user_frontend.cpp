// Fuzz target: the vhost-user frontend (virtio/vhost_user/frontend.h, channel.h, message.h)
// against a hostile backend. The backend's whole side of the conversation comes from the input:
// a byte stream cut into chunks, each sent with one sendmsg and some with an eventfd attached
// (SCM_RIGHTS), then the backend's end is shut for writing. The frontend runs its full
// sequence on it: connect (GET_FEATURES, protocol features, SET_OWNER, GET_QUEUE_NUM),
// GET_CONFIG, SET_FEATURES, SET_MEM_TABLE with a memfd, one queue's start (SET_VRING_*) and
// stop (GET_VRING_BASE). Any step may end in ProtocolError, which ends the conversation as it
// ends the device's in the VMM; nothing else may escape.
//
// Oracles besides the sanitizers: GET_CONFIG returns exactly the bytes asked for (and refuses a
// request beyond the protocol's 256 bytes with Error, the caller's mistake), only protocol
// features the frontend asked for are negotiated, the queue count is at least 1, and no
// descriptor the backend attached stays open in this process (the frontend must close what it
// refuses).
#include <dirent.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tests/fuzz/virtio_fuzz.h"
#include "tests/unit/virtio/vhost_user/send_fd.h"
#include "virtio/vhost_user/frontend.h"

using embervm::FileDescriptor;
using embervm::fuzz::check;
using embervm::fuzz::FuzzInput;
using embervm::test::vhost_user::send_with_fd;
namespace vu = embervm::virtio::vhost_user;

namespace {

// Open descriptors of this process (the oracle for leaked backend descriptors).
size_t open_fds() {
    size_t n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (::readdir(d) != nullptr) n++;
        ::closedir(d);
    }
    return n;
}

// The frontend's side of the guest memory table: one small memfd region.
struct SharedMemory {
    SharedMemory() : fd(::memfd_create("vhost-user-fuzz", MFD_CLOEXEC)) {
        check(fd.get() >= 0 && ::ftruncate(fd.get(), kSize) == 0, "memfd");
    }
    static constexpr uint64_t kSize = 0x10000;
    FileDescriptor fd;
};

const SharedMemory& shared_memory() {
    static const SharedMemory shared;
    return shared;
}

void converse(FuzzInput& in, int frontend_fd_raw) {
    const uint8_t wanted_bits = in.u8();
    uint64_t wanted = 0;
    if (wanted_bits & 1) wanted |= uint64_t{1} << vu::kProtocolMq;
    if (wanted_bits & 2) wanted |= uint64_t{1} << vu::kProtocolReplyAck;
    if (wanted_bits & 4) wanted |= uint64_t{1} << vu::kProtocolConfig;
    const uint32_t config_offset = in.u8();
    const uint32_t config_size = in.u16() % (vu::kMaxConfigSize + 16);
    const uint64_t acked = in.u64();
    const uint32_t vring_index = in.u8() % 4;
    const uint16_t vring_size = in.u16();
    const uint16_t vring_base = in.u16();

    const FileDescriptor kick(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    const FileDescriptor call(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));

    vu::Frontend f(vu::Channel(FileDescriptor(frontend_fd_raw), std::chrono::milliseconds(1000)));
    try {
        f.connect(wanted);
        for (unsigned bit = 0; bit < 64; bit++) {
            if (f.has_protocol_feature(bit)) check(((wanted >> bit) & 1) != 0, "a protocol feature not asked for");
        }
        check(f.queue_num() >= 1, "queue count 0");
        if (f.has_protocol_feature(vu::kProtocolConfig) && config_size > vu::kMaxConfigSize) {
            // More than the protocol's limit is the caller's mistake: refused before it is sent.
            bool refused = false;
            try {
                (void)f.get_config(config_offset, config_size);
            } catch (const vu::ProtocolError&) {
                throw;
            } catch (const embervm::Error&) {
                refused = true;
            }
            check(refused, "GET_CONFIG beyond kMaxConfigSize not refused");
        } else if (f.has_protocol_feature(vu::kProtocolConfig) && config_size > 0) {
            const auto cfg = f.get_config(config_offset, config_size);
            check(cfg.size() == config_size, "GET_CONFIG: not the size asked for");
        }
        f.set_features(acked);
        const embervm::memory::SharedRegion region{shared_memory().fd.get(), 0, SharedMemory::kSize,
                                                   embervm::memory::GuestAddress(0x100000), 0x7f0000000000};
        f.set_mem_table(std::span(&region, 1));
        f.start_vring(vu::VringSetup{vring_index, vring_size, vring_base, 0x7f0000001000, 0x7f0000002000,
                                     0x7f0000003000, kick.get(), call.get()});
        (void)f.stop_vring(vring_index);
    } catch (const vu::ProtocolError&) {
        // The backend broke the protocol: the device would go to DEVICE_NEEDS_RESET.
    }
}

// The bytes at the start of an input that configure the frontend's requests (converse).
constexpr size_t kConfigBytes = 1 + 1 + 2 + 8 + 1 + 2 + 2;

// One conversation; every descriptor it opened is closed when it returns.
void run_one(const uint8_t* data, size_t size) {
    FuzzInput in(data, size);
    const auto h = in.bytes(kConfigBytes);
    const std::vector<uint8_t> head(h.begin(), h.end());

    int sv[2];
    check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    const FileDescriptor backend(sv[1]);
    // The backend's whole stream goes out before the frontend starts (no second thread needed).
    const FileDescriptor attach(::eventfd(0, EFD_CLOEXEC));
    // Each sendmsg is a buffer of its own in the socket (about 1 KiB of send buffer however few
    // its bytes; the default buffer, ~208 KiB, held 278 sends of 3 bytes, and the 279th blocked:
    // nobody reads yet). So at most kMaxSends, the rest of the input in the last one.
    constexpr size_t kMaxSends = 128;
    for (size_t sends = 1; !in.empty(); sends++) {
        const uint8_t ctl = in.u8();
        const auto chunk = in.bytes(sends == kMaxSends ? in.remaining() : (ctl & 0x7f) == 0 ? 128 : (ctl & 0x7f));
        if (chunk.empty()) break;
        // The inputs are far smaller than the socket buffer: a short send is a harness bug.
        check(send_with_fd(backend.get(), chunk, (ctl & 0x80) != 0 ? attach.get() : -1) ==
                  static_cast<ssize_t>(chunk.size()),
              "backend stream: sendmsg failed");
    }
    ::shutdown(backend.get(), SHUT_WR);

    FuzzInput config(head.data(), head.size());
    converse(config, sv[0]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    embervm::fuzz::quiet_logs();
    shared_memory();
    static const size_t fds_before = open_fds();
    run_one(data, size);
    check(open_fds() == fds_before, "a descriptor from the backend (or one of the frontend's) left open");
    return 0;
}
