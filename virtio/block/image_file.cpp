// Opening and locking a raw disk image for the block backends, and the range operations
// (discard, write-zeroes) both engines run on it.
#include "virtio/block/image_file.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include <fmt/format.h>

#include "virtio/block/file_io.h"
#include "vmm/sys/error.h"
#include "vmm/sys/log.h"

namespace embervm::virtio::block {

namespace {

// Writes zeros over [offset, offset + length) with ordinary writes (the fallback when the
// filesystem cannot zero or punch ranges).
int64_t write_zeros(int fd, uint64_t offset, uint64_t length) {
    static const std::vector<uint8_t> zeros(1 << 20, 0);
    while (length > 0) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(length, zeros.size()));
        const ssize_t r = ::pwrite(fd, zeros.data(), n, static_cast<off_t>(offset));
        if (r < 0) {
            if (errno == EINTR) continue;
            return errno_result();
        }
        if (r == 0) return -EIO;
        offset += static_cast<uint64_t>(r);
        length -= static_cast<uint64_t>(r);
    }
    return 0;
}

}  // namespace

ImageFile ImageFile::open(const std::string& path, bool read_only) {
    FileDescriptor fd(::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!fd) {
        throw sys_error(fmt::format("cannot open {}{}", path, read_only ? " read-only" : " read-write"));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        throw sys_error(fmt::format("cannot stat {}", path));
    }
    uint64_t size = 0;
    if (S_ISBLK(st.st_mode)) {
        if (::ioctl(fd.get(), BLKGETSIZE64, &size) != 0) {
            throw sys_error(fmt::format("cannot get the size of block device {}", path));
        }
    } else if (S_ISREG(st.st_mode)) {
        size = static_cast<uint64_t>(st.st_size);
    } else {
        throw Error(fmt::format("{} is neither a regular file nor a block device", path));
    }
    ImageFile img(std::move(fd), size, read_only);
    // Two writers on one image corrupt it: take an advisory lock like other VMMs do (shared for
    // read-only users, exclusive for a writer).
    if (!img.lock()) {
        if (errno == EWOULDBLOCK) {
            throw Error(fmt::format("{} is locked: in use by another VM or another drive of this one", path));
        }
        throw sys_error(fmt::format("cannot lock {}", path));
    }
    if (size % 512 != 0) {
        log::warn("{}: size {} is not a multiple of 512; the last {} bytes are not visible to the guest", path, size,
                  size % 512);
    }
    return img;
}

bool ImageFile::lock() const { return ::flock(fd_.get(), (read_only_ ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0; }

void ImageFile::unlock() const { ::flock(fd_.get(), LOCK_UN); }

int64_t ImageFile::discard_or_write_zeroes(const IoRequest& r) const {
    if (read_only_) return -EROFS;
    const int fd = fd_.get();
    const auto off = static_cast<off_t>(r.offset);
    const auto len = static_cast<off_t>(r.length);
    if (r.op == IoRequest::Op::Discard) {
        // Advisory: a filesystem that cannot punch holes keeps the data, which is allowed.
        if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0) return 0;
        return errno == EOPNOTSUPP ? 0 : errno_result();
    }
    const int mode = r.unmap ? (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) : (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE);
    if (::fallocate(fd, mode, off, len) == 0) return 0;
    if (errno != EOPNOTSUPP && errno != EINVAL) return errno_result();
    return write_zeros(fd, r.offset, r.length);
}

}  // namespace embervm::virtio::block
