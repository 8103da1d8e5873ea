// Tests for vmm/metrics: the vCPU and device sections (keys and values), the event-loop
// latency probe on a real io_context, and MetricsWriter's lines (periodic, on request, from
// several threads, into a file or a full named pipe).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <nlohmann/json.hpp>

#include "virtio/balloon/balloon_device.h"
#include "virtio/block/block_device.h"
#include "virtio/net/net_device.h"
#include "tests/unit/temp_dir.h"
#include "vmm/sys/error.h"
#include "vmm/metrics.h"
#include "vmm/kvm/vcpu.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_metrics_test {

namespace vmm = embervm::vmm;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

using embervm::test::TempDir;

std::vector<json> read_json_lines(const std::string& path) {
    std::ifstream in(path);
    std::vector<json> out;
    for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
    return out;
}

std::vector<std::string> keys(const json& j) {
    std::vector<std::string> out;
    for (const auto& [k, v] : j.items()) out.push_back(k);
    return out;
}

}  // namespace

TEST_CASE("metrics: vcpu section sums the vCPUs and lists each", "[metrics]") {
    vmm::VcpuStats a, b;
    a.io_exits = 10;
    a.mmio_exits = 5;
    a.hlt_exits = 1;
    a.interrupted = 3;
    a.emulated_instructions = 2;
    b.io_exits = 1;
    b.system_event_exits = 1;
    b.internal_error_exits = 4;
    b.intr_exits = 6;
    b.unclaimed_accesses = 7;
    const json j = vmm::vcpu_metrics_json({&a, &b});

    CHECK(j["io_exits"] == 11);
    CHECK(j["mmio_exits"] == 5);
    CHECK(j["hlt_exits"] == 1);
    CHECK(j["system_event_exits"] == 1);
    CHECK(j["internal_error_exits"] == 4);
    CHECK(j["intr_exits"] == 6);
    CHECK(j["shutdown_exits"] == 0);
    CHECK(j["fail_entry_exits"] == 0);
    CHECK(j["other_exits"] == 0);
    CHECK(j["exits"] == 11 + 5 + 1 + 1 + 4 + 6);  // every *_exits counter, not the kicks
    CHECK(j["interrupted"] == 3);
    CHECK(j["emulated_instructions"] == 2);
    CHECK(j["unclaimed_accesses"] == 7);
    REQUIRE(j["per_vcpu"].size() == 2);
    CHECK(j["per_vcpu"][0]["id"] == 0);
    CHECK(j["per_vcpu"][0]["exits"] == 16);
    CHECK(j["per_vcpu"][1]["id"] == 1);
    CHECK(j["per_vcpu"][1]["exits"] == 12);
    CHECK(j["per_vcpu"][1]["unclaimed_accesses"] == 7);

    const json none = vmm::vcpu_metrics_json({});
    CHECK(none["exits"] == 0);
    CHECK(none["per_vcpu"] == json::array());
    CHECK(keys(none).size() == keys(j).size());
}

TEST_CASE("metrics: device sections", "[metrics]") {
    embervm::virtio::block::BlockCounters b;
    b.read_requests = 1;
    b.write_requests = 2;
    b.flush_requests = 3;
    b.discard_requests = 4;
    b.write_zeroes_requests = 5;
    b.get_id_requests = 6;
    b.read_bytes = 512;
    b.write_bytes = 1024;
    b.io_errors = 7;
    b.unsupported_requests = 8;
    b.rate_limiter_throttled_events = 9;
    b.rate_limiter_throttled = true;
    CHECK(embervm::virtio::block::counters_json(b) == json{{"read_requests", 1},
                                                 {"write_requests", 2},
                                                 {"flush_requests", 3},
                                                 {"discard_requests", 4},
                                                 {"write_zeroes_requests", 5},
                                                 {"get_id_requests", 6},
                                                 {"read_bytes", 512},
                                                 {"write_bytes", 1024},
                                                 {"io_errors", 7},
                                                 {"unsupported_requests", 8},
                                                 {"rate_limiter_throttled_events", 9},
                                                 {"rate_limiter_throttled", 1}});

    embervm::virtio::net::NetCounters n;
    n.rx_frames = 1;
    n.rx_bytes = 60;
    n.tx_frames = 2;
    n.tx_bytes = 120;
    n.tx_dropped = 3;
    const json nj = embervm::virtio::net::counters_json(n);
    CHECK(nj["rx_frames"] == 1);
    CHECK(nj["rx_bytes"] == 60);
    CHECK(nj["tx_frames"] == 2);
    CHECK(nj["tx_bytes"] == 120);
    CHECK(nj["tx_dropped"] == 3);
    CHECK(keys(nj).size() == 13);  // 9 counters and the rate limiters' 4

    embervm::virtio::balloon::BalloonCounters bl;
    bl.inflated_pages = 16;
    bl.discarded_bytes = 65536;
    const json bj = embervm::virtio::balloon::counters_json(bl);
    CHECK(bj["inflated_pages"] == 16);
    CHECK(bj["discarded_bytes"] == 65536);
    CHECK(keys(bj).size() == 6);
}

