// Tests for vmm/log: the file and named-pipe outputs (open flags, mode, append), the line
// shape (show_level, show_log_origin), levels including Off and Trace, and whole lines from
// concurrent threads.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/temp_dir.h"
#include "tests/unit/vmm/test_support.h"
#include "vmm/sys/error.h"
#include "vmm/sys/log.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_log_test {

namespace elog = embervm::log;

namespace {

using embervm::test::TempDir;

std::vector<std::string> read_lines(const std::string& path) {
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

using embervm::test::LoggerRestore;

}  // namespace

TEST_CASE("log: lines go to a file created with mode 0600 and appended to", "[log]") {
    LoggerRestore restore;
    TempDir dir;
    const std::string path = dir.file("vmm.log");
    const mode_t old_umask = umask(0);
    elog::set_output_path(path);
    umask(old_umask);
    struct stat st{};
    REQUIRE(stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    CHECK(elog::output_path() == path);

    elog::info("first line {}", 1);
    elog::warn("second line");
    elog::debug("not at level Info");
    elog::set_output_stderr();
    CHECK(elog::output_path().empty());
    elog::info("to stderr, not the file");

    auto lines = read_lines(path);
    REQUIRE(lines.size() == 2);
    CHECK(std::regex_match(lines[0], std::regex(R"(\[ *\d+\.\d{6}\] INFO  main: first line 1)")));
    CHECK(std::regex_match(lines[1], std::regex(R"(\[ *\d+\.\d{6}\] WARN  main: second line)")));

    // Opened again: appended, not truncated.
    elog::set_output_path(path);
    elog::error("third line");
    lines = read_lines(path);
    REQUIRE(lines.size() == 3);
    CHECK(lines[2].ends_with("ERROR main: third line"));
}

TEST_CASE("log: show_level and show_log_origin shape the line", "[log]") {
    LoggerRestore restore;
    TempDir dir;
    const std::string path = dir.file("shape.log");
    elog::set_output_path(path);
    elog::set_show_level(false);
    elog::info("no level");
    elog::set_show_origin(true);
    const int line = __LINE__ + 1;
    elog::info("with origin");
    elog::set_show_level(true);
    elog::write(elog::Level::Info, "written without a call site");

    const auto lines = read_lines(path);
    REQUIRE(lines.size() == 3);
    CHECK(std::regex_match(lines[0], std::regex(R"(\[ *\d+\.\d{6}\] main: no level)")));
    CHECK(lines[1].ends_with(" main tests/unit/vmm/sys/log_test.cpp:" + std::to_string(line) + ": with origin"));
    CHECK(lines[1].find("INFO") == std::string::npos);
    CHECK(std::regex_match(lines[2], std::regex(R"(\[ *\d+\.\d{6}\] INFO  main: written without a call site)")));
}

TEST_CASE("log: levels Off and Trace", "[log]") {
    LoggerRestore restore;
    TempDir dir;
    const std::string path = dir.file("levels.log");
    elog::set_output_path(path);
    elog::set_level(elog::Level::Off);
    elog::error("hidden error");
    elog::set_level(elog::Level::Trace);
    elog::trace("trace {}", "shown");
    elog::set_level(elog::Level::Debug);
    elog::trace("hidden trace");
    const auto lines = read_lines(path);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].ends_with("TRACE main: trace shown"));

    elog::Level l{};
    CHECK(elog::parse_level("OFF", &l));
    CHECK(l == elog::Level::Off);
    CHECK(elog::parse_level("trace", &l));
    CHECK(l == elog::Level::Trace);
    CHECK(elog::parse_level("Warning", &l));
    CHECK(l == elog::Level::Warn);
    CHECK_FALSE(elog::parse_level("verbose", &l));
    CHECK(std::string(elog::level_name(elog::Level::Warn)) == "Warning");
}

TEST_CASE("log: an output that cannot be opened leaves the output as it was", "[log]") {
    LoggerRestore restore;
    TempDir dir;
    const std::string good = dir.file("good.log");
    elog::set_output_path(good);
    CHECK_THROWS_WITH(elog::set_output_path(dir.file("none/x.log")), dir.file("none/x.log") + ": No such file or directory");
    CHECK_THROWS_WITH(elog::set_output_path(dir.file("")), dir.file("") + ": Is a directory");
    CHECK(elog::output_path() == good);
    elog::info("still here");
    CHECK(read_lines(good).size() == 1);
}

TEST_CASE("log: a named pipe needs a reader and never blocks the writer", "[log]") {
    LoggerRestore restore;
    TempDir dir;
    const std::string fifo = dir.file("log.fifo");
    REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
    CHECK_THROWS_WITH(elog::set_output_path(fifo), fifo + ": No such device or address (a named pipe needs a reader)");

    const int reader = open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(reader >= 0);
    elog::set_output_path(fifo);
    elog::info("through the pipe");
    char buf[4096];
    const ssize_t n = read(reader, buf, sizeof buf);
    REQUIRE(n > 0);
    CHECK(std::string(buf, static_cast<size_t>(n)).ends_with("INFO  main: through the pipe\n"));

    // Nobody reads: once the pipe is full, lines are dropped (and counted) instead of blocking.
    const uint64_t dropped = elog::dropped_lines();
    const std::string filler(1000, 'x');
    for (int i = 0; i < 200; i++) elog::info("{}", filler);  // 200 KB > the 64 KiB pipe
    CHECK(elog::dropped_lines() > dropped);
    elog::set_output_stderr();
    close(reader);
}

TEST_CASE("log: lines from threads do not interleave", "[log]") {
    LoggerRestore restore;
    TempDir dir;
    const std::string path = dir.file("threads.log");
    elog::set_output_path(path);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++) {
        threads.emplace_back([t] {
            elog::set_thread_name("writer" + std::to_string(t));
            for (int i = 0; i < 200; i++) elog::info("thread {} line {} {}", t, i, std::string(100, 'a' + t));
        });
    }
    for (auto& th : threads) th.join();
    const auto lines = read_lines(path);
    REQUIRE(lines.size() == 800);
    const std::regex shape(R"(\[ *\d+\.\d{6}\] INFO  writer(\d): thread (\d) line \d+ ([a-d])\3{99})");
    for (const auto& line : lines) {
        std::smatch m;
        REQUIRE(std::regex_match(line, m, shape));
        CHECK(m[1] == m[2]);
    }
}

TEST_CASE("log: open_output_file leaves regular files blocking and pipes non-blocking", "[log]") {
    TempDir dir;
    const auto file_fd = elog::open_output_file(dir.file("plain"));
    int flags = fcntl(file_fd.get(), F_GETFL);
    CHECK((flags & O_NONBLOCK) == 0);
    CHECK((flags & O_APPEND) != 0);
    CHECK((flags & O_ACCMODE) == O_WRONLY);
    CHECK((fcntl(file_fd.get(), F_GETFD) & FD_CLOEXEC) != 0);

    const std::string fifo = dir.file("p.fifo");
    REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
    const int reader = open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(reader >= 0);
    const auto fifo_fd = elog::open_output_file(fifo);
    flags = fcntl(fifo_fd.get(), F_GETFL);
    CHECK((flags & O_NONBLOCK) != 0);
    close(reader);
}

}  // namespace unit_log_test
