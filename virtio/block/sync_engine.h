// The Sync block engine: preadv/pwritev/fdatasync/fallocate inside submit(), on the caller's
// (the event loop's) thread. The completion is queued at once and the completion eventfd is
// signalled by flush_submissions(), so the device sees Sync and Async completions the same way.
#pragma once

#include <deque>

#include "virtio/block/backend.h"
#include "virtio/block/image_file.h"
#include "vmm/sys/eventfd.h"

namespace embervm::virtio::block {

class SyncBackend final : public BlockBackend {
public:
    explicit SyncBackend(ImageFile image) : image_(std::move(image)) {}

    uint64_t size_bytes() const override { return image_.size(); }
    bool read_only() const override { return image_.read_only(); }
    IoEngine engine() const override { return IoEngine::Sync; }

    bool submit(IoRequest request) override;
    void flush_submissions() override;
    int completion_fd() const override { return event_.fd(); }
    std::vector<IoCompletion> reap_completions() override;
    size_t in_flight() const override { return done_.size(); }
    void unlock_image() override { image_.unlock(); }
    bool lock_image() override { return image_.lock(); }

private:
    int64_t execute(IoRequest& request);

    ImageFile image_;
    vmm::EventFd event_;
    std::deque<IoCompletion> done_;
};

}  // namespace embervm::virtio::block
