// Tests for vmm/snapshot/uffd_message and uffd_backend: the regions message round-trips and a
// handler's parser refuses anything it cannot rely on; the backend registers guest memory, hands
// the userfaultfd over with the message, has its faults served by the (test's) handler, and
// reports a handler that hangs up, passes the balloon's discards on as remove events; a missing
// or silent socket is one line naming mem_backend.
// No KVM: the faults come from a thread of this process reading guest memory.
#include <catch2/catch.hpp>

#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "memory/guest_memory.h"
#include "tests/unit/temp_dir.h"
#include "vmm/snapshot/uffd_backend.h"
#include "vmm/snapshot/uffd_message.h"
#include "vmm/sys/error.h"
#include "vmm/sys/fd.h"
#include "vmm/sys/fd_passing.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_uffd_test {

using embervm::Error;
using embervm::FileDescriptor;
using embervm::memory::GuestAddress;
using embervm::memory::GuestMemory;
using embervm::test::TempDir;
using namespace embervm::snapshot;

namespace {

constexpr uint64_t kPage = 4096;

std::string parse_error(const std::string& text, uint64_t file_size) {
    try {
        parse_uffd_regions(text, file_size);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

// A Unix socket listening at `path` (the test plays the handler).
FileDescriptor listen_at(const std::string& path, bool listen = true) {
    FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    REQUIRE(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0);
    if (listen) REQUIRE(::listen(fd.get(), 1) == 0);
    return fd;
}

// Accepts embervm's connection and reads its message (one read: it is small) and the fd.
std::string receive(int listener, FileDescriptor& conn, FileDescriptor& uffd) {
    conn.reset(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(conn);
    uint8_t buf[4096];
    std::vector<FileDescriptor> fds;
    const ssize_t n = embervm::receive_with_fds(conn.get(), buf, fds);
    REQUIRE(n > 0);
    REQUIRE(fds.size() == 1);
    uffd = std::move(fds.front());
    return std::string(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

// Waits for one fault on `uffd` (up to 10 s) and returns its address.
uint64_t next_fault(int uffd) {
    pollfd p{uffd, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    uffd_msg m{};
    REQUIRE(::read(uffd, &m, sizeof(m)) == static_cast<ssize_t>(sizeof(m)));
    REQUIRE(m.event == UFFD_EVENT_PAGEFAULT);
    return m.arg.pagefault.address;
}

// 16 pages of guest memory handed over to the test, which plays the handler.
struct HandedOver {
    TempDir dir;
    std::string path = dir.file("handler.sock");
    FileDescriptor listener = listen_at(path);
    GuestMemory mem{{{GuestAddress(0), 16 * kPage}}};
    UffdBackend backend{mem, path};
    FileDescriptor conn, uffd;
    std::string text = receive(listener.get(), conn, uffd);
};

}  // namespace

TEST_CASE("uffd message: the regions round-trip in Firecracker's shape", "[snapshot]") {
    const std::vector<UffdRegion> regions = {{0x7f0000000000, 16 * kPage, 0, kPage},
                                             {0x7f1000000000, 8 * kPage, 16 * kPage, kPage}};
    const std::string text = encode_uffd_regions(regions);
    CHECK(text ==
          R"([{"base_host_virt_addr":139637976727552,"offset":0,"page_size":4096,"size":65536},)"
          R"({"base_host_virt_addr":139706696204288,"offset":65536,"page_size":4096,"size":32768}])");
    CHECK(parse_uffd_regions(text, 24 * kPage) == regions);
    CHECK(parse_uffd_regions(text + "\n", 24 * kPage) == regions);  // the newline that ends it on the socket
}

TEST_CASE("uffd message: a handler's parser refuses what it cannot rely on, naming the region and field",
          "[snapshot]") {
    const auto one = [](const std::string& fields) { return "[{" + fields + "}]"; };
    const std::string ok = R"("base_host_virt_addr":4096,"size":8192,"offset":0,"page_size":4096)";
    CHECK(parse_error(one(ok), 8192).empty());
    CHECK(parse_error("", 8192) == "uffd regions: not JSON");
    CHECK(parse_error("[1", 8192) == "uffd regions: not JSON");
    CHECK(parse_error("{}", 8192) == "uffd regions: not a non-empty JSON array");
    CHECK(parse_error("[]", 8192) == "uffd regions: not a non-empty JSON array");
    CHECK(parse_error("[7]", 8192) == "uffd regions[0]: not an object");
    CHECK(parse_error(one(R"("size":8192,"offset":0,"page_size":4096)"), 8192) ==
          "uffd regions[0].base_host_virt_addr: missing");
    CHECK(parse_error(one(R"("base_host_virt_addr":-4096,"size":8192,"offset":0,"page_size":4096)"), 8192) ==
          "uffd regions[0].base_host_virt_addr: not an unsigned integer");
    CHECK(parse_error(one(R"("base_host_virt_addr":4096,"size":"8192","offset":0,"page_size":4096)"), 8192) ==
          "uffd regions[0].size: not an unsigned integer");
    CHECK(parse_error(one(R"("base_host_virt_addr":4096.5,"size":8192,"offset":0,"page_size":4096)"), 8192) ==
          "uffd regions[0].base_host_virt_addr: not an unsigned integer");
    CHECK(parse_error(one(ok + R"(,"extra":1)"), 8192) == "uffd regions[0].extra: unknown field");
    CHECK(parse_error(one(R"("base_host_virt_addr":4096,"size":8192,"offset":0,"page_size":6000)"), 8192) ==
          "uffd regions[0].page_size: 6000 is not a power of two of at least 4096");
    CHECK(parse_error(one(R"("base_host_virt_addr":4096,"size":8192,"offset":0,"page_size":0)"), 8192) ==
          "uffd regions[0].page_size: 0 is not a power of two of at least 4096");
    CHECK(parse_error(one(R"("base_host_virt_addr":4097,"size":8192,"offset":0,"page_size":4096)"), 8192) ==
          "uffd regions[0].base_host_virt_addr: 0x1001 is not a multiple of the page size");
    CHECK(parse_error(one(R"("base_host_virt_addr":4096,"size":0,"offset":0,"page_size":4096)"), 8192) ==
          "uffd regions[0].size: 0");
    CHECK(parse_error(one(R"("base_host_virt_addr":18446744073709547520,"size":8192,"offset":0,"page_size":4096)"),
                      8192) == "uffd regions[0]: wraps around the address space");
    CHECK(parse_error(one(R"("base_host_virt_addr":4096,"size":8192,"offset":4096,"page_size":4096)"), 8192) ==
          "uffd regions[0]: bytes [0x1000, +0x2000) of a memory file of 0x2000 bytes");
    CHECK(parse_error(one(R"("base_host_virt_addr":4096,"size":8192,"offset":18446744073709547520,"page_size":4096)"),
                      8192) == "uffd regions[0]: bytes [0xfffffffffffff000, +0x2000) of a memory file of 0x2000 bytes");
    CHECK(parse_error(one(ok), 16384) == "uffd regions: 0x2000 bytes in all, the memory file has 0x4000");
    const std::string second_host = R"("base_host_virt_addr":8192,"size":8192,"offset":8192,"page_size":4096)";
    CHECK(parse_error("[{" + ok + "},{" + second_host + "}]", 16384) ==
          "uffd regions[1]: overlaps regions[0] (in host addresses)");
    const std::string second_file = R"("base_host_virt_addr":65536,"size":8192,"offset":4096,"page_size":4096)";
    CHECK(parse_error("[{" + ok + "},{" + second_file + "}]", 16384) ==
          "uffd regions[1]: overlaps regions[0] (in the memory file)");
}

TEST_CASE("uffd backend: guest memory is registered, handed over and served by the handler", "[snapshot]") {
    TempDir dir;
    const std::string path = dir.file("handler.sock");
    const FileDescriptor listener = listen_at(path);
    const GuestMemory mem({{GuestAddress(0), 16 * kPage}, {GuestAddress(0x100000), 8 * kPage}});
    UffdBackend backend(mem, path);
    CHECK((backend.features() & UFFD_FEATURE_EVENT_REMOVE) != 0);

    FileDescriptor conn, uffd;
    const std::string text = receive(listener.get(), conn, uffd);
    REQUIRE(text.back() == '\n');
    const std::vector<UffdRegion> regions = parse_uffd_regions(text, 24 * kPage);
    REQUIRE(regions.size() == 2);
    CHECK(regions == backend.regions());
    CHECK(regions[0].base_host_virt_addr == reinterpret_cast<uint64_t>(mem.regions()[0].host_base()));
    CHECK(regions[1].offset == 16 * kPage);

    // A read of the second region's page 3 waits until the handler copies the page in.
    std::atomic<uint32_t> seen{0};
    std::thread reader([&] { seen = mem.read_obj<uint32_t>(GuestAddress(0x100000 + 3 * kPage + 8)); });
    const uint64_t fault = next_fault(uffd.get());
    CHECK((fault & ~(kPage - 1)) == regions[1].base_host_virt_addr + 3 * kPage);
    std::vector<uint8_t> page(kPage, 0);
    const uint32_t value = 0x5eed1234;
    std::memcpy(page.data() + 8, &value, sizeof(value));
    uffdio_copy copy{};
    copy.dst = fault & ~(kPage - 1);
    copy.src = reinterpret_cast<uint64_t>(page.data());
    copy.len = kPage;
    REQUIRE(::ioctl(uffd.get(), UFFDIO_COPY, &copy) == 0);
    reader.join();
    CHECK(seen == value);
    // The page is there now: a second copy is EEXIST, a read needs no handler.
    CHECK(::ioctl(uffd.get(), UFFDIO_COPY, &copy) == -1);
    CHECK(errno == EEXIST);
    CHECK(mem.read_obj<uint32_t>(GuestAddress(0x100000 + 3 * kPage + 8)) == value);
}

TEST_CASE("uffd backend: a handler that hangs up is reported once, and waiting faults are woken", "[snapshot]") {
    HandedOver h;

    std::mutex m;
    std::condition_variable cv;
    std::vector<std::string> reports;
    h.backend.watch(
        [&](const std::string& why) {
            std::lock_guard lock(m);
            reports.push_back(why);
            cv.notify_all();
        },
        false);
    // A fault the handler never serves: the reader waits until the backend gives up the memory.
    std::atomic<bool> done{false};
    std::thread reader([&] {
        (void)h.mem.read_obj<uint8_t>(GuestAddress(5 * kPage));
        done = true;
    });
    next_fault(h.uffd.get());
    CHECK_FALSE(done);
    // The handler dies: its end of the connection and its userfaultfd close.
    h.conn.reset();
    h.uffd.reset();
    {
        std::unique_lock lock(m);
        REQUIRE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return !reports.empty(); }));
    }
    reader.join();
    CHECK(done);
    REQUIRE(reports.size() == 1);
    CHECK(reports[0] == "mem_backend: the Uffd page-fault handler at " + h.path +
                            " closed its connection: the guest's memory can no longer be served, ending the VM");
}

TEST_CASE("uffd backend: no socket, or nobody listening on it, is one line naming mem_backend", "[snapshot]") {
    TempDir dir;
    const GuestMemory mem({{GuestAddress(0), 4 * kPage}});
    const std::string missing = dir.file("none.sock");
    CHECK_THROWS_WITH(UffdBackend(mem, missing), "mem_backend.backend_path: " + missing +
                                                     ": no such socket (start the page-fault handler first)");
    const std::string silent = dir.file("silent.sock");
    const FileDescriptor bound = listen_at(silent, false);
    CHECK_THROWS_WITH(UffdBackend(mem, silent),
                      "mem_backend.backend_path: " + silent + ": no page-fault handler listens there");
    const GuestMemory shared({{GuestAddress(0), 4 * kPage}}, embervm::memory::MemoryBacking::SharedMemfd);
    CHECK_THROWS_WITH(UffdBackend(shared, silent),
                      "mem_backend: Uffd cannot serve guest memory shared with a vhost-user backend (use File)");
}

TEST_CASE("uffd backend: pages the balloon gives back reach the handler as a remove event", "[snapshot]") {
    HandedOver h;
    // The balloon's discard (madvise(MADV_DONTNEED)) waits until the handler has read the event.
    std::atomic<bool> discarded{false};
    std::thread balloon([&] { discarded = h.mem.discard(GuestAddress(4 * kPage), 2 * kPage); });
    pollfd p{h.uffd.get(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    uffd_msg m{};
    REQUIRE(::read(h.uffd.get(), &m, sizeof(m)) == static_cast<ssize_t>(sizeof(m)));
    balloon.join();
    CHECK(discarded);
    REQUIRE(m.event == UFFD_EVENT_REMOVE);
    const uint64_t base = reinterpret_cast<uint64_t>(h.mem.regions()[0].host_base());
    CHECK(m.arg.remove.start == base + 4 * kPage);
    CHECK(m.arg.remove.end == base + 6 * kPage);
    // The next fault there is the handler's to answer with a zero page.
    std::atomic<uint8_t> seen{0xff};
    std::thread reader([&] { seen = h.mem.read_obj<uint8_t>(GuestAddress(5 * kPage)); });
    const uint64_t fault = next_fault(h.uffd.get());
    CHECK((fault & ~(kPage - 1)) == base + 5 * kPage);
    uffdio_zeropage z{};
    z.range = {base + 5 * kPage, kPage};
    REQUIRE(::ioctl(h.uffd.get(), UFFDIO_ZEROPAGE, &z) == 0);
    reader.join();
    CHECK(seen == 0);
}

}  // namespace unit_uffd_test
