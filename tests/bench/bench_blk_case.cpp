// bench-queue: the blk cases, 4 KiB reads through BlockDevice and an in-memory disk.
#include <sys/uio.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "batch_driver.h"
#include "bench_queue.h"
#include "virtio/block/backend.h"
#include "virtio/block/block_device.h"
#include "virtio/device.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"
#include "vmm/sys/eventfd.h"

namespace embervm::bench {

namespace {

constexpr uint64_t kDiskBytes = 1 << 20;

uint8_t disk_byte(uint64_t offset) { return static_cast<uint8_t>(offset * 131 + (offset >> 12)); }

// An in-memory disk behind the backend interface: a request is done inside submit() (memcpy
// instead of preadv) and its completion waits for reap_completions(), as with the sync engine.
// The completion eventfd is never signalled: BlockDevice reaps right after each queue pass, so
// the two eventfd syscalls per pass the sync engine adds are left out of the device path.
class MemoryBackend final : public block::BlockBackend {
public:
    MemoryBackend() : disk_(kDiskBytes) {
        for (uint64_t i = 0; i < kDiskBytes; i++) disk_[i] = disk_byte(i);
    }

    uint64_t size_bytes() const override { return kDiskBytes; }
    bool read_only() const override { return false; }
    block::IoEngine engine() const override { return block::IoEngine::Sync; }
    bool submit(block::IoRequest r) override {
        done_.push_back({r.user_data, execute(r)});
        return true;
    }
    void flush_submissions() override {}
    int completion_fd() const override { return event_.fd(); }
    std::vector<block::IoCompletion> reap_completions() override {
        std::vector<block::IoCompletion> out(done_.begin(), done_.end());
        done_.clear();
        return out;
    }
    size_t in_flight() const override { return done_.size(); }

    uint8_t* data(uint64_t offset) { return disk_.data() + offset; }

private:
    int64_t execute(const block::IoRequest& r) {
        using Op = block::IoRequest::Op;
        if (r.op != Op::Read && r.op != Op::Write) return 0;
        uint64_t off = r.offset;
        for (const iovec& v : r.iov) {
            if (off + v.iov_len > disk_.size()) return -EIO;
            if (r.op == Op::Read) {
                std::memcpy(v.iov_base, disk_.data() + off, v.iov_len);
            } else {
                std::memcpy(disk_.data() + off, v.iov_base, v.iov_len);
            }
            off += v.iov_len;
        }
        return static_cast<int64_t>(off - r.offset);
    }

