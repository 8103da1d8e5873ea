// virtio-blk device model: parses requests from its one queue, validates them against the
// disk's capacity and the negotiated features, and hands the I/O to a BlockBackend (sync file
// I/O or io_uring). Knows nothing of the transport (virtio-mmio) or the event loop: the VMM
// watches backend_completion_fd() and calls process_completions() when it is readable.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "virtio/block/backend.h"
#include "virtio/device.h"

namespace embervm::virtio::block {

// Request types, statuses and feature bits (virtio 1.2, section 5.2).
namespace req {
inline constexpr uint32_t kIn = 0;
inline constexpr uint32_t kOut = 1;
inline constexpr uint32_t kFlush = 4;
inline constexpr uint32_t kGetId = 8;
inline constexpr uint32_t kDiscard = 11;
inline constexpr uint32_t kWriteZeroes = 13;
}  // namespace req
namespace blk_status {
inline constexpr uint8_t kOk = 0;
inline constexpr uint8_t kIoErr = 1;
inline constexpr uint8_t kUnsupp = 2;
}  // namespace blk_status
namespace blk_feature {
inline constexpr uint64_t kSegMax = feature_bit(2);
inline constexpr uint64_t kRo = feature_bit(5);
inline constexpr uint64_t kBlkSize = feature_bit(6);
inline constexpr uint64_t kFlush = feature_bit(9);
inline constexpr uint64_t kDiscard = feature_bit(13);
inline constexpr uint64_t kWriteZeroes = feature_bit(14);
}  // namespace blk_feature

inline constexpr uint64_t kSectorSize = 512;
inline constexpr uint16_t kQueueSize = 256;
inline constexpr size_t kIdBytes = 20;  // VIRTIO_BLK_ID_BYTES
// Largest discard / write-zeroes request, in sectors (one segment each).
inline constexpr uint32_t kMaxDiscardSectors = 1u << 22;  // 2 GiB

struct BlockDeviceOptions {
    std::string id;          // drive_id: the GET_ID serial (truncated to 20 bytes)
    bool read_only = false;  // VIRTIO_BLK_F_RO; writes, discards and write-zeroes fail with IOERR
    bool flush = false;      // offer VIRTIO_BLK_F_FLUSH (cache_type Writeback)
};

class BlockDevice : public VirtioDevice {
public:
    BlockDevice(std::unique_ptr<BlockBackend> backend, BlockDeviceOptions options);
    ~BlockDevice() override;

    uint32_t device_type() const override { return device_id::kBlock; }
    uint64_t available_features() const override;
    std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    void activate(const memory::GuestMemory& mem, std::span<Queue> queues, uint64_t acked_features,
                  DeviceInterrupt& interrupt) override;
    void queue_notify(uint16_t queue_index) override;
    void reset() override;
    std::string name() const override { return "virtio-blk " + options_.id; }

    // The backend's completion eventfd and its handler (event-loop thread).
    int backend_completion_fd() const { return backend_->completion_fd(); }
    void process_completions();

    uint64_t capacity_sectors() const { return capacity_; }

private:
    struct Pending {
        uint16_t head;
        uint32_t used_len;              // bytes written into the chain, including the status byte
        memory::GuestAddress status;    // the chain's last writable byte
    };

    // Pops and starts requests until the queue is empty or the backend is full. Called with
    // mutex_ held.
    void process_queue_locked();
    // Starts one request; false if the backend was full (the chain is put back).
    bool handle_chain(const DescriptorChain& chain);
    void complete(uint16_t head, uint32_t used_len, memory::GuestAddress status, uint8_t value);
    size_t reap_locked();  // returns the number of completions taken from the backend
    void fail_locked(std::string_view reason);
    void drain_backend_locked();

    std::unique_ptr<BlockBackend> backend_;
    BlockDeviceOptions options_;
    uint64_t capacity_;  // sectors
    std::vector<uint8_t> config_;

    std::mutex mutex_;
    const memory::GuestMemory* mem_ = nullptr;
    Queue* queue_ = nullptr;
    DeviceInterrupt* interrupt_ = nullptr;
    uint64_t acked_features_ = 0;
    bool broken_ = false;
    bool backend_full_ = false;
    uint64_t next_tag_ = 1;
    std::unordered_map<uint64_t, Pending> pending_;
    bool used_added_ = false;
};

}  // namespace embervm::virtio::block
