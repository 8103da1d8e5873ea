// Tests for the block backends (backend, image_file, sync_engine, uring_engine): both engines on temporary images.
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
#include <memory>
#include <string>
#include <vector>

#include "tests/unit/virtio/temp_image.h"
#include "virtio/block/backend.h"
#include "vmm/sys/error.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_backend_test {

using namespace embervm::virtio::block;

namespace {

using Image = embervm::test::TempImage;

bool readable(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN) != 0;
}

IoRequest read_req(uint64_t offset, std::vector<iovec> iov, uint64_t tag = 0) {
    IoRequest r;
    r.op = IoRequest::Op::Read;
    r.offset = offset;
    for (const iovec& v : iov) r.length += v.iov_len;
    r.iov = std::move(iov);
    r.user_data = tag;
    return r;
}
IoRequest write_req(uint64_t offset, std::vector<iovec> iov, uint64_t tag = 0) {
    IoRequest r = read_req(offset, std::move(iov), tag);
    r.op = IoRequest::Op::Write;
    return r;
}
IoRequest range_req(IoRequest::Op op, uint64_t offset, uint64_t length, bool unmap = false, uint64_t tag = 0) {
    IoRequest r;
    r.op = op;
    r.offset = offset;
    r.length = length;
    r.unmap = unmap;
    r.user_data = tag;
    return r;
}

// Waits for completions (poll on the completion fd, like the event loop) until `want` more
// have been reaped; returns them.
std::vector<IoCompletion> wait_for(BlockBackend& b, size_t want) {
    std::vector<IoCompletion> out;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (out.size() < want) {
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        readable(b.completion_fd(), 200);
        for (const IoCompletion& c : b.reap_completions()) out.push_back(c);
    }
    return out;
}

// Submits all (retrying when full), returns user_data -> result; each user_data exactly once.
std::map<uint64_t, int64_t> run_all(BlockBackend& b, const std::vector<IoRequest>& reqs) {
    std::map<uint64_t, int64_t> results;
    size_t next = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (results.size() < reqs.size()) {
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        while (next < reqs.size() && b.submit(reqs[next])) next++;
        b.flush_submissions();
        readable(b.completion_fd(), 200);
        for (const IoCompletion& c : b.reap_completions()) {
            INFO("user_data " << c.user_data);
            CHECK(results.count(c.user_data) == 0);
            results[c.user_data] = c.result;
        }
    }
    CHECK(b.in_flight() == 0);
    return results;
}

int64_t run_one(BlockBackend& b, IoRequest r) {
    const uint64_t tag = r.user_data;
    const auto res = run_all(b, {std::move(r)});
    REQUIRE(res.size() == 1);
    REQUIRE(res.count(tag) == 1);
    return res.at(tag);
}

// Splits `buf` into pieces of pseudo-random odd sizes (1..max_piece) and returns the iovecs.
std::vector<iovec> split(std::vector<uint8_t>& buf, uint32_t seed, size_t max_piece) {
    std::vector<iovec> iov;
    size_t off = 0;
    uint32_t x = seed;
    while (off < buf.size()) {
        x = x * 1103515245u + 12345u;
        size_t n = ((x >> 8) % max_piece) | 1;  // odd
        n = std::min(n, buf.size() - off);
        iov.push_back({buf.data() + off, n});
        off += n;
    }
    return iov;
}

}  // namespace

TEST_CASE("block backend: open reports size, engine and mode", "[virtio][block][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    const bool ro = GENERATE(false, true);
    INFO(to_string(engine) << (ro ? " read-only" : " read-write"));
    Image img(1000 * 512 + 77);  // not a multiple of 512: the exact size is reported
    auto b = open_block_backend(img.path(), ro, engine);
    CHECK(b->size_bytes() == 1000 * 512 + 77);
    CHECK(b->engine() == engine);
    CHECK(b->read_only() == ro);
    CHECK(b->in_flight() == 0);
    CHECK(b->completion_fd() >= 0);
    CHECK(b->reap_completions().empty());
}

