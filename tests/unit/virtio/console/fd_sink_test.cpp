// Tests for virtio/console/fd_sink (FdConsoleSink): on a pipe the sink never blocks (-EAGAIN when
// full) while the descriptor it was given stays blocking, when_writable() fires on the event
// loop once the reader took something, a pipe without reader reports EPIPE; on a regular file
// it writes at the file's shared offset (after what the UART wrote through the same file).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "tests/unit/temp_dir.h"
#include "virtio/console/fd_sink.h"
#include "vmm/sys/fd.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_fd_sink_test {

using embervm::FileDescriptor;
using embervm::virtio::console::FdConsoleSink;

namespace {

std::span<const uint8_t> bytes(const std::string& s) {
    return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace

TEST_CASE("console sink: a full pipe is -EAGAIN, never a blocked loop", "[virtio][console]") {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    FileDescriptor rd(p[0]), wr(p[1]);
    boost::asio::io_context io;
    FdConsoleSink sink(io, wr.get(), "pipe");
    CHECK((::fcntl(wr.get(), F_GETFL) & O_NONBLOCK) == 0);  // the caller's descriptor as it was

    const std::string chunk(4096, 'x');
    size_t written = 0;
    ssize_t n = 0;
    while ((n = sink.write(bytes(chunk))) > 0) written += static_cast<size_t>(n);
    CHECK(n == -EAGAIN);
    CHECK(written >= 4096);  // a pipe holds 64 KiB by default

    int woken = 0;
    sink.when_writable([&] { woken++; });
    io.poll();
    CHECK(woken == 0);  // still full
    std::vector<char> buf(written);
    size_t got = 0;
    while (got < written) {
        const ssize_t r = ::read(rd.get(), buf.data() + got, written - got);
        REQUIRE(r > 0);
        got += static_cast<size_t>(r);
    }
    io.restart();
    io.run_one();
    CHECK(woken == 1);
    CHECK(sink.write(bytes("more")) == 4);

    // The reader goes: EPIPE (SIGPIPE ignored, as the VMM does).
    const auto old = ::signal(SIGPIPE, SIG_IGN);
    rd.reset();
    CHECK(sink.write(bytes("gone")) == -EPIPE);
    ::signal(SIGPIPE, old);
}

TEST_CASE("console sink: a regular file is written at the offset it shares", "[virtio][console]") {
    embervm::test::TempDir dir;
    const std::string path = dir.file("console.txt");
    FileDescriptor fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    REQUIRE(fd);
    boost::asio::io_context io;
    FdConsoleSink sink(io, fd.get(), "console.txt");
    REQUIRE(::write(fd.get(), "uart ", 5) == 5);
    CHECK(sink.write(bytes("hvc0 ")) == 5);
    REQUIRE(::write(fd.get(), "uart", 4) == 4);
    std::string content(14, '\0');
    FileDescriptor in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(::read(in.get(), content.data(), content.size()) == 14);
    CHECK(content == "uart hvc0 uart");
}

}  // namespace unit_fd_sink_test
