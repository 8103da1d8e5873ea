// The Async block engine: requests go to the kernel through an io_uring and come back as CQEs.
#include "virtio/block/uring_engine.h"

#include <limits.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "virtio/block/file_io.h"
#include "vmm/sys/error.h"
#include "vmm/sys/log.h"

namespace embervm::virtio::block {

UringBackend::UringBackend(ImageFile image, unsigned depth) : image_(std::move(image)), slots_(depth) {
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

UringBackend::~UringBackend() {
    // Requests still in the kernel write into memory that is about to go away: wait.
    while (in_kernel_ > 0) {
        io_uring_cqe* cqe = nullptr;
        if (::io_uring_wait_cqe(&ring_, &cqe) < 0) break;
        ::io_uring_cqe_seen(&ring_, cqe);
        --in_kernel_;
    }
    ::io_uring_queue_exit(&ring_);
}

bool UringBackend::submit(IoRequest r) {
    if (free_.empty()) return false;
    const bool write_like = r.op != IoRequest::Op::Read;
    if (write_like && r.op != IoRequest::Op::Flush && image_.read_only()) {
        complete_now(r.user_data, -EROFS);
        return true;
    }
    if (r.op == IoRequest::Op::Discard || r.op == IoRequest::Op::WriteZeroes) {
        complete_now(r.user_data, image_.discard_or_write_zeroes(r));
        return true;
    }
    if (r.op == IoRequest::Op::Flush && image_.read_only()) {
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

void UringBackend::flush_submissions() {
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

std::vector<IoCompletion> UringBackend::reap_completions() {
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

void UringBackend::queue_sqe(unsigned idx) {
    Slot& s = slots_[idx];
    io_uring_sqe* sqe = ::io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
        // The SQ ring holds `depth` entries and at most `depth` slots exist: only possible if
        // the kernel has not consumed earlier entries yet.
        flush_submissions();
        sqe = ::io_uring_get_sqe(&ring_);
        if (sqe == nullptr) {
            finish(idx, -EBUSY);
            return;
        }
    }
    const int fd = image_.fd();
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

void UringBackend::finish(unsigned idx, int64_t result) {
    done_.push_back(IoCompletion{slots_[idx].req.user_data, result});
    slots_[idx].req = IoRequest{};
    free_.push_back(idx);
    --used_;
}

}  // namespace embervm::virtio::block