TEST_CASE("block backend: round trip with many iovecs at odd sizes", "[virtio][block][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO(to_string(engine));
    Image img(4 << 20);
    auto b = open_block_backend(img.path(), false, engine);

    SECTION("a few hundred pieces at an odd offset") {
        std::vector<uint8_t> data(100003);
        for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(i * 7 + 3);
        auto wiov = split(data, 1, 997);
        REQUIRE(wiov.size() > 100);
        CHECK(run_one(*b, write_req(12345, wiov, 1)) == static_cast<int64_t>(data.size()));
        CHECK(img.read(12345, data.size()) == data);
        CHECK(img.read(12345 - 100, 100) == img.original(12345 - 100, 100));
        CHECK(img.read(12345 + data.size(), 100) == img.original(12345 + data.size(), 100));

        std::vector<uint8_t> back(data.size(), 0);
        auto riov = split(back, 99, 513);  // a different split
        CHECK(run_one(*b, read_req(12345, riov, 2)) == static_cast<int64_t>(data.size()));
        CHECK(back == data);
    }
    SECTION("more iovecs than IOV_MAX (1024), with empty ones in between") {
        std::vector<uint8_t> data(2500 * 3);
        for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(i ^ 0xa5);
        std::vector<iovec> iov;
        for (size_t i = 0; i < 2500; i++) {
            iov.push_back({data.data() + 3 * i, 3});
            if (i % 100 == 0) iov.push_back({data.data(), 0});
        }
        CHECK(run_one(*b, write_req(777, iov, 3)) == static_cast<int64_t>(data.size()));
        CHECK(img.read(777, data.size()) == data);
        std::vector<uint8_t> back(data.size(), 0);
        std::vector<iovec> riov;
        for (size_t i = 0; i < 2500; i++) riov.push_back({back.data() + 3 * i, 3});
        CHECK(run_one(*b, read_req(777, riov, 4)) == static_cast<int64_t>(data.size()));
        CHECK(back == data);
    }
    SECTION("a read with no buffers transfers nothing") {
        CHECK(run_one(*b, read_req(0, {}, 5)) == 0);
    }
}

TEST_CASE("block backend: reads past the end fail instead of returning short", "[virtio][block][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO(to_string(engine));
    const size_t size = (256 << 10) + 100;
    Image img(size);
    auto b = open_block_backend(img.path(), false, engine);
    std::vector<uint8_t> buf(8192, 0xcc);

    // Up to the last byte: fine.
    CHECK(run_one(*b, read_req(size - 1000, {{buf.data(), 1000}}, 1)) == 1000);
    CHECK(std::vector<uint8_t>(buf.begin(), buf.begin() + 1000) == img.original(size - 1000, 1000));
    // Crossing the end (in one iovec, or with the end between iovecs), at the end, far beyond.
    CHECK(run_one(*b, read_req(size - 1000, {{buf.data(), 1001}}, 2)) == -EIO);
    CHECK(run_one(*b, read_req(size - 512, {{buf.data(), 512}, {buf.data() + 512, 512}}, 3)) == -EIO);
    CHECK(run_one(*b, read_req(size, {{buf.data(), 512}}, 4)) == -EIO);
    CHECK(run_one(*b, read_req(uint64_t{1} << 40, {{buf.data(), 4096}}, 5)) == -EIO);
    CHECK(img.file_size() == size);
}

TEST_CASE("block backend: flush", "[virtio][block][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO(to_string(engine));
    Image img(64 << 10);
    auto b = open_block_backend(img.path(), false, engine);
    std::vector<uint8_t> data(4096, 0x3c);
    // A write and a flush in one batch, then a flush alone.
    REQUIRE(b->submit(write_req(4096, {{data.data(), data.size()}}, 10)));
    REQUIRE(b->submit(range_req(IoRequest::Op::Flush, 0, 0, false, 11)));
    b->flush_submissions();
    std::map<uint64_t, int64_t> res;
    for (const IoCompletion& c : wait_for(*b, 2)) res[c.user_data] = c.result;
    CHECK(res.at(10) == 4096);
    CHECK(res.at(11) == 0);
    CHECK(run_one(*b, range_req(IoRequest::Op::Flush, 0, 0, false, 12)) == 0);
    CHECK(img.read(4096, 4096) == data);
}

