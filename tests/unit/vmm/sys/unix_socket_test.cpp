// Tests for vmm/sys/unix_socket: a free path stays free, a stale socket is removed, a live one
// and a file that is not a socket are errors naming the caller and the path.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>
#include <string>

#include "tests/unit/temp_dir.h"
#include "vmm/sys/fd.h"
#include "vmm/sys/unix_socket.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_unix_socket_test {

using embervm::FileDescriptor;

namespace {

FileDescriptor listen_on(const std::string& path) {
    FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.data(), path.size());
    REQUIRE(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof(a)) == 0);
    REQUIRE(::listen(fd.get(), 8) == 0);
    return fd;
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

TEST_CASE("unix_socket: stale sockets go, live ones and other files stay", "[sys][unix_socket]") {
    embervm::test::TempDir dir;
    const std::string none = dir.file("none");
    CHECK_FALSE(embervm::unix_socket_is_live(none));
    CHECK_NOTHROW(embervm::remove_stale_unix_socket(none, "test"));

    const std::string plain = dir.write("plain", "x");
    CHECK_THROWS_WITH(embervm::remove_stale_unix_socket(plain, "test"),
                      Catch::Contains("test socket " + plain + ": a file that is not a socket"));
    CHECK(exists(plain));

    const std::string sock = dir.file("sock");
    FileDescriptor l = listen_on(sock);
    CHECK(embervm::unix_socket_is_live(sock));
    CHECK_THROWS_WITH(embervm::remove_stale_unix_socket(sock, "test"), Catch::Contains("another process is serving on it"));
    CHECK(exists(sock));
    l.reset();  // the socket file stays, stale
    CHECK_FALSE(embervm::unix_socket_is_live(sock));
    CHECK_NOTHROW(embervm::remove_stale_unix_socket(sock, "test"));
    CHECK_FALSE(exists(sock));
}

}  // namespace unit_unix_socket_test
