// Tests for virtio/block/backend: both engines (Sync and io_uring) on temporary raw images:
// scattered reads and writes, errors, flush, discard / write-zeroes, read-only images, image
// locks, the completion eventfd and many requests in flight.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/virtio/temp_image.h"
#include "virtio/block/backend.h"

using namespace embervm::virtio::block;

namespace {

constexpr size_t kImageBytes = 1 << 20;

class TempImage : public embervm::test::TempImage {
public:
    explicit TempImage(size_t size = kImageBytes) : embervm::test::TempImage(size) {}
};

bool readable(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 1;
}

// Submits, starts and waits for every request; returns user_data -> result.
std::map<uint64_t, int64_t> run_all(BlockBackend& b, std::vector<IoRequest> reqs) {
    std::map<uint64_t, int64_t> results;
    size_t next = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (results.size() < reqs.size()) {
        while (next < reqs.size() && b.submit(reqs[next])) next++;
        b.flush_submissions();
        if (b.in_flight() > 0) readable(b.completion_fd(), 1000);
        for (const auto& c : b.reap_completions()) {
            INFO("user_data " << c.user_data);
            CHECK(results.count(c.user_data) == 0);
            results[c.user_data] = c.result;
        }
        REQUIRE(std::chrono::steady_clock::now() < deadline);
    }
    return results;
}

int64_t run_one(BlockBackend& b, IoRequest r) {
    r.user_data = 42;
    const auto res = run_all(b, {std::move(r)});
    REQUIRE(res.count(42) == 1);
    return res.at(42);
}

IoRequest rw(IoRequest::Op op, uint64_t offset, std::vector<iovec> iov, uint64_t tag = 0) {
    IoRequest r;
    r.op = op;
    r.offset = offset;
    r.iov = std::move(iov);
    for (const auto& v : r.iov) r.length += v.iov_len;
    r.user_data = tag;
    return r;
}

IoRequest range(IoRequest::Op op, uint64_t offset, uint64_t length, bool unmap = false) {
    IoRequest r;
    r.op = op;
    r.offset = offset;
    r.length = length;
    r.unmap = unmap;
    return r;
}

}  // namespace

TEST_CASE("block backends: scattered writes and reads round trip", "[virtio][blk][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO((engine == IoEngine::Sync ? "Sync" : "Async"));
    TempImage img;
    auto b = open_block_backend(img.path(), false, engine);
    CHECK(b->engine() == engine);
    CHECK(b->size_bytes() == kImageBytes);
    CHECK_FALSE(b->read_only());

    // 3 sectors written from 7 odd-sized pieces.
    std::vector<uint8_t> data(1536);
    std::iota(data.begin(), data.end(), uint8_t{0x30});
    const size_t cuts[] = {0, 1, 100, 511, 512, 1000, 1535, 1536};
    std::vector<iovec> iov;
    for (size_t i = 0; i + 1 < std::size(cuts); i++) iov.push_back({data.data() + cuts[i], cuts[i + 1] - cuts[i]});
    CHECK(run_one(*b, rw(IoRequest::Op::Write, 4096, iov)) == 1536);
    CHECK(img.read(4096, 1536) == data);

    std::vector<uint8_t> back(1536, 0);
    std::vector<iovec> riov;
    for (size_t i = 0; i + 1 < std::size(cuts); i++) riov.push_back({back.data() + cuts[i], cuts[i + 1] - cuts[i]});
    CHECK(run_one(*b, rw(IoRequest::Op::Read, 4096, riov)) == 1536);
    CHECK(back == data);
    CHECK(b->in_flight() == 0);
}

TEST_CASE("block backends: more iovecs than IOV_MAX", "[virtio][blk][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    TempImage img;
    auto b = open_block_backend(img.path(), false, engine);
    std::vector<uint8_t> data(3000 * 8);
    std::iota(data.begin(), data.end(), uint8_t{1});
    std::vector<iovec> iov;
    for (size_t i = 0; i < 3000; i++) iov.push_back({data.data() + i * 8, 8});
    CHECK(run_one(*b, rw(IoRequest::Op::Write, 0, iov)) == static_cast<int64_t>(data.size()));
    CHECK(img.read(0, data.size()) == data);
}

TEST_CASE("block backends: a read or write past the end is an error, not a short transfer",
          "[virtio][blk][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    TempImage img;
    auto b = open_block_backend(img.path(), false, engine);
    std::vector<uint8_t> buf(1024, 0xcc);
    CHECK(run_one(*b, rw(IoRequest::Op::Read, kImageBytes - 512, {{buf.data(), 1024}})) < 0);
    CHECK(run_one(*b, rw(IoRequest::Op::Read, kImageBytes, {{buf.data(), 512}})) < 0);
}

TEST_CASE("block backends: flush, discard and write-zeroes", "[virtio][blk][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    TempImage img;
    auto b = open_block_backend(img.path(), false, engine);
    CHECK(run_one(*b, range(IoRequest::Op::Flush, 0, 0)) == 0);
    CHECK(run_one(*b, range(IoRequest::Op::WriteZeroes, 8192, 4096, false)) == 0);
    CHECK(img.read(8192, 4096) == std::vector<uint8_t>(4096, 0));
    CHECK(run_one(*b, range(IoRequest::Op::WriteZeroes, 65536, 8192, true)) == 0);
    CHECK(img.read(65536, 8192) == std::vector<uint8_t>(8192, 0));
    CHECK(run_one(*b, range(IoRequest::Op::Discard, 131072, 4096)) == 0);
    CHECK(img.read(131072, 4096) == std::vector<uint8_t>(4096, 0));
    // The neighbours are untouched.
    CHECK(img.read(8192 + 4096, 512) == std::vector<uint8_t>(img.original().begin() + 12288,
                                                             img.original().begin() + 12288 + 512));
    CHECK(img.read(8192 - 512, 512) == std::vector<uint8_t>(img.original().begin() + 7680,
                                                            img.original().begin() + 8192));
}

