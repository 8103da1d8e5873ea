// A raw disk image opened for a block backend: the fd, its size, read-only or read-write, and
// the advisory lock that keeps two writers (this VM's or another's) off one image.
#pragma once

#include <cstdint>
#include <string>

#include "virtio/block/backend.h"
#include "vmm/sys/fd.h"

namespace embervm::virtio::block {

class ImageFile {
public:
    // Opens a regular file or a block device and takes its lock (shared for a reader, exclusive
    // for a writer). Throws Error naming the path if it cannot be opened, sized or locked.
    static ImageFile open(const std::string& path, bool read_only);

    int fd() const { return fd_.get(); }
    uint64_t size() const { return size_; }
    bool read_only() const { return read_only_; }

    // Takes the lock back after unlock(). false if someone else holds a conflicting one (errno
    // EWOULDBLOCK) or flock failed (errno set).
    bool lock() const;
    void unlock() const;

    // Discard or WriteZeroes (request.op), done synchronously by both engines: they are rare.
    // 0 or -errno; -EROFS on a read-only image.
    int64_t discard_or_write_zeroes(const IoRequest& request) const;

private:
    ImageFile(FileDescriptor fd, uint64_t size, bool read_only)
        : fd_(std::move(fd)), size_(size), read_only_(read_only) {}

    FileDescriptor fd_;
    uint64_t size_ = 0;
    bool read_only_ = false;
};

}  // namespace embervm::virtio::block
