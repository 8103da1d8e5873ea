// Block backends: where virtio-blk requests turn into file I/O on a raw image. Two engines
// with one interface, so the device model never knows which one it drives: Sync
// (sync_engine.h) and Async, io_uring (uring_engine.h); the image itself is image_file.h.
//
// Both report completions through reap_completions() with the result of the whole request:
// bytes transferred (reads and writes are completed in full, short transfers are continued) or
// -errno. A read past the end of the file is an error (-EIO), never a silent short read.
//
// Threading: not synchronised; the device calls it under its own lock.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "virtio/block/io_engine.h"

namespace embervm::virtio::block {

struct IoRequest {
    enum class Op { Read, Write, Flush, Discard, WriteZeroes };
    Op op = Op::Read;
    uint64_t offset = 0;        // bytes; Read/Write/Discard/WriteZeroes
    uint64_t length = 0;        // bytes; Discard/WriteZeroes (Read/Write: the sum of iov)
    std::vector<iovec> iov;     // Read/Write: guest memory, valid until the completion is reaped
    bool unmap = false;         // WriteZeroes: the range may be deallocated
    uint64_t user_data = 0;     // returned in the completion
};

struct IoCompletion {
    uint64_t user_data = 0;
    int64_t result = 0;  // >= 0: success (bytes for Read/Write), < 0: -errno
};

class BlockBackend {
public:
    virtual ~BlockBackend() = default;

    virtual uint64_t size_bytes() const = 0;
    virtual bool read_only() const = 0;
    virtual IoEngine engine() const = 0;

    // Queues a request. false if the backend is full (queue depth reached): the caller keeps
    // the request and retries after reaping completions. A request that can never succeed
    // (write on a read-only image, ...) is accepted and completes with -errno.
    virtual bool submit(IoRequest request) = 0;
    // Starts what submit() queued (one syscall for a batch with io_uring).
    virtual void flush_submissions() = 0;
    // Readable (eventfd) when completions are waiting.
    virtual int completion_fd() const = 0;
    // Takes the completions that are ready (non-blocking); resets the eventfd.
    virtual std::vector<IoCompletion> reap_completions() = 0;
    // Submitted and not yet reaped.
    virtual size_t in_flight() const = 0;

    // The image lock taken by open_block_backend. A run-time swap to a new backend on the same
    // image releases it first (the new open would find the image locked by this backend), and
    // takes it back if that open fails: lock_image() is false if someone else took it meanwhile.
    // Backends without an image (test fakes) have nothing to lock.
    virtual void unlock_image() {}
    virtual bool lock_image() { return true; }
};

// Opens a raw image. Throws Error naming the path if it cannot be opened (or its size found).
std::unique_ptr<BlockBackend> open_block_backend(const std::string& path, bool read_only, IoEngine engine,
                                                 unsigned queue_depth = 128);

}  // namespace embervm::virtio::block