TEST_CASE("block backend: discard and write-zeroes read back as zeros", "[virtio][block][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO(to_string(engine));
    const size_t size = 8 << 20;
    Image img(size);
    auto b = open_block_backend(img.path(), false, engine);

    struct Range {
        IoRequest::Op op;
        uint64_t offset, length;
        bool unmap;
    };
    const Range r = GENERATE(Range{IoRequest::Op::WriteZeroes, 8192, 4096, false},
                             Range{IoRequest::Op::WriteZeroes, 65536, 8192, true},
                             Range{IoRequest::Op::Discard, 131072, 65536, false},
                             Range{IoRequest::Op::Discard, 131072, 4096, false},  // one block
                             Range{IoRequest::Op::WriteZeroes, 1000, 3000, false},  // not block-aligned
                             Range{IoRequest::Op::WriteZeroes, 5000, 7001, true},
                             Range{IoRequest::Op::Discard, 200 * 512, 9 * 512, false},  // sector-aligned only
                             Range{IoRequest::Op::WriteZeroes, 512, (3 << 20) + 512, false},  // several MiB
                             Range{IoRequest::Op::WriteZeroes, size - 4096, 4096, false},      // up to the end
                             Range{IoRequest::Op::Discard, size - 1536, 1536, false});
    INFO("op " << static_cast<int>(r.op) << " offset " << r.offset << " length " << r.length << " unmap " << r.unmap);
    CHECK(run_one(*b, range_req(r.op, r.offset, r.length, r.unmap, 77)) == 0);
    CHECK(img.read(r.offset, r.length) == std::vector<uint8_t>(r.length, 0));
    // The neighbours keep their data and the file its size.
    if (r.offset >= 512) CHECK(img.read(r.offset - 512, 512) == img.original(r.offset - 512, 512));
    if (r.offset + r.length + 512 <= size) {
        CHECK(img.read(r.offset + r.length, 512) == img.original(r.offset + r.length, 512));
    }
    CHECK(img.file_size() == size);
    CHECK(b->size_bytes() == size);
    // Reads through the backend see zeros too.
    std::vector<uint8_t> back(512, 0xff);
    CHECK(run_one(*b, read_req(r.offset, {{back.data(), back.size()}}, 78)) == 512);
    CHECK(back == std::vector<uint8_t>(512, 0));
}

TEST_CASE("block backend: a read-only image refuses every write with EROFS", "[virtio][block][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO(to_string(engine));
    Image img(64 << 10);
    auto b = open_block_backend(img.path(), true, engine);
    REQUIRE(b->read_only());
    std::vector<uint8_t> buf(1024, 0x77);
    CHECK(run_one(*b, write_req(0, {{buf.data(), 512}, {buf.data() + 512, 512}}, 1)) == -EROFS);
    CHECK(run_one(*b, range_req(IoRequest::Op::Discard, 0, 4096, false, 2)) == -EROFS);
    CHECK(run_one(*b, range_req(IoRequest::Op::WriteZeroes, 0, 4096, false, 3)) == -EROFS);
    CHECK(run_one(*b, range_req(IoRequest::Op::WriteZeroes, 0, 4096, true, 4)) == -EROFS);
    CHECK(run_one(*b, range_req(IoRequest::Op::Flush, 0, 0, false, 5)) == 0);
    CHECK(run_one(*b, read_req(1024, {{buf.data(), 1024}}, 6)) == 1024);
    CHECK(buf == img.original(1024, 1024));
    CHECK(img.read(0, 64 << 10) == img.original(0, 64 << 10));
}

TEST_CASE("block backend: open errors throw naming the path", "[virtio][block][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    const bool ro = GENERATE(false, true);
    INFO(to_string(engine) << (ro ? " read-only" : " read-write"));
    SECTION("a missing file") {
        const std::string missing = "/tmp/embervm-block-backend-test-missing-dir/no-such-image.raw";
        CHECK_THROWS_AS(open_block_backend(missing, ro, engine), embervm::Error);
        CHECK_THROWS_WITH(open_block_backend(missing, ro, engine), Catch::Contains(missing));
    }
    SECTION("a directory") {
        char tmpl[] = "/tmp/embervm-block-backend-test-dir-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        const std::string dir = tmpl;
        CHECK_THROWS_AS(open_block_backend(dir, ro, engine), embervm::Error);
        CHECK_THROWS_WITH(open_block_backend(dir, ro, engine), Catch::Contains(dir));
        ::rmdir(dir.c_str());
    }
}

