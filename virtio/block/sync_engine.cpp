// The Sync block engine: each request is done with ordinary syscalls inside submit().
#include "virtio/block/sync_engine.h"

#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "virtio/block/file_io.h"

namespace embervm::virtio::block {

bool SyncBackend::submit(IoRequest r) {
    done_.push_back(IoCompletion{r.user_data, execute(r)});
    return true;
}

void SyncBackend::flush_submissions() {
    if (!done_.empty()) event_.signal();
}

std::vector<IoCompletion> SyncBackend::reap_completions() {
    event_.consume();
    std::vector<IoCompletion> out(done_.begin(), done_.end());
    done_.clear();
    return out;
}

int64_t SyncBackend::execute(IoRequest& r) {
    const int fd = image_.fd();
    switch (r.op) {
        case IoRequest::Op::Read:
        case IoRequest::Op::Write: {
            const bool is_read = r.op == IoRequest::Op::Read;
            if (!is_read && image_.read_only()) return -EROFS;
            const uint64_t total = iov_total(r.iov);
            uint64_t done = 0;
            size_t first = 0;
            while (done < total) {
                const int cnt = static_cast<int>(std::min<size_t>(r.iov.size() - first, IOV_MAX));
                const auto off = static_cast<off_t>(r.offset + done);
                const ssize_t n = is_read ? ::preadv(fd, r.iov.data() + first, cnt, off)
                                          : ::pwritev(fd, r.iov.data() + first, cnt, off);
                if (n < 0) {
                    if (errno == EINTR) continue;
                    return errno_result();
                }
                if (n == 0) return -EIO;  // end of file: the image shrank under us
                done += static_cast<uint64_t>(n);
                advance_iov(r.iov, first, static_cast<uint64_t>(n));
            }
            return static_cast<int64_t>(done);
        }
        case IoRequest::Op::Flush:
            if (image_.read_only()) return 0;
            return ::fdatasync(fd) == 0 ? 0 : errno_result();
        case IoRequest::Op::Discard:
        case IoRequest::Op::WriteZeroes:
            return image_.discard_or_write_zeroes(r);
    }
    return -EINVAL;
}

}  // namespace embervm::virtio::block