    std::vector<uint8_t> disk_;
    std::deque<block::IoCompletion> done_;
    embervm::vmm::EventFd event_;
};

class CountingInterrupt final : public DeviceInterrupt {
public:
    void signal_used_queue(uint16_t) override { ++used; }
    void signal_config_change() override {}
    void device_error(std::string_view reason) override { error = reason; }
    bool needs_reset() const override { return !error.empty(); }
    uint64_t used = 0;
    std::string error;
};

struct BlkHeader {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};
static_assert(sizeof(BlkHeader) == 16);

}  // namespace

Result blk_case(const Settings& s, bool event_idx) {
    constexpr uint16_t kChainLen = 3;
    constexpr uint16_t kRequests = kRingSize / kChainLen;
    GuestMemory mem = make_memory(uint64_t{kBlockBytes} * kRequests);
    Queue queue(block::kQueueSize);
    BatchDriver driver(mem, queue, event_idx);
    CountingInterrupt irq;
    auto owned_backend = std::make_unique<MemoryBackend>();
    MemoryBackend& backend = *owned_backend;
    block::BlockDevice dev(std::move(owned_backend), {"bench", false, false});  // goes first
    uint64_t acked = dev.available_features() | feature::kVersion1;
    if (!event_idx) acked &= ~feature::kRingEventIdx;
    queue.set_indirect_enabled((acked & feature::kRingIndirectDesc) != 0);
    dev.activate(mem, std::span<Queue>(&queue, 1), acked, irq);

    // Request k: header, data and status at fixed places; its chain starts at descriptor 3k.
    const auto header_of = [](uint16_t head) { return kHeaders + 16ULL * (head / kChainLen); };
    const auto status_of = [](uint16_t head) { return kStatus + head / kChainLen; };
    const auto data_of = [](uint16_t head) { return kBuffers + uint64_t{kBlockBytes} * (head / kChainLen); };
    std::vector<std::vector<HostBuffer>> host_data;  // the data buffers only, for memcpy
    for (uint16_t k = 0; k < kRequests; k++) {
        const auto head = static_cast<uint16_t>(k * kChainLen);
        const Buffer bufs[] = {{header_of(head), sizeof(BlkHeader), false},
                               {data_of(head), kBlockBytes, true},
                               {status_of(head), 1, true}};
        driver.add_chain(head, bufs, kBlockBytes + 1);
        host_data.push_back(host_buffers(mem, std::span<const Buffer>(bufs).subspan(1, 1)));
    }
    const uint32_t batch = std::min<uint32_t>(s.batch, kRequests);

    // Reads walk the disk 4 KiB at a time; each request remembers where it read from.
    uint64_t next_offset = 0;
    std::vector<uint64_t> offset_of(kRingSize, 0);
    const auto on_publish = [&](uint16_t head) {
        mem.write_obj(GuestAddress(header_of(head)), BlkHeader{block::req::kIn, 0, next_offset / block::kSectorSize});
        mem.write_obj<uint8_t>(GuestAddress(status_of(head)), 0xff);
        offset_of[head] = next_offset;
        next_offset = (next_offset + kBlockBytes) % kDiskBytes;
    };
    // The status must say OK and the buffer hold the disk's bytes (its first and last 8).
    const auto on_used = [&](uint16_t head) {
        const auto status = mem.read_obj<uint8_t>(GuestAddress(status_of(head)));
        const uint8_t* got = mem.get_slice(GuestAddress(data_of(head)), kBlockBytes).value().data();
        const uint8_t* want = backend.data(offset_of[head]);
        if (status != block::blk_status::kOk || std::memcmp(got, want, 8) != 0 ||
            std::memcmp(got + kBlockBytes - 8, want + kBlockBytes - 8, 8) != 0) {
            throw BenchError(fmt::format("blk request at offset {:#x}: status {} or its data is wrong", offset_of[head],
                                         status));
        }
    };

    Result r;
    r.name = fmt::format("blk-4k-read{}", event_idx ? "-event-idx" : "");
    r.label = fmt::format("blk 4K read{}", event_idx ? " EVENT_IDX" : "");
    r.kind = "blk";
    r.descriptors_per_chain = kChainLen;
    r.event_idx = event_idx;
    r.batch = batch;
    const auto device_round = [&] {
        const uint32_t published = driver.publish(batch, on_publish);
        const uint64_t interrupts_before = irq.used;
        dev.queue_notify(0);
        const uint32_t used = driver.reap(on_used);
        if (!irq.error.empty()) throw BenchError("blk: the device needs a reset: " + irq.error);
        if (used != published) {
            throw BenchError(fmt::format("blk: {} requests published, {} completed", published, used));
        }
        Work w;
        w.chains = used;
        w.descriptors = uint64_t{used} * kChainLen;
        w.bytes = uint64_t{used} * kBlockBytes;
        w.passes = 1;
        w.interrupts = irq.used - interrupts_before;
        return w;
    };
    // The backend's copy alone: disk to the request's buffer, the same 4 KiB blocks in turn.
    uint64_t copy_offset = 0;
    const auto copy = [&] {
        Work w;
        for (uint32_t k = 0; k < batch; k++) {
            const HostBuffer& b = host_data[k][0];
            std::memcpy(b.host, backend.data(copy_offset), b.len);
            escape(b.host);
            copy_offset = (copy_offset + kBlockBytes) % kDiskBytes;
            ++w.chains;
            ++w.descriptors;
            w.bytes += b.len;
        }
        ++w.passes;
        return w;
    };
    r.timing = run_paired(s, device_round, copy);
    return r;
}

}  // namespace embervm::bench
