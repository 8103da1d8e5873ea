// Tests for vmm/sys/write_all: every byte reaches a slow reader through a full non-blocking
// pipe (Wait), a full pipe fails at once when nothing went out (FinishLine), and a reader that
// is gone is reported with errno.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "vmm/sys/fd.h"
#include "vmm/sys/write_all.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_write_all_test {

using embervm::FileDescriptor;
using embervm::WhenFull;
using embervm::write_all;

namespace {

struct Pipe {
    Pipe() {
        std::array<int, 2> fds{};
        REQUIRE(::pipe2(fds.data(), O_CLOEXEC) == 0);
        read_end.reset(fds[0]);
        write_end.reset(fds[1]);
        REQUIRE(::fcntl(write_end.get(), F_SETFL, O_NONBLOCK) == 0);
    }
    // Writes until the pipe is full.
    void fill() {
        std::array<uint8_t, 4096> junk{};
        while (::write(write_end.get(), junk.data(), junk.size()) > 0) {
        }
        REQUIRE(errno == EAGAIN);
    }
    FileDescriptor read_end, write_end;
};

}  // namespace

TEST_CASE("write_all: Wait writes every byte through a full non-blocking pipe", "[sys][write_all]") {
    Pipe p;
    std::vector<uint8_t> data(512 * 1024);  // several times a pipe's capacity
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 13 + (i >> 10));
    bool ok = false;
    std::thread writer([&] {
        ok = write_all(p.write_end.get(), data, WhenFull::Wait);
        p.write_end.reset();  // the reader sees EOF
    });
    std::vector<uint8_t> got;
    std::array<uint8_t, 1000> buf{};
    for (;;) {
        const ssize_t n = ::read(p.read_end.get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        REQUIRE(n >= 0);
        if (n == 0) break;
        got.insert(got.end(), buf.begin(), buf.begin() + n);
    }
    writer.join();
    CHECK(ok);
    CHECK(got == data);
}

TEST_CASE("write_all: FinishLine gives up on a full pipe that took nothing", "[sys][write_all]") {
    Pipe p;
    p.fill();
    errno = 0;
    CHECK_FALSE(write_all(p.write_end.get(), std::string("a line\n"), WhenFull::FinishLine));
    CHECK(errno == EAGAIN);
}

TEST_CASE("write_all: a string goes out whole", "[sys][write_all]") {
    Pipe p;
    const std::string line = "metrics {\"a\": 1}\n";
    REQUIRE(write_all(p.write_end.get(), line, WhenFull::FinishLine));
    std::string got(line.size(), '\0');
    REQUIRE(::read(p.read_end.get(), got.data(), got.size()) == static_cast<ssize_t>(line.size()));
    CHECK(got == line);
}

TEST_CASE("write_all: a reader that is gone is an error with errno", "[sys][write_all]") {
    const WhenFull mode = GENERATE(WhenFull::Wait, WhenFull::FinishLine);
    Pipe p;
    p.read_end.reset();
    auto old = ::signal(SIGPIPE, SIG_IGN);
    errno = 0;
    const bool ok = write_all(p.write_end.get(), std::string("x"), mode);
    const int err = errno;
    ::signal(SIGPIPE, old);
    CHECK_FALSE(ok);
    CHECK(err == EPIPE);
}

}  // namespace unit_write_all_test