TEST_CASE("block backends: a read-only image refuses writes with EROFS", "[virtio][blk][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    TempImage img;
    auto b = open_block_backend(img.path(), true, engine);
    CHECK(b->read_only());
    std::vector<uint8_t> buf(512, 0x77);
    CHECK(run_one(*b, rw(IoRequest::Op::Write, 0, {{buf.data(), 512}})) == -EROFS);
    CHECK(run_one(*b, range(IoRequest::Op::Discard, 0, 512)) == -EROFS);
    CHECK(run_one(*b, range(IoRequest::Op::WriteZeroes, 0, 512)) == -EROFS);
    CHECK(run_one(*b, rw(IoRequest::Op::Read, 0, {{buf.data(), 512}})) == 512);
    CHECK(img.read(0, 512) == std::vector<uint8_t>(img.original().begin(), img.original().begin() + 512));
    CHECK(buf == img.read(0, 512));
}

TEST_CASE("block backends: open errors name the path; images are locked", "[virtio][blk][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    const std::string missing = "/tmp/embervm-backend-test-does-not-exist.img";
    try {
        open_block_backend(missing, false, engine);
        FAIL("opened a missing image");
    } catch (const std::exception& e) {
        CHECK(std::string(e.what()).find(missing) != std::string::npos);
    }
    CHECK_THROWS(open_block_backend("/tmp", true, engine));

    TempImage img;
    auto writer = open_block_backend(img.path(), false, engine);
    try {
        open_block_backend(img.path(), false, engine);
        FAIL("opened a locked image for writing twice");
    } catch (const std::exception& e) {
        CHECK(std::string(e.what()).find("locked") != std::string::npos);
    }
    // A read-only opener is refused too while a writer holds it.
    CHECK_THROWS(open_block_backend(img.path(), true, engine));
    writer.reset();
    // Readers share; a writer is refused while they hold it.
    auto r1 = open_block_backend(img.path(), true, engine);
    auto r2 = open_block_backend(img.path(), true, engine);
    CHECK_THROWS(open_block_backend(img.path(), false, engine));
}

TEST_CASE("block backends: the completion eventfd", "[virtio][blk][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    TempImage img;
    auto b = open_block_backend(img.path(), false, engine);
    CHECK_FALSE(readable(b->completion_fd(), 0));
    std::vector<uint8_t> buf(4096);
    REQUIRE(b->submit(rw(IoRequest::Op::Read, 0, {{buf.data(), buf.size()}}, 7)));
    b->flush_submissions();
    CHECK(readable(b->completion_fd(), 5000));
    const auto done = b->reap_completions();
    REQUIRE(done.size() == 1);
    CHECK(done[0].user_data == 7);
    CHECK(done[0].result == 4096);
    CHECK_FALSE(readable(b->completion_fd(), 0));  // reaping resets it
    CHECK(b->reap_completions().empty());
    CHECK(b->in_flight() == 0);
}

TEST_CASE("block backends: many requests in flight, each with its own result", "[virtio][blk][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    TempImage img;
    auto b = open_block_backend(img.path(), false, engine, 32);
    constexpr size_t kRequests = 300;  // about ten times the queue depth
    std::vector<std::vector<uint8_t>> bufs(kRequests, std::vector<uint8_t>(512));
    std::vector<IoRequest> writes;
    for (size_t i = 0; i < kRequests; i++) {
        std::fill(bufs[i].begin(), bufs[i].end(), static_cast<uint8_t>(i));
        writes.push_back(rw(IoRequest::Op::Write, i * 1024, {{bufs[i].data(), 512}}, 1000 + i));
    }
    const auto wres = run_all(*b, writes);
    REQUIRE(wres.size() == kRequests);
    for (const auto& [tag, res] : wres) CHECK(res == 512);

    std::vector<std::vector<uint8_t>> back(kRequests, std::vector<uint8_t>(512, 0xff));
    std::vector<IoRequest> reads;
    for (size_t i = 0; i < kRequests; i++) reads.push_back(rw(IoRequest::Op::Read, i * 1024, {{back[i].data(), 512}}, i));
    const auto rres = run_all(*b, reads);
    for (size_t i = 0; i < kRequests; i++) {
        CHECK(rres.at(i) == 512);
        CHECK(back[i] == bufs[i]);
    }
}

TEST_CASE("block backends: the io_uring engine reports full at its queue depth", "[virtio][blk][backend]") {
    TempImage img;
    auto b = open_block_backend(img.path(), false, IoEngine::Async, 4);
    std::vector<uint8_t> buf(512 * 5);
    for (uint64_t i = 0; i < 4; i++) CHECK(b->submit(rw(IoRequest::Op::Read, i * 512, {{buf.data() + i * 512, 512}}, i)));
    CHECK_FALSE(b->submit(rw(IoRequest::Op::Read, 0, {{buf.data() + 2048, 512}}, 9)));
    b->flush_submissions();
    size_t reaped = 0;
    for (int i = 0; i < 100 && reaped < 4; i++) {
        readable(b->completion_fd(), 100);
        reaped += b->reap_completions().size();
    }
    CHECK(reaped == 4);
    CHECK(b->submit(rw(IoRequest::Op::Read, 0, {{buf.data() + 2048, 512}}, 9)));  // room again
    b->flush_submissions();
    readable(b->completion_fd(), 5000);
    CHECK(b->reap_completions().size() == 1);
}
