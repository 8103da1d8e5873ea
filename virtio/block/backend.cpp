#include "virtio/block/backend.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <vector>

#include <fmt/format.h>

#include "vmm/sys/error.h"
#include "vmm/sys/eventfd.h"
#include "vmm/sys/fd.h"
#include "vmm/sys/log.h"

namespace embervm::virtio::block {

namespace {

// An opened raw image: the fd, its size and whether writes are allowed.
struct Image {
    FileDescriptor fd;
    uint64_t size = 0;
    bool read_only = false;
};

// The image's advisory lock: shared for a reader, exclusive for a writer. false if someone
// else holds a conflicting one (errno EWOULDBLOCK) or flock failed (errno set).
bool lock_image_fd(const Image& img) {
    return ::flock(img.fd.get(), (img.read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0;
}

Image open_image(const std::string& path, bool read_only) {
    Image img;
    img.read_only = read_only;
    img.fd.reset(::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!img.fd) {
        throw sys_error(fmt::format("cannot open {}{}", path, read_only ? " read-only" : " read-write"));
    }
    struct stat st {};
    if (::fstat(img.fd.get(), &st) != 0) {
        throw sys_error(fmt::format("cannot stat {}", path));
    }
    if (S_ISBLK(st.st_mode)) {
        if (::ioctl(img.fd.get(), BLKGETSIZE64, &img.size) != 0) {
            throw sys_error(fmt::format("cannot get the size of block device {}", path));
        }
    } else if (S_ISREG(st.st_mode)) {
        img.size = static_cast<uint64_t>(st.st_size);
    } else {
        throw Error(fmt::format("{} is neither a regular file nor a block device", path));
    }
    // Two writers on one image corrupt it: take an advisory lock like other VMMs do (shared for
    // read-only users, exclusive for a writer).
    if (!lock_image_fd(img)) {
        if (errno == EWOULDBLOCK) {
            throw Error(fmt::format("{} is locked: in use by another VM or another drive of this one", path));
        }
        throw sys_error(fmt::format("cannot lock {}", path));
    }
    if (img.size % 512 != 0) {
        log::warn("{}: size {} is not a multiple of 512; the last {} bytes are not visible to the guest", path, img.size,
                  img.size % 512);
    }
    return img;
}

int64_t errno_result() { return -static_cast<int64_t>(errno); }

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

// Discard and write-zeroes for both engines (rare requests: always done synchronously).
int64_t do_range_op(const Image& img, const IoRequest& r) {
    if (img.read_only) return -EROFS;
    const int fd = img.fd.get();
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

// Advances an iovec array by n bytes (after a short transfer).
void advance_iov(std::vector<iovec>& iov, size_t& first, uint64_t n) {
    while (n > 0 && first < iov.size()) {
        if (n >= iov[first].iov_len) {
            n -= iov[first].iov_len;
            ++first;
        } else {
            iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + n;
            iov[first].iov_len -= n;
            n = 0;
        }
    }
}

uint64_t iov_total(const std::vector<iovec>& iov) {
    uint64_t total = 0;
    for (const auto& v : iov) total += v.iov_len;
    return total;
}

// ---------------------------------------------------------------------------------------------
// Sync engine

class SyncBackend final : public BlockBackend {
public:
    explicit SyncBackend(Image img) : img_(std::move(img)) {}

    uint64_t size_bytes() const override { return img_.size; }
    bool read_only() const override { return img_.read_only; }
    IoEngine engine() const override { return IoEngine::Sync; }

    bool submit(IoRequest r) override {
        done_.push_back(IoCompletion{r.user_data, execute(r)});
        return true;
    }
    void flush_submissions() override {
        if (!done_.empty()) event_.signal();
    }
    int completion_fd() const override { return event_.fd(); }
    std::vector<IoCompletion> reap_completions() override {
        event_.consume();
        std::vector<IoCompletion> out(done_.begin(), done_.end());
        done_.clear();
        return out;
    }
    size_t in_flight() const override { return done_.size(); }
    void unlock_image() override { ::flock(img_.fd.get(), LOCK_UN); }
    bool lock_image() override { return lock_image_fd(img_); }

private:
    int64_t execute(IoRequest& r) {
        const int fd = img_.fd.get();
        switch (r.op) {
            case IoRequest::Op::Read:
            case IoRequest::Op::Write: {
                const bool is_read = r.op == IoRequest::Op::Read;
                if (!is_read && img_.read_only) return -EROFS;
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
                if (img_.read_only) return 0;
                return ::fdatasync(fd) == 0 ? 0 : errno_result();
            case IoRequest::Op::Discard:
            case IoRequest::Op::WriteZeroes:
                return do_range_op(img_, r);
        }
        return -EINVAL;
    }

    Image img_;
    vmm::EventFd event_;
    std::deque<IoCompletion> done_;
};

// ---------------------------------------------------------------------------------------------
// Async engine: io_uring

class UringBackend final : public BlockBackend {
public:
    UringBackend(Image img, unsigned depth) : img_(std::move(img)), slots_(depth) {
        const int rc = ::io_uring_queue_init(depth, &ring_, 0);
        if (rc < 0) {
            throw sys_error("io_engine Async: io_uring_queue_init", -rc);
        }
        if (const int r = ::io_uring_register_eventfd(&ring_, event_.fd()); r < 0) {
            ::io_uring_queue_exit(&ring_);
            throw sys_error("io_engine Async: io_uring_register_eventfd", -r);
        }
        for (unsigned i = 0; i < depth; i++) free_.push_back(depth - 1 - i);
    }
    ~UringBackend() override {
        // Requests still in the kernel write into memory that is about to go away: wait.
        while (in_kernel_ > 0) {
            io_uring_cqe* cqe = nullptr;
            if (::io_uring_wait_cqe(&ring_, &cqe) < 0) break;
            ::io_uring_cqe_seen(&ring_, cqe);
            --in_kernel_;
        }
        ::io_uring_queue_exit(&ring_);
    }

    uint64_t size_bytes() const override { return img_.size; }
    bool read_only() const override { return img_.read_only; }
    IoEngine engine() const override { return IoEngine::Async; }

    bool submit(IoRequest r) override {
        if (free_.empty()) return false;
        const bool write_like = r.op != IoRequest::Op::Read;
        if (write_like && r.op != IoRequest::Op::Flush && img_.read_only) {
            complete_now(r.user_data, -EROFS);
            return true;
        }
        if (r.op == IoRequest::Op::Discard || r.op == IoRequest::Op::WriteZeroes) {
            complete_now(r.user_data, do_range_op(img_, r));
            return true;
        }
        if (r.op == IoRequest::Op::Flush && img_.read_only) {
            complete_now(r.user_data, 0);
            return true;
        }
        const unsigned idx = free_.back();
        free_.pop_back();
        Slot& s = slots_[idx];
        s.req = std::move(r);
        s.done = 0;
        s.first = 0;
        s.total = iov_total(s.req.iov);
        ++used_;
        queue_sqe(idx);
        return true;
    }

    void flush_submissions() override {
        while (unsubmitted_ > 0) {
            const int n = ::io_uring_submit(&ring_);
            if (n == -EINTR) continue;
            if (n < 0) {
                // The entries stay in the SQ ring; the next flush (after completions are reaped,
                // which frees kernel resources) submits them again.
                log::warn("io_uring_submit: {} ({} requests waiting)", std::strerror(-n), unsubmitted_);
                break;
            }
            in_kernel_ += static_cast<unsigned>(n);
            unsubmitted_ -= static_cast<unsigned>(n);
            if (n == 0) break;
        }
        if (!done_.empty()) event_.signal();
    }

    int completion_fd() const override { return event_.fd(); }

    std::vector<IoCompletion> reap_completions() override {
        event_.consume();
        bool resubmitted = false;
        io_uring_cqe* cqe = nullptr;
        while (::io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr) {
            const auto idx = static_cast<unsigned>(::io_uring_cqe_get_data64(cqe));
            const int res = cqe->res;
            ::io_uring_cqe_seen(&ring_, cqe);
            --in_kernel_;
            Slot& s = slots_[idx];
            if (res == -EAGAIN || res == -EINTR) {
                queue_sqe(idx);
                resubmitted = true;
                continue;
            }
            if (s.req.op == IoRequest::Op::Flush) {
                finish(idx, res < 0 ? res : 0);
                continue;
            }
            if (res < 0) {
                finish(idx, res);
                continue;
            }
            if (res == 0 && s.total > s.done) {
                finish(idx, -EIO);  // end of file
                continue;
            }
            s.done += static_cast<uint64_t>(res);
            advance_iov(s.req.iov, s.first, static_cast<uint64_t>(res));
            if (s.done < s.total) {
                queue_sqe(idx);  // short transfer: continue where it stopped
                resubmitted = true;
            } else {
                finish(idx, static_cast<int64_t>(s.done));
            }
        }
        if (resubmitted || unsubmitted_ > 0) flush_submissions();
        std::vector<IoCompletion> out(done_.begin(), done_.end());
        done_.clear();
        return out;
    }

    size_t in_flight() const override { return used_ + done_.size(); }
    void unlock_image() override { ::flock(img_.fd.get(), LOCK_UN); }
    bool lock_image() override { return lock_image_fd(img_); }

private:
    struct Slot {
        IoRequest req;
        uint64_t done = 0;
        uint64_t total = 0;
        size_t first = 0;
    };

    void queue_sqe(unsigned idx) {
        Slot& s = slots_[idx];
        io_uring_sqe* sqe = ::io_uring_get_sqe(&ring_);
        if (sqe == nullptr) {
            // The SQ ring holds `depth` entries and at most depth_ slots exist: only possible if
            // the kernel has not consumed earlier entries yet.
            flush_submissions();
            sqe = ::io_uring_get_sqe(&ring_);
            if (sqe == nullptr) {
                finish(idx, -EBUSY);
                return;
            }
        }
        const int fd = img_.fd.get();
        const auto off = s.req.offset + s.done;
        const auto cnt = static_cast<unsigned>(std::min<size_t>(s.req.iov.size() - s.first, IOV_MAX));
        switch (s.req.op) {
            case IoRequest::Op::Read:
                ::io_uring_prep_readv(sqe, fd, s.req.iov.data() + s.first, cnt, off);
                break;
            case IoRequest::Op::Write:
                ::io_uring_prep_writev(sqe, fd, s.req.iov.data() + s.first, cnt, off);
                break;
            case IoRequest::Op::Flush:
                ::io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
                // The flush covers every write completed before it; draining also orders it after
                // writes still in flight, which is what a guest expects in practice.
                sqe->flags |= IOSQE_IO_DRAIN;
                break;
            default:
                break;  // range ops never get here
        }
        ::io_uring_sqe_set_data64(sqe, idx);
        ++unsubmitted_;
    }

    void finish(unsigned idx, int64_t result) {
        done_.push_back(IoCompletion{slots_[idx].req.user_data, result});
        slots_[idx].req = IoRequest{};
        free_.push_back(idx);
        --used_;
    }

    void complete_now(uint64_t user_data, int64_t result) { done_.push_back(IoCompletion{user_data, result}); }

    Image img_;
    io_uring ring_{};
    vmm::EventFd event_;
    std::vector<Slot> slots_;
    std::vector<unsigned> free_;
    size_t used_ = 0;
    unsigned in_kernel_ = 0;
    unsigned unsubmitted_ = 0;
    std::deque<IoCompletion> done_;
};

}  // namespace

std::unique_ptr<BlockBackend> open_block_backend(const std::string& path, bool read_only, IoEngine engine,
                                                 unsigned queue_depth) {
    Image img = open_image(path, read_only);
    if (engine == IoEngine::Async) {
        return std::make_unique<UringBackend>(std::move(img), queue_depth);
    }
    return std::make_unique<SyncBackend>(std::move(img));
}

}  // namespace embervm::virtio::block
