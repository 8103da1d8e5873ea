// Tests for vmm/sys/loop_call: a call from another thread runs on the loop's thread and returns
// its outcome; from the loop's own thread it runs at once; a call the loop will never run fails
// when the loop is closed instead of waiting for ever.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "vmm/sys/loop_call.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_loop_call_test {

namespace vmm = embervm::vmm;

namespace {

// An io_context served by a thread of its own until the end of the scope.
struct RunningLoop {
    boost::asio::io_context io;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work = boost::asio::make_work_guard(io);
    std::thread thread{[this] { io.run(); }};
    ~RunningLoop() {
        work.reset();
        io.stop();
        thread.join();
    }
};

}  // namespace

TEST_CASE("LoopCaller runs a call on the loop's thread and hands back its outcome", "[loop_call]") {
    RunningLoop loop;
    vmm::LoopCaller caller(loop.io);
    std::thread::id ran_on;
    CHECK(caller.call([&] { ran_on = std::this_thread::get_id(); }));
    CHECK(ran_on == loop.thread.get_id());

    CHECK_THROWS_WITH(caller.call([] { throw std::runtime_error("drives.x.path_on_host: locked"); }),
                      "drives.x.path_on_host: locked");
    CHECK(caller.call([] {}));  // the loop goes on after a call that threw
}

TEST_CASE("LoopCaller runs a call from the loop's own thread at once", "[loop_call]") {
    boost::asio::io_context io;
    vmm::LoopCaller caller(io);
    bool inner_ran = false;
    bool returned = false;
    boost::asio::post(io, [&] { returned = caller.call([&] { inner_ran = true; }); });
    io.run();  // one handler: the call must not have been queued behind it
    CHECK(inner_ran);
    CHECK(returned);
}

TEST_CASE("LoopCaller: a call waiting for a loop that stopped fails when the loop is closed", "[loop_call]") {
    boost::asio::io_context io;  // never run: like a loop that stopped with the call queued
    vmm::LoopCaller caller(io);
    std::atomic<bool> ran{false};
    auto waiting = std::async(std::launch::async, [&] { return caller.call([&] { ran = true; }); });
    // Most likely queued by now; if not, it is refused at once: false either way.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    caller.close();
    CHECK_FALSE(waiting.get());
    // A queued call is not run by a loop that runs again after the close.
    io.restart();
    io.poll();
    CHECK_FALSE(ran);
    // Later calls fail at once.
    CHECK_FALSE(caller.call([&] { ran = true; }));
    CHECK_FALSE(ran);
}

}  // namespace unit_loop_call_test
