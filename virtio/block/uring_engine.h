// The Async block engine: io_uring (liburing). submit() queues an SQE, flush_submissions()
// submits the batch in one syscall, and the kernel signals the completion eventfd (registered
// with the ring) when CQEs arrive. Short transfers and EAGAIN/EINTR are resubmitted from where
// they stopped, so a completion carries the result of the whole request.
#pragma once

#include <liburing.h>

#include <deque>
#include <vector>

#include "virtio/block/backend.h"
#include "virtio/block/image_file.h"
#include "vmm/sys/eventfd.h"

namespace embervm::virtio::block {

class UringBackend final : public BlockBackend {
public:
    // At most `depth` requests in flight (submit() is false beyond). Throws Error if the ring
    // cannot be set up.
    UringBackend(ImageFile image, unsigned depth);
    ~UringBackend() override;
    UringBackend(const UringBackend&) = delete;
    UringBackend& operator=(const UringBackend&) = delete;

    uint64_t size_bytes() const override { return image_.size(); }
    bool read_only() const override { return image_.read_only(); }
    IoEngine engine() const override { return IoEngine::Async; }

    bool submit(IoRequest request) override;
    void flush_submissions() override;
    int completion_fd() const override { return event_.fd(); }
    std::vector<IoCompletion> reap_completions() override;
    size_t in_flight() const override { return used_ + done_.size(); }
    void unlock_image() override { image_.unlock(); }
    bool lock_image() override { return image_.lock(); }

private:
    // A request in the ring, with how far its transfer got.
    struct Slot {
        IoRequest req;
        uint64_t done = 0;
        uint64_t total = 0;
        size_t first = 0;
    };

    void queue_sqe(unsigned idx);
    void finish(unsigned idx, int64_t result);
    void complete_now(uint64_t user_data, int64_t result) { done_.push_back(IoCompletion{user_data, result}); }

    ImageFile image_;
    io_uring ring_{};
    vmm::EventFd event_;
    std::vector<Slot> slots_;
    std::vector<unsigned> free_;
    size_t used_ = 0;
    unsigned in_kernel_ = 0;
    unsigned unsubmitted_ = 0;
    std::deque<IoCompletion> done_;
};

}  // namespace embervm::virtio::block
