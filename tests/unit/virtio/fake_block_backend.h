// Test helper: a BlockBackend whose disk is a vector in memory, for the virtio-blk device
// tests. Requests complete inside submit() (like the sync engine) unless `hold` is set; at most
// `depth` may be submitted and not yet reaped (then submit() reports the backend full); every
// request that reached it is in `log`. Thread-safe, so a test thread can complete held
// requests while the device waits for them (reset, backend swap, destructor).
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "virtio/block/backend.h"
#include "vmm/sys/eventfd.h"

namespace embervm::virtio::testing {

using block::BlockBackend;
using block::IoCompletion;
using block::IoEngine;
using block::IoRequest;

// One request as the backend saw it.
struct Submitted {
    IoRequest::Op op;
    uint64_t offset;
    uint64_t length;
    bool unmap;
    size_t iov_count;
    uint64_t iov_bytes;
    uint64_t user_data;
};

class FakeBlockBackend final : public BlockBackend {
public:
    // The fake keeps at most this many bytes of the disk (a larger size_bytes is only reported).
    static constexpr uint64_t kMaxKeptBytes = 4 << 20;

    FakeBlockBackend(uint64_t size_bytes, bool ro)
        : disk(pattern().begin(), pattern().begin() + static_cast<ptrdiff_t>(std::min(size_bytes, kMaxKeptBytes))),
          size_(size_bytes), ro_(ro) {}

    // What a fresh disk holds at byte i: (i * 13 + i / 512 + 1) mod 256 (each sector differs).
    // Computed once: the fuzz targets make a disk per input, and a byte loop per disk was most
    // of their time.
    static const std::vector<uint8_t>& pattern() {
        static const std::vector<uint8_t> bytes = [] {
            std::vector<uint8_t> b(kMaxKeptBytes);
            for (size_t i = 0; i < b.size(); i++) b[i] = static_cast<uint8_t>(i * 13 + (i >> 9) + 1);
            return b;
        }();
        return bytes;
    }

    uint64_t size_bytes() const override { return size_; }
    bool read_only() const override { return ro_; }
    IoEngine engine() const override { return IoEngine::Sync; }

    bool submit(IoRequest r) override {
        std::lock_guard lock(mu_);
        if (held_.size() + ready_.size() >= depth) {
            ++refused;
            return false;
        }
        uint64_t bytes = 0;
        for (const iovec& v : r.iov) bytes += v.iov_len;
        log.push_back({r.op, r.offset, r.length, r.unmap, r.iov.size(), bytes, r.user_data});
        if (hold) {
            held_.push_back(std::move(r));
        } else {
            ready_.push_back({r.user_data, execute(r)});
        }
        return true;
    }
    void flush_submissions() override {
        std::lock_guard lock(mu_);
        ++flushes;
        if (!ready_.empty()) event_.signal();
    }
    int completion_fd() const override { return event_.fd(); }
    std::vector<IoCompletion> reap_completions() override {
        std::lock_guard lock(mu_);
        event_.consume();
        std::vector<IoCompletion> out(ready_.begin(), ready_.end());
        ready_.clear();
        reaped += out.size();
        return out;
    }
    size_t in_flight() const override {
        std::lock_guard lock(mu_);
        ++in_flight_queries_;
        asked_.notify_all();
        return held_.size() + ready_.size();
    }

    // How often in_flight() was asked so far: a device that waits for its requests asks it.
    uint64_t in_flight_queries() const {
        std::lock_guard lock(mu_);
        return in_flight_queries_;
    }
    // Waits until in_flight() has been asked more than `seen` times (the device has started to
    // wait for its requests), at most `timeout`; false on timeout.
    bool wait_for_in_flight_query(uint64_t seen, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const {
        std::unique_lock lock(mu_);
        return asked_.wait_for(lock, timeout, [&] { return in_flight_queries_ > seen; });
    }

    // Completes the held requests, as the kernel or a worker thread would.
    void release_held() {
        std::lock_guard lock(mu_);
        for (IoRequest& r : held_) ready_.push_back({r.user_data, execute(r)});
        held_.clear();
        event_.signal();
    }
    size_t held() const {
        std::lock_guard lock(mu_);
        return held_.size();
    }
    std::vector<uint8_t> bytes(uint64_t offset, size_t n) const {
        return {disk.begin() + static_cast<long>(offset), disk.begin() + static_cast<long>(offset + n)};
    }
    // The offsets of the logged requests, in submission order.
    std::vector<uint64_t> offsets() const {
        std::vector<uint64_t> out;
        for (const Submitted& s : log) out.push_back(s.offset);
        return out;
    }

    std::vector<uint8_t> disk;
    std::vector<Submitted> log;
    bool hold = false;
    size_t depth = 1000;
    int64_t fail_with = 0;  // < 0: every request completes with this
    int refused = 0;
    int flushes = 0;
    size_t reaped = 0;

private:
    int64_t execute(IoRequest& r) {
        if (fail_with < 0) return fail_with;
        switch (r.op) {
            case IoRequest::Op::Read:
            case IoRequest::Op::Write: {
                uint64_t off = r.offset;
                for (const iovec& v : r.iov) {
                    if (off + v.iov_len > disk.size()) return -EIO;
                    auto* p = static_cast<uint8_t*>(v.iov_base);
                    if (r.op == IoRequest::Op::Read) {
                        std::memcpy(p, disk.data() + off, v.iov_len);
                    } else {
                        std::memcpy(disk.data() + off, p, v.iov_len);
                    }
                    off += v.iov_len;
                }
                return static_cast<int64_t>(off - r.offset);
            }
            case IoRequest::Op::Discard:
            case IoRequest::Op::WriteZeroes: {
                const uint64_t end = std::min<uint64_t>(r.offset + r.length, disk.size());
                if (r.offset < end) {
                    std::fill(disk.begin() + static_cast<long>(r.offset), disk.begin() + static_cast<long>(end), 0);
                }
                return 0;
            }
            case IoRequest::Op::Flush:
                return 0;
        }
        return -EINVAL;
    }

    uint64_t size_;
    bool ro_;
    mutable std::mutex mu_;
    mutable std::condition_variable asked_;
    mutable uint64_t in_flight_queries_ = 0;
    std::deque<IoRequest> held_;
    std::deque<IoCompletion> ready_;
    embervm::vmm::EventFd event_;
};

}  // namespace embervm::virtio::testing
