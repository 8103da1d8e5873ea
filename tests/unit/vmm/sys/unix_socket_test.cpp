// Tests for vmm/sys/unix_socket: a free path stays free, a stale socket is removed, a live one
// and a file that is not a socket are errors naming the caller and the path; a listening socket
// appears at its path already listening (a client that connects the moment it sees the file is
// never refused), with the permission bits asked for and no temporary file left behind.
#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

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

// connect() to `path`: 0 or the errno.
int connect_to(const std::string& path) {
    FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd);
    const auto addr = embervm::unix_address(path);
    REQUIRE(addr);
    return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) == 0 ? 0 : errno;
}

size_t entries(const std::string& dir) {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
    return n;
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

TEST_CASE("unix_socket: a listening socket's path appears only once it listens", "[sys][unix_socket]") {
    embervm::test::TempDir dir;
    const std::string path = dir.file("api.sock");
    // The client side of an orchestrator that waits for the file and connects at once: inotify
    // wakes it the moment the name appears (a bind() of the path itself would show it before
    // listen(), and such a client would be refused now and then).
    constexpr int kRounds = 300;
    int refused = 0;
    for (int round = 0; round < kRounds; ++round) {
        FileDescriptor watch(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
        REQUIRE(watch);
        REQUIRE(::inotify_add_watch(watch.get(), dir.path().c_str(), IN_CREATE | IN_MOVED_TO) >= 0);
        FileDescriptor listener;
        std::thread server([&] { listener = embervm::listen_unix_socket(path, "test", 8, 0600, false); });
        bool seen = false;
        while (!seen) {
            pollfd p{watch.get(), POLLIN, 0};
            REQUIRE(::poll(&p, 1, 10000) == 1);
            alignas(inotify_event) char buf[4096];
            const ssize_t n = ::read(watch.get(), buf, sizeof(buf));
            REQUIRE(n > 0);
            for (ssize_t off = 0; off < n;) {
                const auto* e = reinterpret_cast<const inotify_event*>(buf + off);
                if (e->len > 0 && std::string(e->name) == "api.sock") seen = true;
                off += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
            }
        }
        const int err = connect_to(path);
        if (err != 0) ++refused;
        server.join();
        REQUIRE(listener);
        listener.reset();
        REQUIRE(::unlink(path.c_str()) == 0);
    }
    CHECK(refused == 0);
    CHECK(entries(dir.path()) == 0);  // no temporary name left behind
}

TEST_CASE("unix_socket: listen_unix_socket's mode, takeover and errors", "[sys][unix_socket]") {
    embervm::test::TempDir dir;
    const std::string path = dir.file("s");

    FileDescriptor a = embervm::listen_unix_socket(path, "test", 8, 0600, true);
    struct stat st {};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 07777) == 0600);
    CHECK(embervm::unix_socket_is_live(path));
    CHECK_THROWS_WITH(embervm::listen_unix_socket(path, "test", 8, 0600, true),
                      Catch::Contains("test socket " + path + ": another process is serving on it"));
    CHECK(embervm::unix_socket_is_live(path));
    a.reset();  // stale now: the next listener takes the path over
    FileDescriptor b = embervm::listen_unix_socket(path, "test", 8, 0640, false);
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0640);
    CHECK(connect_to(path) == 0);
    CHECK(entries(dir.path()) == 1);
    b.reset();

    const std::string plain = dir.write("plain", "x");
    CHECK_THROWS_WITH(embervm::listen_unix_socket(plain, "test", 8, std::nullopt, false),
                      Catch::Contains("test socket " + plain + ": a file that is not a socket"));
    CHECK_THROWS_WITH(embervm::listen_unix_socket(dir.file("missing/s"), "test", 8, std::nullopt, false),
                      Catch::Contains("test socket " + dir.file("missing/s") + ": its directory"));
    CHECK_THROWS_WITH(embervm::listen_unix_socket("", "test", 8, std::nullopt, false), Catch::Contains("test socket: empty path"));
    CHECK_THROWS_WITH(embervm::listen_unix_socket("/" + std::string(embervm::kMaxUnixSocketPath, 'x'), "test", 8,
                                                  std::nullopt, false),
                      Catch::Contains("path longer than"));
}

TEST_CASE("unix_socket: a directory too long for the temporary name next to the socket", "[sys][unix_socket]") {
    embervm::test::TempDir dir;
    // The socket's path just fits; the directory plus a temporary name would not: the temporary
    // name is bound through /proc/self/fd/N instead.
    std::string deep = dir.path();
    while (deep.size() + 2 < embervm::kMaxUnixSocketPath - 12) deep += "/d";
    deep += std::string(embervm::kMaxUnixSocketPath - 2 - deep.size(), 'e');
    std::filesystem::create_directories(deep);
    const std::string path = deep + "/s";
    REQUIRE(path.size() == embervm::kMaxUnixSocketPath);
    FileDescriptor l = embervm::listen_unix_socket(path, "test", 8, 0600, false);
    CHECK(connect_to(path) == 0);
    CHECK(entries(deep) == 1);
}

}  // namespace unit_unix_socket_test
