// Tests for vmm/fd_watch: handlers run on the event loop when an eventfd is signalled, once per
// readiness, and never after the watch is destroyed (also when destroyed by its own handler).
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>

#include <boost/asio/io_context.hpp>

#include "vmm/sys/eventfd.h"
#include "vmm/sys/fd_watch.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_fd_watch_test {

namespace vmm = embervm::vmm;

namespace {

// Runs the loop until `done` holds. Fails if the loop runs out of work, or if nothing at all
// happens for ten seconds (a handler that never comes), rather than hanging.
template <typename Pred>
void run_until(boost::asio::io_context& io, Pred&& done) {
    io.restart();
    while (!done()) REQUIRE(io.run_one_for(std::chrono::seconds(10)) == 1);
}

// Runs every handler that is ready now (readiness already reported by the kernel included),
// without waiting: what must not happen has had its chance.
void run_ready(boost::asio::io_context& io) {
    io.restart();
    io.poll();
}

}  // namespace

TEST_CASE("FdWatch calls its handler for each signal until destroyed", "[fd_watch]") {
    boost::asio::io_context io;
    vmm::EventFd event;
    int calls = 0;
    uint64_t total = 0;
    auto watch = std::make_unique<vmm::FdWatch>(io, event.fd(), [&] {
        calls++;
        total += event.consume();
    });
    run_ready(io);
    CHECK(calls == 0);

    event.signal(3);
    run_until(io, [&] { return calls == 1; });
    CHECK(total == 3);
    run_ready(io);
    CHECK(calls == 1);  // once per readiness

    event.signal();
    run_until(io, [&] { return calls == 2; });
    CHECK(total == 4);

    watch.reset();
    event.signal();
    run_ready(io);
    CHECK(calls == 2);
    CHECK(io.stopped());  // the destroyed watch left no work behind
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
    run_until(io, [&] { return calls == 1; });
    event.signal();
    run_ready(io);
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
    run_until(io, [&] { return calls == 1; });
    run_ready(io);
    CHECK(calls == 1);  // paused: not called again although the eventfd stays readable

    consume = true;
    watch->resume();
    run_until(io, [&] { return calls == 2; });  // still readable: called at once, consumed
    CHECK(event.consume() == 0);

    event.signal();
    run_until(io, [&] { return calls == 3; });  // watching normally again

    // pause() outside the handler cancels the outstanding wait; resume() twice is harmless.
    watch->pause();
    event.signal();
    run_ready(io);
    CHECK(calls == 3);
    watch->resume();
    watch->resume();
    run_until(io, [&] { return calls == 4; });
    run_ready(io);
    CHECK(calls == 4);  // one readiness, one call, however many resumes
    CHECK(event.consume() == 0);
}

}  // namespace unit_fd_watch_test