TEST_CASE("block backend: images are locked against a second writer", "[virtio][block][backend]") {
    const IoEngine first = GENERATE(IoEngine::Sync, IoEngine::Async);
    const IoEngine second = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO(to_string(first) << " then " << to_string(second));
    Image img(64 << 10);
    {
        auto writer = open_block_backend(img.path(), false, first);
        CHECK_THROWS_WITH(open_block_backend(img.path(), false, second),
                          Catch::Contains("locked") && Catch::Contains(img.path()));
        CHECK_THROWS_WITH(open_block_backend(img.path(), true, second), Catch::Contains("locked"));
        // The holder keeps working.
        std::vector<uint8_t> buf(512, 1);
        CHECK(run_one(*writer, write_req(0, {{buf.data(), 512}}, 1)) == 512);
    }
    // Closed: the lock is gone. Readers share it, a writer is refused while they hold it.
    {
        auto w = open_block_backend(img.path(), false, second);
        CHECK(w != nullptr);
    }
    auto r1 = open_block_backend(img.path(), true, first);
    auto r2 = open_block_backend(img.path(), true, second);
    CHECK_THROWS_WITH(open_block_backend(img.path(), false, second), Catch::Contains("locked"));
    r1.reset();
    CHECK_THROWS_WITH(open_block_backend(img.path(), false, first), Catch::Contains("locked"));
    r2.reset();
    CHECK_NOTHROW(open_block_backend(img.path(), false, first));
}

TEST_CASE("block backend: the completion eventfd", "[virtio][block][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO(to_string(engine));
    Image img(64 << 10);
    auto b = open_block_backend(img.path(), false, engine);
    const int fd = b->completion_fd();
    CHECK_FALSE(readable(fd, 0));

    // Starts the batch and takes its one completion, once the eventfd announced it.
    const auto start_and_reap_one = [&](uint64_t tag, int64_t result) {
        b->flush_submissions();
        REQUIRE(readable(fd, 5000));
        const auto done = b->reap_completions();
        REQUIRE(done.size() == 1);
        CHECK(done[0].user_data == tag);
        CHECK(done[0].result == result);
    };

    std::vector<uint8_t> buf(4096);
    REQUIRE(b->submit(read_req(8192, {{buf.data(), buf.size()}}, 0xfeedface)));
    CHECK(b->in_flight() == 1);
    // Nothing is signalled before the batch is started.
    CHECK_FALSE(readable(fd, 0));
    start_and_reap_one(0xfeedface, 4096);
    CHECK(buf == img.original(8192, 4096));
    // Reaping resets it.
    CHECK_FALSE(readable(fd, 0));
    CHECK(b->in_flight() == 0);
    CHECK(b->reap_completions().empty());
    // A flush with nothing submitted signals nothing.
    b->flush_submissions();
    CHECK_FALSE(readable(fd, 0));

    // Requests that complete without I/O (range ops, refused writes) signal it too.
    REQUIRE(b->submit(range_req(IoRequest::Op::WriteZeroes, 0, 512, false, 5)));
    start_and_reap_one(5, 0);
    CHECK_FALSE(readable(fd, 0));
}

