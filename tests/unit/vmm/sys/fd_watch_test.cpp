// Tests for vmm/fd_watch: handlers run on the event loop when an eventfd is signalled, once per
// readiness, and never after the watch is destroyed (also when destroyed by its own handler).
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>

#include <boost/asio/io_context.hpp>

#include "vmm/sys/eventfd.h"
#include "vmm/sys/fd_watch.h"

namespace vmm = embervm::vmm;

TEST_CASE("FdWatch calls its handler for each signal until destroyed", "[fd_watch]") {
    boost::asio::io_context io;
    vmm::EventFd event;
    int calls = 0;
    uint64_t total = 0;
    auto watch = std::make_unique<vmm::FdWatch>(io, event.fd(), [&] {
        calls++;
        total += event.consume();
    });
    io.poll();
    CHECK(calls == 0);

    event.signal(3);
    io.run_for(std::chrono::milliseconds(50));
    CHECK(calls == 1);
    CHECK(total == 3);

    event.signal();
    io.run_for(std::chrono::milliseconds(50));
    CHECK(calls == 2);
    CHECK(total == 4);

    watch.reset();
    event.signal();
    io.restart();
    io.run_for(std::chrono::milliseconds(50));
    CHECK(calls == 2);
}

TEST_CASE("FdWatch may be destroyed by its own handler", "[fd_watch]") {
    boost::asio::io_context io;
    vmm::EventFd event;
    int calls = 0;
    std::unique_ptr<vmm::FdWatch> watch;
    watch = std::make_unique<vmm::FdWatch>(io, event.fd(), [&] {
        calls++;
        event.consume();
        watch.reset();
    });
    event.signal();
    io.run_for(std::chrono::milliseconds(50));
    event.signal();
    io.restart();
    io.run_for(std::chrono::milliseconds(50));
    CHECK(calls == 1);
    CHECK(watch == nullptr);
}

TEST_CASE("FdWatch pause leaves the source unread until resume", "[fd_watch]") {
    boost::asio::io_context io;
    vmm::EventFd event;
    int calls = 0;
    bool consume = false;
    std::unique_ptr<vmm::FdWatch> watch;
    watch = std::make_unique<vmm::FdWatch>(io, event.fd(), [&] {
        calls++;
        if (consume) {
            event.consume();
        } else {
            watch->pause();  // like a TAP with no guest buffers: leave the data where it is
        }
    });
    event.signal();
    io.run_for(std::chrono::milliseconds(50));
    CHECK(calls == 1);  // paused: not called again although the eventfd stays readable
    io.restart();
    io.run_for(std::chrono::milliseconds(50));
    CHECK(calls == 1);

    consume = true;
    watch->resume();
    io.restart();
    io.run_for(std::chrono::milliseconds(50));
    CHECK(calls == 2);  // still readable: called at once, consumed

    event.signal();
    io.restart();
    io.run_for(std::chrono::milliseconds(50));
    CHECK(calls == 3);  // watching normally again

    // pause() outside the handler cancels the outstanding wait; resume() twice is harmless.
    watch->pause();
    event.signal();
    io.restart();
    io.run_for(std::chrono::milliseconds(50));
    CHECK(calls == 3);
    watch->resume();
    watch->resume();
    io.restart();
    io.run_for(std::chrono::milliseconds(50));
    CHECK(calls == 4);
    CHECK(event.consume() == 0);
}
