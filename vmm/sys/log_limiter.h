// Rate limiting for a warning that a guest or a broken host resource can cause again and again
// (a failing disk image, a TAP device that went away): the first occurrence is logged at once,
// then at most one line per interval, which also says how many occurrences it did not log.
#pragma once

#include <chrono>
#include <cstdint>

namespace embervm::log {

class Limiter {
public:
    explicit Limiter(std::chrono::steady_clock::duration interval = std::chrono::seconds(10)) : interval_(interval) {}

    // Whether to log this occurrence now; if so, *not_logged is how many were held back since
    // the last line. Not synchronised: call it under the owner's lock.
    bool admit(uint64_t* not_logged) {
        const auto now = std::chrono::steady_clock::now();
        if (logged_ && now - logged_at_ < interval_) {
            held_back_++;
            return false;
        }
        *not_logged = held_back_;
        held_back_ = 0;
        logged_ = true;
        logged_at_ = now;
        return true;
    }

private:
    std::chrono::steady_clock::duration interval_;
    std::chrono::steady_clock::time_point logged_at_{};
    uint64_t held_back_ = 0;
    bool logged_ = false;
};

}  // namespace embervm::log