TEST_CASE("block backend: queue depth", "[virtio][block][backend]") {
    Image img(1 << 20);
    std::vector<uint8_t> buf(512 * 300);
    SECTION("Async: submit() reports full at the depth and takes more after reaping") {
        const unsigned depth = GENERATE(1u, 8u, 128u);
        INFO("depth " << depth);
        auto b = depth == 128 ? open_block_backend(img.path(), false, IoEngine::Async)  // the default
                              : open_block_backend(img.path(), false, IoEngine::Async, depth);
        for (unsigned i = 0; i < depth; i++) {
            REQUIRE(b->submit(read_req(512ULL * i, {{buf.data() + 512ULL * i, 512}}, i)));
        }
        CHECK(b->in_flight() == depth);
        CHECK_FALSE(b->submit(read_req(0, {{buf.data(), 512}}, 999)));
        // Full means full, also for requests that would complete without I/O.
        CHECK_FALSE(b->submit(range_req(IoRequest::Op::Flush, 0, 0, false, 998)));
        CHECK(b->in_flight() == depth);
        b->flush_submissions();
        const auto done = wait_for(*b, depth);
        CHECK(done.size() == depth);
        for (const IoCompletion& c : done) {
            CHECK(c.user_data < depth);
            CHECK(c.result == 512);
        }
        CHECK(b->in_flight() == 0);
        REQUIRE(b->submit(read_req(0, {{buf.data(), 512}}, 999)));  // room again
        b->flush_submissions();
        const auto last = wait_for(*b, 1);
        CHECK(last[0].user_data == 999);
        CHECK(std::vector<uint8_t>(buf.begin(), buf.begin() + 512 * depth) == img.original(0, 512 * depth));
    }
    SECTION("Sync: never full (completes inside submit), whatever the depth") {
        auto b = open_block_backend(img.path(), false, IoEngine::Sync, 4);
        for (uint64_t i = 0; i < 300; i++) {
            REQUIRE(b->submit(read_req(512 * i, {{buf.data() + 512 * i, 512}}, i)));
        }
        CHECK(b->in_flight() == 300);  // done but not reaped
        // The data is already there: the sync engine did the I/O inside submit().
        CHECK(buf == img.original(0, 512 * 300));
        b->flush_submissions();
        REQUIRE(readable(b->completion_fd(), 0));
        const auto done = b->reap_completions();
        REQUIRE(done.size() == 300);
        for (uint64_t i = 0; i < 300; i++) {
            CHECK(done[i].user_data == i);  // in submission order
            CHECK(done[i].result == 512);
        }
        CHECK(b->in_flight() == 0);
    }
}

TEST_CASE("block backend: ten times the queue depth in requests, each with its own result",
          "[virtio][block][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO(to_string(engine));
    Image img(1 << 20);
    auto b = open_block_backend(img.path(), false, engine, 32);
    constexpr size_t kRequests = 300;
    // run_all() submits until the backend reports full, then reaps and submits the rest.
    std::vector<std::vector<uint8_t>> bufs(kRequests, std::vector<uint8_t>(512));
    std::vector<IoRequest> writes;
    for (size_t i = 0; i < kRequests; i++) {
        std::fill(bufs[i].begin(), bufs[i].end(), static_cast<uint8_t>(i));
        writes.push_back(write_req(i * 1024, {{bufs[i].data(), 512}}, 1000 + i));
    }
    const auto wres = run_all(*b, writes);
    REQUIRE(wres.size() == kRequests);
    for (const auto& [tag, res] : wres) CHECK(res == 512);

    std::vector<std::vector<uint8_t>> back(kRequests, std::vector<uint8_t>(512, 0xff));
    std::vector<IoRequest> reads;
    for (size_t i = 0; i < kRequests; i++) reads.push_back(read_req(i * 1024, {{back[i].data(), 512}}, i));
    const auto rres = run_all(*b, reads);
    for (size_t i = 0; i < kRequests; i++) {
        CHECK(rres.at(i) == 512);
        CHECK(back[i] == bufs[i]);
    }
}

