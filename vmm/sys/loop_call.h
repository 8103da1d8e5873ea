// LoopCaller: runs a function on the Asio event loop's thread for another thread and hands the
// outcome back through a promise that the loop's handler sets (the caller sleeps on it, nothing
// polls). A call the loop will never run, because the loop has stopped, fails instead of hanging.
#pragma once

#include <functional>
#include <memory>

#include <boost/asio/io_context.hpp>

namespace embervm::vmm {

class LoopCaller {
public:
    explicit LoopCaller(boost::asio::io_context& io);
    // close()s.
    ~LoopCaller();
    LoopCaller(const LoopCaller&) = delete;
    LoopCaller& operator=(const LoopCaller&) = delete;

    // Runs `fn` on the loop's thread and waits for it. Called on the loop's thread itself (from
    // one of its handlers), runs `fn` at once: waiting for the loop there would deadlock.
    // Returns true once `fn` ran, and rethrows what it threw; false if the loop was closed
    // before it ran `fn` (then `fn` never runs). Any thread.
    bool call(std::function<void()> fn);

    // The loop has stopped for good: calls waiting for it return false, later ones at once.
    // Any thread; no handler of this caller may run on the loop afterwards (it would be
    // ignored).
    void close();

private:
    struct State;
    boost::asio::io_context& io_;
    std::shared_ptr<State> state_;
};

}  // namespace embervm::vmm
