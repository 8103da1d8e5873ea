// Tests for vmm/console's StdinConsole: host input (a pipe standing in for stdin) reaches the
// guest's UART in order and complete, with the UART's back-pressure resolved by its input-ready
// callback on the event loop (no timer, no polling).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "devices/serial.h"
#include "tests/unit/devices/fakes.h"
#include "vmm/console.h"
#include "vmm/sys/fd.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_console_test {

using embervm::FileDescriptor;
using embervm::devices::Serial;
using embervm::devices::testing::read8;
using embervm::devices::testing::write8;
using embervm::vmm::StdinConsole;

namespace {

constexpr uint64_t kData = 0, kIer = 1, kLsr = 5;
constexpr uint8_t kLsrDataReady = 0x01;
constexpr size_t kRxCapacity = 64;  // far below the console's 512-byte reads

// `n` bytes that show a lost, repeated or swapped byte.
std::vector<uint8_t> pattern(size_t n) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; i++) v[i] = static_cast<uint8_t>((i * 7 + i / 251) & 0xff);
    return v;
}

// A pipe holding all of `bytes`, its write end closed: the console reads them, then EOF.
FileDescriptor pipe_with(const std::vector<uint8_t>& bytes) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    FileDescriptor rd(fds[0]), wr(fds[1]);
    REQUIRE(bytes.size() < 65536);  // fits the pipe: written before the console starts
    REQUIRE(::write(wr.get(), bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    return rd;
}

// The guest's receive loop, one pass: reads RBR while LSR says data is ready.
size_t drain_rx(Serial& serial, std::vector<uint8_t>& got) {
    size_t n = 0;
    while ((read8(serial, kLsr) & kLsrDataReady) != 0) {
        got.push_back(read8(serial, kData));
        n++;
    }
    return n;
}

// An interrupt line a guest thread can sleep on.
class WaitableIrq : public embervm::devices::IrqLine {
public:
    void trigger() override {
        std::lock_guard lock(mutex_);
        edges_++;
        cv_.notify_all();
    }
    uint64_t edges() {
        std::lock_guard lock(mutex_);
        return edges_;
    }
    void wait_past(uint64_t seen) {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return edges_ != seen; });
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    uint64_t edges_ = 0;
};

}  // namespace

TEST_CASE("console: stdin parks on a full UART and goes on when the guest drains it", "[vmm][console]") {
    const std::vector<uint8_t> data = pattern(20000);
    FileDescriptor input = pipe_with(data);
    Serial serial(nullptr, [](std::span<const uint8_t>) {}, kRxCapacity);
    boost::asio::io_context io;
    int quits = 0;
    auto console = StdinConsole::attach(io, serial, [&] { quits++; }, input.get());
    REQUIRE(console != nullptr);

    // One thread plays both sides: the loop runs what is ready (never waits), then the guest
    // drains the UART. A step where neither had anything to do would be a stall: with a timer
    // (or a lost wake-up) poll() finds nothing ready while the bytes wait.
    std::vector<uint8_t> got;
    size_t times_full = 0;
    while (got.size() < data.size()) {
        io.restart();
        const size_t ran = io.poll();
        if (serial.input_space() == 0) {
            times_full++;
            // Parked on the full UART: nothing runs on the loop until the guest reads.
            io.restart();
            CHECK(io.poll() == 0);
        }
        const size_t drained = drain_rx(serial, got);
        INFO("received " << got.size() << " of " << data.size() << " bytes");
        REQUIRE((ran > 0 || drained > 0));
    }
    CHECK(got == data);
    CHECK(times_full >= data.size() / 512);  // back-pressure was exercised, read after read
    // The console went on to the end of its input: nothing is left to run.
    io.restart();
    io.poll();
    CHECK(drain_rx(serial, got) == 0);
    CHECK(quits == 0);  // Ctrl-A is no escape on a pipe
}

TEST_CASE("console: a guest vCPU thread reading on interrupts receives every byte in order", "[vmm][console]") {
    const std::vector<uint8_t> data = pattern(60000);
    FileDescriptor input = pipe_with(data);
    auto irq = std::make_shared<WaitableIrq>();
    Serial serial(irq, [](std::span<const uint8_t>) {}, kRxCapacity);
    write8(serial, kIer, 0x01);  // ERBFI: an interrupt when received data is ready
    boost::asio::io_context io;
    auto console = StdinConsole::attach(io, serial, [] {}, input.get());
    REQUIRE(console != nullptr);
    // The loop would run out of work while the console waits for the guest: keep it running
    // until the guest has everything.
    auto keep_running = boost::asio::make_work_guard(io);

    std::vector<uint8_t> got;
    std::thread vcpu([&] {
        for (;;) {
            const uint64_t seen = irq->edges();
            drain_rx(serial, got);  // each RBR read that makes room wakes the console
            if (got.size() >= data.size()) break;
            irq->wait_past(seen);  // no edge is missed: one after `seen` ends the wait
        }
        keep_running.reset();
    });
    io.run();  // returns once the guest has all bytes and the console has read EOF
    vcpu.join();
    CHECK(got.size() == data.size());
    CHECK(got == data);
    CHECK(serial.input_space() == kRxCapacity);
}

TEST_CASE("console: input that cannot be watched is not attached", "[vmm][console]") {
    Serial serial(nullptr, [](std::span<const uint8_t>) {});
    boost::asio::io_context io;
    FileDescriptor null_dev(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    REQUIRE(null_dev);
    CHECK(StdinConsole::attach(io, serial, [] {}, null_dev.get()) == nullptr);
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    ::close(fds[1]);
    ::close(fds[0]);
    CHECK(StdinConsole::attach(io, serial, [] {}, fds[0]) == nullptr);  // closed
}

}  // namespace unit_console_test