TEST_CASE("block backend: hundreds of concurrent requests complete with their own results and user_data",
          "[virtio][block][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO(to_string(engine));
    constexpr size_t kN = 200;
    Image img(kN * 4096);
    auto b = open_block_backend(img.path(), false, engine, 256);
    const auto tag = [](size_t i) { return (i + 1) * 0x9e3779b97f4a7c15ULL; };  // spread over 64 bits

    // All writes at once: one batch, one flush_submissions().
    std::vector<std::vector<uint8_t>> data(kN);
    for (size_t i = 0; i < kN; i++) {
        data[i].resize(512 + 512 * (i % 5));
        for (size_t k = 0; k < data[i].size(); k++) data[i][k] = static_cast<uint8_t>(i + k * 3);
        REQUIRE(b->submit(write_req(4096 * i, {{data[i].data(), data[i].size() / 2}, {data[i].data() + data[i].size() / 2, data[i].size() / 2}}, tag(i))));
    }
    CHECK(b->in_flight() == kN);
    b->flush_submissions();
    std::map<uint64_t, int64_t> wres;
    for (const IoCompletion& c : wait_for(*b, kN)) {
        CHECK(wres.count(c.user_data) == 0);
        wres[c.user_data] = c.result;
    }
    REQUIRE(wres.size() == kN);
    for (size_t i = 0; i < kN; i++) {
        INFO("write " << i);
        REQUIRE(wres.count(tag(i)) == 1);
        CHECK(wres.at(tag(i)) == static_cast<int64_t>(data[i].size()));
    }

    // Reads back, mixed with a few that fail and some flushes, all in flight together.
    std::vector<std::vector<uint8_t>> back(kN);
    std::vector<uint8_t> junk(4096);
    for (size_t i = 0; i < kN; i++) {
        back[i].assign(data[i].size(), 0xee);
        REQUIRE(b->submit(read_req(4096 * i, {{back[i].data(), back[i].size()}}, tag(i))));
        if (i % 50 == 0) {
            REQUIRE(b->submit(read_req(kN * 4096, {{junk.data(), 512}}, i)));  // past the end
            REQUIRE(b->submit(range_req(IoRequest::Op::Flush, 0, 0, false, i + 1000)));
        }
    }
    b->flush_submissions();
    std::map<uint64_t, int64_t> rres;
    for (const IoCompletion& c : wait_for(*b, kN + 2 * (kN / 50))) rres[c.user_data] = c.result;
    for (size_t i = 0; i < kN; i++) {
        INFO("read " << i);
        CHECK(rres.at(tag(i)) == static_cast<int64_t>(data[i].size()));
        CHECK(back[i] == data[i]);
        if (i % 50 == 0) {
            CHECK(rres.at(i) == -EIO);
            CHECK(rres.at(i + 1000) == 0);
        }
    }
    CHECK(b->in_flight() == 0);
    // io_uring may signal the eventfd for completions that were already reaped; a wakeup then
    // finds nothing, never a completion twice.
    if (readable(b->completion_fd(), 0)) CHECK(b->reap_completions().empty());
}

TEST_CASE("block backend: user_data is echoed for every kind of completion", "[virtio][block][backend]") {
    const IoEngine engine = GENERATE(IoEngine::Sync, IoEngine::Async);
    INFO(to_string(engine));
    Image img(64 << 10);
    auto rw = open_block_backend(img.path(), false, engine);
    std::vector<uint8_t> buf(512);
    std::vector<IoRequest> reqs;
    reqs.push_back(read_req(0, {{buf.data(), 512}}, 0));
    reqs.push_back(write_req(512, {{buf.data(), 512}}, ~uint64_t{0}));
    reqs.push_back(range_req(IoRequest::Op::Flush, 0, 0, false, uint64_t{1} << 63));
    reqs.push_back(range_req(IoRequest::Op::Discard, 4096, 4096, false, 0x0123456789abcdefULL));
    reqs.push_back(range_req(IoRequest::Op::WriteZeroes, 8192, 512, true, 42));
    reqs.push_back(read_req(1 << 20, {{buf.data(), 512}}, 43));  // fails
    const auto res = run_all(*rw, reqs);
    CHECK(res.size() == reqs.size());
    CHECK(res.at(0) == 512);
    CHECK(res.at(~uint64_t{0}) == 512);
    CHECK(res.at(uint64_t{1} << 63) == 0);
    CHECK(res.at(0x0123456789abcdefULL) == 0);
    CHECK(res.at(42) == 0);
    CHECK(res.at(43) == -EIO);
    rw.reset();

    auto ro = open_block_backend(img.path(), true, engine);
    const auto rores = run_all(*ro, {write_req(0, {{buf.data(), 512}}, 7777), range_req(IoRequest::Op::Discard, 0, 512, false, 8888)});
    CHECK(rores.at(7777) == -EROFS);
    CHECK(rores.at(8888) == -EROFS);
}

TEST_CASE("block backend: destroying the io_uring backend waits for requests in the kernel",
          "[virtio][block][backend]") {
    Image img(1 << 20);
    constexpr size_t kN = 64;
    std::vector<std::vector<uint8_t>> bufs(kN, std::vector<uint8_t>(4096, 0xee));
    {
        auto b = open_block_backend(img.path(), false, IoEngine::Async, kN);
        for (size_t i = 0; i < kN; i++) REQUIRE(b->submit(read_req(4096 * i, {{bufs[i].data(), 4096}}, i)));
        b->flush_submissions();
        // Destroyed without reaping anything.
    }
    // Every read had finished by then: the buffers hold the image.
    for (size_t i = 0; i < kN; i++) {
        INFO("read " << i);
        CHECK(bufs[i] == img.original(4096 * i, 4096));
    }
}

}  // namespace unit_backend_test
