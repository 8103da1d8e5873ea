// A raw disk image for block tests: a file under /tmp filled with a known byte pattern (so that
// reads can be checked against original()), removed by the destructor.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace embervm::test {

class TempImage {
public:
    explicit TempImage(size_t size) {
        char tmpl[] = "/tmp/embervm-image-test-XXXXXX";
        const int fd = ::mkstemp(tmpl);
        REQUIRE(fd >= 0);
        path_ = tmpl;
        content_.resize(size);
        for (size_t i = 0; i < size; i++) content_[i] = static_cast<uint8_t>((i * 31) ^ (i >> 8) ^ 0x5a);
        size_t done = 0;
        while (done < size) {
            const ssize_t n = ::pwrite(fd, content_.data() + done, size - done, static_cast<off_t>(done));
            REQUIRE(n > 0);
            done += static_cast<size_t>(n);
        }
        ::close(fd);
    }
    ~TempImage() { ::unlink(path_.c_str()); }
    TempImage(const TempImage&) = delete;
    TempImage& operator=(const TempImage&) = delete;

    const std::string& path() const { return path_; }
    // What the file held when it was made.
    const std::vector<uint8_t>& original() const { return content_; }
    std::vector<uint8_t> original(uint64_t off, size_t n) const {
        return {content_.begin() + static_cast<long>(off), content_.begin() + static_cast<long>(off + n)};
    }
    // What the file holds now.
    std::vector<uint8_t> read(uint64_t off, size_t n) const {
        std::vector<uint8_t> v(n);
        const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        const ssize_t got = ::pread(fd, v.data(), n, static_cast<off_t>(off));
        ::close(fd);
        REQUIRE(got == static_cast<ssize_t>(n));
        return v;
    }
    uint64_t file_size() const {
        struct stat st {};
        REQUIRE(::stat(path_.c_str(), &st) == 0);
        return static_cast<uint64_t>(st.st_size);
    }

private:
    std::string path_;
    std::vector<uint8_t> content_;
};

}  // namespace embervm::test