TEST_CASE("metrics: event-loop probe window", "[metrics]") {
    boost::asio::io_context io;
    vmm::EventLoopProbe probe(io, 10ms);
    json w = probe.window_json(false);
    CHECK(w == json{{"probe_interval_ms", 10}, {"samples", 0}, {"lateness_max_us", 0}, {"lateness_mean_us", 0}});

    probe.record(100us);
    probe.record(300us);
    probe.record(-5us);  // a timer cannot fire early: counted as on time
    w = probe.window_json(true);
    CHECK(w["samples"] == 3);
    CHECK(w["lateness_max_us"] == 300);
    CHECK(w["lateness_mean_us"] == 133);
    CHECK(probe.window_json(false)["samples"] == 0);  // the reset started a new window
}

TEST_CASE("metrics: event-loop probe sees a blocked loop", "[metrics]") {
    boost::asio::io_context io;
    vmm::EventLoopProbe probe(io, 10ms);
    probe.start();
    // The first handler holds the loop for 60 ms: the probe's first firing, due 10 ms after
    // start(), runs at least 50 ms late however slow the host is.
    boost::asio::post(io, [] { std::this_thread::sleep_for(60ms); });
    const auto samples = [&] { return probe.window_json(false)["samples"].get<uint64_t>(); };
    while (samples() < 3) REQUIRE(io.run_one() == 1);
    probe.stop();
    io.run();  // only the cancelled wait is left: stop() drops even a firing already queued
    const json w = probe.window_json(true);
    CHECK(w["samples"] == 3);
    CHECK(w["lateness_max_us"].get<uint64_t>() >= 50'000);
    CHECK(w["lateness_mean_us"].get<uint64_t>() < w["lateness_max_us"].get<uint64_t>());
}

TEST_CASE("metrics: writer appends one JSON line per interval and on request", "[metrics]") {
    TempDir dir;
    const std::string path = dir.file("metrics.json");
    {
        std::ofstream(path) << R"({"earlier": "line"})" << '\n';  // appended to, not truncated
    }
    boost::asio::io_context io;
    const std::thread::id loop_thread = std::this_thread::get_id();
    std::atomic<int> produced{0};
    std::atomic<int> periodic{0};  // lines produced on the loop thread, i.e. by the timer
    vmm::MetricsWriter writer(io, path, 5ms, [&] {
        if (std::this_thread::get_id() == loop_thread) ++periodic;
        const int n = ++produced;
        return json{{"utc_timestamp_ms", vmm::utc_timestamp_ms()}, {"n", n}}.dump();
    });
    writer.start();
    // Lines requested from another thread while the timer writes its own.
    std::thread other([&] {
        for (int i = 0; i < 20; i++) CHECK(writer.write_line());
    });
    // The loop runs until the timer has written three lines; after stop() no fourth follows.
    while (periodic < 3) REQUIRE(io.run_one() == 1);
    writer.stop();
    other.join();
    io.run();  // only the cancelled wait is left: stop() drops even a firing already queued
    CHECK(periodic.load() == 3);

    const auto lines = read_json_lines(path);
    CHECK(writer.lines_written() == 3 + 20);
    REQUIRE(lines.size() == 1 + 3 + 20);
    CHECK(lines[0] == json{{"earlier", "line"}});
    CHECK(writer.lines_dropped() == 0);
    // Whole lines, in the order they were produced.
    for (size_t i = 1; i < lines.size(); i++) CHECK(lines[i]["n"] == static_cast<int>(i));
    const uint64_t now = vmm::utc_timestamp_ms();
    CHECK(lines.back()["utc_timestamp_ms"].get<uint64_t>() <= now);
    CHECK(lines.back()["utc_timestamp_ms"].get<uint64_t>() + 60'000 > now);
}

TEST_CASE("metrics: writer without an interval writes only on request", "[metrics]") {
    TempDir dir;
    const std::string path = dir.file("m.json");
    boost::asio::io_context io;
    vmm::MetricsWriter writer(io, path, 0ms, [] { return std::string(R"({"x":1})"); });
    writer.start();
    CHECK(io.run() == 0);  // no timer armed
    CHECK(writer.lines_written() == 0);
    CHECK(writer.write_line());
    CHECK(read_json_lines(path).size() == 1);
    struct stat st{};
    REQUIRE(stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0077) == 0);  // created 0600 (less under a strict umask)
}

TEST_CASE("metrics: writer errors", "[metrics]") {
    TempDir dir;
    boost::asio::io_context io;
    CHECK_THROWS_WITH(vmm::MetricsWriter(io, dir.file("no/m.json"), 1s, [] { return std::string("{}"); }),
                      dir.file("no/m.json") + ": No such file or directory");

    // A named pipe whose reader stops reading: lines are dropped, the writer never blocks.
    const std::string fifo = dir.file("m.fifo");
    REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
    const int reader = open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(reader >= 0);
    const std::string big(8000, '7');
    vmm::MetricsWriter writer(io, fifo, 0ms, [&] { return json{{"pad", big}}.dump(); });
    int ok = 0;
    for (int i = 0; i < 20; i++) ok += writer.write_line() ? 1 : 0;
    CHECK(ok >= 7);  // 64 KiB of pipe holds at least 7 such lines
    CHECK(ok < 20);
    CHECK(writer.lines_dropped() == static_cast<uint64_t>(20 - ok));
    close(reader);
}

}  // namespace unit_metrics_test
