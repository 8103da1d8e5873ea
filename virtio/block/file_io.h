// Small helpers both block engines share: the -errno result convention and iovec bookkeeping
// for transfers the kernel completed only in part.
#pragma once

#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace embervm::virtio::block {

// The current errno as a request result (-errno).
inline int64_t errno_result() { return -static_cast<int64_t>(errno); }

inline uint64_t iov_total(const std::vector<iovec>& iov) {
    uint64_t total = 0;
    for (const auto& v : iov) total += v.iov_len;
    return total;
}

// Advances an iovec array by n bytes after a short transfer: `first` is the first iovec not yet
// done, and the one it names is trimmed by what went through of it.
inline void advance_iov(std::vector<iovec>& iov, size_t& first, uint64_t n) {
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

}  // namespace embervm::virtio::block
