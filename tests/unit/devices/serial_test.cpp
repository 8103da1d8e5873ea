// Tests for devices/serial: 16550A registers, interrupts, RX buffering and the fd output sinks
// (every byte written, even to a full pipe; a hard error logged once, then output dropped).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "devices/serial.h"
#include "tests/unit/devices/fakes.h"
#include "tests/unit/temp_dir.h"
#include "vmm/sys/log.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_serial_test {

using embervm::devices::Serial;
using embervm::devices::testing::CountingIrq;
using embervm::devices::testing::read8;
using embervm::devices::testing::write8;

namespace {

constexpr uint64_t kData = 0, kIer = 1, kIir = 2, kFcr = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7;

struct Uart {
    explicit Uart(size_t rx_capacity = Serial::kDefaultRxCapacity)
        : irq(std::make_shared<CountingIrq>()),
          serial(irq, [this](std::span<const uint8_t> b) {
              std::lock_guard lock(mutex);
              output.append(b.begin(), b.end());
          }, rx_capacity) {}

    std::string out() {
        std::lock_guard lock(mutex);
        return output;
    }
    size_t feed(const std::string& s) {
        return serial.enqueue_input(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
    }
    uint8_t reg(uint64_t offset) { return read8(serial, offset); }
    void set(uint64_t offset, uint8_t value) { write8(serial, offset, value); }

    std::shared_ptr<CountingIrq> irq;
    std::mutex mutex;
    std::string output;
    Serial serial;
};

}  // namespace

TEST_CASE("serial: registers come out of reset like a 16550A", "[devices][serial]") {
    Uart u;
    CHECK(u.reg(kIer) == 0);
    CHECK(u.reg(kIir) == 0x01);
    CHECK(u.reg(kLcr) == 0x03);
    CHECK(u.reg(kMcr) == 0);
    CHECK(u.reg(kLsr) == 0x60);  // THRE | TEMT
    CHECK(u.reg(kMsr) == 0xb0);  // CTS | DSR | DCD
    CHECK(u.irq->count() == 0);
}

TEST_CASE("serial: DLAB switches offsets 0 and 1 to the divisor latch", "[devices][serial]") {
    Uart u;
    u.set(kLcr, 0x83);
    CHECK(u.reg(kData) == 0x0c);  // default divisor 12
    CHECK(u.reg(kIer) == 0x00);
    u.set(kData, 0x01);
    u.set(kIer, 0x0f);  // DLM, not IER
    CHECK(u.reg(kData) == 0x01);
    CHECK(u.reg(kIer) == 0x0f);
    CHECK(u.out().empty());  // the DLL write was not transmitted
    u.set(kLcr, 0x03);
    CHECK(u.reg(kIer) == 0x00);
    CHECK(u.irq->count() == 0);
    u.set(kLcr, 0x83);
    CHECK(u.reg(kData) == 0x01);
    CHECK(u.reg(kIer) == 0x0f);
}

TEST_CASE("serial: LCR, SCR and IER round trips", "[devices][serial]") {
    Uart u;
    u.set(kLcr, 0x1b);
    CHECK(u.reg(kLcr) == 0x1b);
    for (uint8_t v : {0x00, 0xa5, 0x5a, 0xff}) {
        u.set(kScr, v);
        CHECK(u.reg(kScr) == v);
    }
    u.set(kIer, 0xff);
    CHECK(u.reg(kIer) == 0x0f);  // bits 4-7 do not exist on a 16550A
    u.set(kMcr, 0xff);
    CHECK(u.reg(kMcr) == 0x1f);
}

TEST_CASE("serial: THR bytes go to the sink in order", "[devices][serial]") {
    Uart u;
    for (char c : std::string("hello\n")) {
        u.set(kData, static_cast<uint8_t>(c));
    }
    CHECK(u.out() == "hello\n");
    CHECK(u.reg(kLsr) == 0x60);
    CHECK(u.irq->count() == 0);  // ETBEI is off
}

TEST_CASE("serial: THR-empty interrupt on enabling ETBEI and after each byte", "[devices][serial]") {
    Uart u;
    u.set(kIer, 0x02);
    CHECK(u.irq->take() == 1);
    CHECK(u.reg(kIir) == 0x02);
    CHECK(u.reg(kIir) == 0x01);  // reading IIR acknowledged it

    u.set(kData, 'a');
    CHECK(u.irq->take() == 1);
    u.set(kData, 'b');  // still pending: no new edge
    CHECK(u.irq->take() == 0);
    CHECK(u.reg(kIir) == 0x02);
    CHECK(u.reg(kIir) == 0x01);

    // Rewriting IER with ETBEI already set does not re-arm it.
    u.set(kIer, 0x02);
    CHECK(u.irq->take() == 0);
    CHECK(u.reg(kIir) == 0x01);

    // Disabling ETBEI drops a pending THRE interrupt; re-enabling raises it again.
    u.set(kData, 'c');
    CHECK(u.irq->take() == 1);
    u.set(kIer, 0x00);
    CHECK(u.reg(kIir) == 0x01);
    u.set(kIer, 0x02);
    CHECK(u.irq->take() == 1);
    CHECK(u.reg(kIir) == 0x02);
    CHECK(u.out() == "abc");
}

TEST_CASE("serial: the Linux 8250 THRE re-assertion probe passes", "[devices][serial]") {
    Uart u;
    u.set(kIer, 0x02);
    const uint8_t iir1 = u.reg(kIir);
    u.set(kIer, 0x00);
    u.set(kIer, 0x02);
    const uint8_t iir2 = u.reg(kIir);
    u.set(kIer, 0x00);
    CHECK((iir1 & 0x01) == 0);
    CHECK((iir2 & 0x01) == 0);
}

TEST_CASE("serial: RX path with enqueue_input", "[devices][serial]") {
    Uart u;
    CHECK(u.feed("ab") == 2);
    CHECK(u.irq->take() == 0);  // ERBFI off
    CHECK((u.reg(kLsr) & 0x01) == 0x01);
    u.set(kIer, 0x01);  // enabling ERBFI with data present raises the interrupt
    CHECK(u.irq->take() == 1);
    CHECK(u.reg(kIir) == 0x04);
    CHECK(u.reg(kIir) == 0x04);  // reading IIR does not clear RX data available
    CHECK(u.reg(kData) == 'a');
    CHECK((u.reg(kLsr) & 0x01) == 0x01);
    CHECK(u.reg(kData) == 'b');
    CHECK(u.reg(kLsr) == 0x60);  // DR clear
    CHECK(u.reg(kIir) == 0x01);
    CHECK(u.reg(kData) == 'b');  // an empty RBR repeats the last character

    CHECK(u.feed("c") == 1);
    CHECK(u.irq->take() == 1);
    CHECK(u.feed("d") == 1);  // already pending: no new edge
    CHECK(u.irq->take() == 0);
    CHECK(u.reg(kData) == 'c');
    CHECK(u.reg(kData) == 'd');
    CHECK(u.out().empty());
}

TEST_CASE("serial: IIR reports the highest-priority source", "[devices][serial]") {
    Uart u(2);
    u.set(kIer, 0x0f);
    CHECK(u.irq->take() == 1);
    CHECK(u.reg(kIir) == 0x02);  // THRE only; reading it acknowledges it
    CHECK(u.reg(kIir) == 0x01);

    // Loopback on: MCR outputs change the MSR lines, which latches modem-status deltas.
    u.set(kMcr, 0x10);
    CHECK(u.irq->take() == 1);
    CHECK(u.reg(kIir) == 0x00);  // modem status

    // Three looped-back bytes into a two-byte RX buffer: data, THRE and an overrun.
    u.set(kData, '1');
    u.set(kData, '2');
    u.set(kData, '3');
    CHECK(u.irq->take() == 0);   // an interrupt was pending all along
    CHECK(u.reg(kIir) == 0x06);  // receiver line status first
    CHECK(u.reg(kLsr) == 0x63);  // DR | OE | THRE | TEMT; reading clears OE
    CHECK(u.reg(kIir) == 0x04);  // then received data
    CHECK(u.reg(kData) == '1');
    CHECK(u.reg(kData) == '2');
    CHECK(u.reg(kIir) == 0x02);  // then THR empty, acknowledged by this read
    CHECK(u.reg(kIir) == 0x00);  // then modem status, until MSR is read
    CHECK(u.reg(kMsr) == 0x0b);  // DCTS | DDSR | DDCD (lines all low in loopback)
    CHECK(u.reg(kIir) == 0x01);
    CHECK(u.out().empty());
}

TEST_CASE("serial: back-pressure instead of overrun for host input", "[devices][serial]") {
    Uart u(8);
    int ready_calls = 0;
    u.serial.set_input_ready_callback([&] { ++ready_calls; });
    CHECK(u.serial.wants_input());
    CHECK(u.serial.input_space() == 8);
    CHECK(u.feed("0123456789") == 8);
    CHECK_FALSE(u.serial.wants_input());
    CHECK(u.serial.input_space() == 0);
    CHECK(u.feed("x") == 0);
    CHECK((u.reg(kLsr) & 0x02) == 0);  // no overrun: the caller kept the bytes

    for (int i = 0; i < 3; ++i) {
        CHECK(u.reg(kData) == '0' + i);
    }
    CHECK(u.serial.wants_input());
    CHECK(ready_calls == 0);  // 5 bytes left: not yet half empty
    CHECK(u.reg(kData) == '3');
    CHECK(ready_calls == 1);
    for (int i = 4; i < 8; ++i) {
        CHECK(u.reg(kData) == '0' + i);
    }
    CHECK(ready_calls == 1);  // once per refusal
    CHECK(u.feed("89") == 2);
    CHECK(u.reg(kData) == '8');
    CHECK(u.reg(kData) == '9');
    CHECK(ready_calls == 1);
}

TEST_CASE("serial: the input-ready callback comes only when room frees up after a refusal", "[devices][serial]") {
    Uart u(4);
    int ready_calls = 0;
    u.serial.set_input_ready_callback([&] { ++ready_calls; });

    // Nothing turned away: draining the buffer, even to empty, calls nothing.
    CHECK(u.feed("abcd") == 4);
    for (char c : std::string("abcd")) CHECK(u.reg(kData) == c);
    CHECK(ready_calls == 0);

    // Turned away, then other accesses that free nothing: no call.
    CHECK(u.feed("efghij") == 4);
    u.set(kScr, 1);
    CHECK(u.reg(kLsr) == 0x61);
    CHECK(u.reg(kIir) == 0x01);
    u.set(kFcr, 0x00);  // FIFO mode unchanged (off): nothing cleared
    CHECK(ready_calls == 0);
    CHECK(u.reg(kData) == 'e');
    CHECK(ready_calls == 0);  // 3 of 4 bytes left: above half
    CHECK(u.reg(kData) == 'f');
    CHECK(ready_calls == 1);  // half: room for the bytes that wait
    CHECK(u.reg(kData) == 'g');
    CHECK(u.reg(kData) == 'h');
    CHECK(u.reg(kData) == 'h');  // an empty RBR read frees nothing
    CHECK(ready_calls == 1);

    // Clearing the RX FIFO frees the room at once.
    CHECK(u.feed("klmno") == 4);
    u.set(kFcr, 0x03);
    CHECK(ready_calls == 2);
    CHECK(u.reg(kLsr) == 0x60);

    // A callback that is taken away is not called.
    CHECK(u.feed("pqrst") == 4);
    u.serial.set_input_ready_callback(nullptr);
    u.set(kFcr, 0x03);
    CHECK(ready_calls == 2);
}

TEST_CASE("serial: the input-ready callback runs on the reading thread, outside the device lock",
          "[devices][serial]") {
    Uart u(2);
    std::string waiting = "abcd";  // the host's bytes the UART has not taken yet
    std::vector<std::thread::id> callers;
    // What a console does once woken: hand over the bytes that wait (this would deadlock if
    // the device lock were still held).
    u.serial.set_input_ready_callback([&] {
        callers.push_back(std::this_thread::get_id());
        waiting.erase(0, u.feed(waiting));
    });
    waiting.erase(0, u.feed(waiting));
    CHECK(waiting == "cd");
    std::thread vcpu([&] { CHECK(u.reg(kData) == 'a'); });
    vcpu.join();
    REQUIRE(callers.size() == 1);
    CHECK(callers[0] != std::this_thread::get_id());
    CHECK(callers[0] != std::thread::id());
    CHECK(waiting == "d");  // 'b' was still there: one byte of room
    std::string got;
    for (int i = 0; i < 3; i++) got += static_cast<char>(u.reg(kData));
    CHECK(got == "bcd");
    CHECK(callers.size() == 2);  // once more after the refusal of 'd', not after that
    CHECK(waiting.empty());
    CHECK(u.reg(kLsr) == 0x60);
}

TEST_CASE("serial: loopback mode", "[devices][serial]") {
    Uart u;
    // Linux's 8250 probe: MCR = LOOP | RTS | OUT2 must read back CTS | DCD.
    u.set(kMcr, 0x1a);
    CHECK((u.reg(kMsr) & 0xf0) == 0x90);
    u.set(kMcr, 0x15);  // DTR | OUT1 -> DSR | RI
    CHECK((u.reg(kMsr) & 0xf0) == 0x60);
    u.set(kMcr, 0x10);  // RI falls: trailing-edge indicator
    CHECK(u.reg(kMsr) == 0x06);
    CHECK(u.reg(kMsr) == 0x00);  // deltas cleared by the read

    u.set(kData, 'x');
    u.set(kData, 'y');
    CHECK(u.out().empty());
    CHECK(u.reg(kLsr) == 0x61);
    CHECK(u.reg(kData) == 'x');
    CHECK(u.reg(kData) == 'y');

    u.set(kMcr, 0x00);  // back to normal: the peer's lines are asserted again
    CHECK((u.reg(kMsr) & 0xf0) == 0xb0);
    u.set(kData, 'z');
    CHECK(u.out() == "z");
}

TEST_CASE("serial: FIFO enable and clear", "[devices][serial]") {
    Uart u;
    u.set(kFcr, 0x01);
    CHECK(u.reg(kIir) == 0xc1);
    CHECK(u.feed("abc") == 3);
    u.set(kIer, 0x01);
    CHECK(u.reg(kIir) == 0xc4);
    u.set(kFcr, 0x07);  // clear RX and TX
    CHECK(u.reg(kLsr) == 0x60);
    CHECK(u.reg(kIir) == 0xc1);
    CHECK(u.feed("d") == 1);
    u.set(kFcr, 0x01);  // FIFO stays enabled, nothing cleared
    CHECK(u.reg(kData) == 'd');
    CHECK(u.feed("e") == 1);
    u.set(kFcr, 0x00);  // disabling the FIFOs empties them too
    CHECK(u.reg(kIir) == 0x01);
    CHECK(u.reg(kLsr) == 0x60);
}

TEST_CASE("serial: wide accesses touch consecutive registers", "[devices][serial]") {
    Uart u;
    u.set(kIer, 0x05);
    std::array<uint8_t, 2> buf{};
    u.serial.read(kLcr, buf);
    CHECK(buf[0] == 0x03);
    CHECK(buf[1] == 0x00);
    const std::array<uint8_t, 2> w{'o', 'k'};
    u.serial.write(kScr - 1, w);  // MSR is read-only, SCR takes 'k'
    CHECK(u.reg(kScr) == 'k');
}

TEST_CASE("serial: concurrent writers lose no bytes", "[devices][serial]") {
    Uart u;
    constexpr int kPerThread = 2000;
    std::vector<std::thread> threads;
    for (char c : {'a', 'b'}) {
        threads.emplace_back([&u, c] {
            for (int i = 0; i < kPerThread; ++i) {
                u.set(kData, static_cast<uint8_t>(c));
            }
        });
    }
    std::thread feeder([&u] {
        for (int i = 0; i < 100; ++i) {
            u.feed("i");
        }
    });
    for (auto& t : threads) t.join();
    feeder.join();
    const std::string out = u.out();
    CHECK(out.size() == 2 * kPerThread);
    CHECK(std::count(out.begin(), out.end(), 'a') == kPerThread);
}

TEST_CASE("serial: fd sink writes everything, even to a full non-blocking pipe", "[devices][serial]") {
    std::array<int, 2> fds{};
    REQUIRE(::pipe(fds.data()) == 0);
    embervm::FileDescriptor rd(fds[0]);
    REQUIRE(::fcntl(fds[1], F_SETFL, O_NONBLOCK) == 0);
    auto sink = embervm::devices::fd_output_sink(embervm::FileDescriptor(fds[1]));

    std::vector<uint8_t> data(256 * 1024);
    for (size_t i = 0; i < data.size(); ++i) {
        data[i] = static_cast<uint8_t>(i * 7);
    }
    std::thread writer([&] {
        sink(data);
        sink = nullptr;  // closes the write end: the reader sees EOF
    });
    std::vector<uint8_t> got;
    std::array<uint8_t, 4096> buf{};
    for (;;) {
        const ssize_t n = ::read(rd.get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        REQUIRE(n >= 0);
        if (n == 0) break;
        got.insert(got.end(), buf.begin(), buf.begin() + n);
    }
    writer.join();
    CHECK(got == data);
}

TEST_CASE("serial: an fd sink gives up at the first hard error, logging it once", "[devices][serial]") {
    embervm::test::TempDir dir;
    const std::string log_path = dir.file("log");
    embervm::log::set_output_path(log_path);
    struct RestoreLog {
        ~RestoreLog() { embervm::log::set_output_stderr(); }
    } restore_log;

    // The sink's descriptor first names a pipe whose reader is gone (EPIPE; SIGPIPE is ignored
    // for the test), then, through dup2, a healthy pipe.
    std::array<int, 2> dead{}, live{};
    REQUIRE(::pipe(dead.data()) == 0);
    REQUIRE(::pipe(live.data()) == 0);
    ::close(dead[0]);
    embervm::FileDescriptor out(dead[1]), live_rd(live[0]), live_wr(live[1]);
    REQUIRE(::fcntl(live_rd.get(), F_SETFL, O_NONBLOCK) == 0);
    auto sink = embervm::devices::fd_output_sink(out.get());
    const std::array<uint8_t, 3> bytes{1, 2, 3};
    auto old = ::signal(SIGPIPE, SIG_IGN);
    CHECK_NOTHROW(sink(bytes));
    ::signal(SIGPIPE, old);

    REQUIRE(::dup2(live_wr.get(), out.get()) == out.get());
    CHECK_NOTHROW(sink(bytes));
    CHECK_NOTHROW(sink(bytes));
    std::array<uint8_t, 16> buf{};
    CHECK(::read(live_rd.get(), buf.data(), buf.size()) == -1);  // nothing was written
    CHECK(errno == EAGAIN);
    // A new sink on the same descriptor does write: the read above could have seen bytes.
    auto fresh = embervm::devices::fd_output_sink(out.get());
    fresh(bytes);
    REQUIRE(::read(live_rd.get(), buf.data(), buf.size()) == 3);
    CHECK(std::equal(bytes.begin(), bytes.end(), buf.begin()));

    embervm::log::set_output_stderr();  // flushes and closes the log file
    std::ifstream in(log_path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    REQUIRE(lines.size() == 1);
    CHECK_THAT(lines[0], Catch::Contains(fmt::format("serial output: write to fd {} failed: Broken pipe (errno {}); "
                                                     "guest output is dropped from now on",
                                                     out.get(), EPIPE)));
}

TEST_CASE("serial: saved state restores registers, latched interrupts and unread input into a new UART",
          "[devices][serial][snapshot]") {
    Uart a;
    a.set(kLcr, 0x83);
    a.set(kData, 0x01);  // divisor 1
    a.set(kLcr, 0x1b);
    a.set(kFcr, 0x01);
    a.set(kMcr, 0x0b);
    a.set(kScr, 0x5a);
    a.set(kIer, 0x03);  // RX data and THR empty
    REQUIRE(a.feed("abc") == 3);
    REQUIRE(a.reg(kData) == 'a');
    embervm::StateWriter w;
    a.serial.save_state(w);

    Uart b;
    embervm::StateReader r(w.bytes(), "serial");
    b.serial.restore_state(r);
    r.expect_end();
    // A pending interrupt is raised again: its edge may not be in the saved irqchip.
    CHECK(b.irq->count() == 1);
    CHECK(b.reg(kLcr) == 0x1b);
    CHECK(b.reg(kMcr) == 0x0b);
    CHECK(b.reg(kScr) == 0x5a);
    CHECK(b.reg(kIer) == 0x03);
    CHECK(b.reg(kIir) == (0xc0 | 0x04));  // FIFO enabled, RX data available
    CHECK(b.reg(kData) == 'b');
    CHECK(b.reg(kData) == 'c');
    CHECK(b.reg(kIir) == (0xc0 | 0x02));  // then the latched THR empty
    b.set(kLcr, 0x9b);
    CHECK(b.reg(kData) == 0x01);
    CHECK(b.reg(kIer) == 0x00);
}

TEST_CASE("serial: a restored UART with nothing pending raises no interrupt", "[devices][serial][snapshot]") {
    Uart a;
    a.set(kIer, 0x01);  // RX data only; the THR is empty but its interrupt is not enabled
    embervm::StateWriter w;
    a.serial.save_state(w);
    Uart b;
    embervm::StateReader r(w.bytes(), "serial");
    b.serial.restore_state(r);
    CHECK(b.irq->count() == 0);
    CHECK(b.reg(kIir) == 0x01);  // no interrupt pending
}

TEST_CASE("serial: a saved state with bad fields is refused naming the field, the UART unchanged",
          "[devices][serial][snapshot]") {
    Uart a(8);
    a.set(kScr, 0x11);
    embervm::StateWriter w;
    w.put<uint32_t>(1);
    std::string expected;
    SECTION("more input than the buffer holds") {
        w.put_blob(std::vector<uint8_t>(9, 'x'));
        expected = "serial: saved state field 'rx': 9 bytes do not fit the 8-byte RX buffer";
    }
    SECTION("reserved IER bits") {
        w.put_blob({});
        w.put<uint8_t>(0);
        w.put<uint8_t>(0x10);
        expected = "serial: saved state field 'ier': 0x10 has reserved bits set";
    }
    SECTION("truncated") {
        w.put_blob({});
        for (int i = 0; i < 8; i++) w.put<uint8_t>(0);
        w.put_bool(true);
        expected = "serial: saved state field 'overrun': truncated (1 bytes needed, 0 left)";
    }
    SECTION("a newer version") {
        w = embervm::StateWriter();
        w.put<uint32_t>(2);
        expected = "serial: saved state field 'version': 2 is not supported (this embervm reads 1 to 1)";
    }
    embervm::StateReader r(w.bytes(), "serial");
    CHECK_THROWS_WITH(a.serial.restore_state(r), expected);
    CHECK(a.reg(kScr) == 0x11);
}

}  // namespace unit_serial_test
