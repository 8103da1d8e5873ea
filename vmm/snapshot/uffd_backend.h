// The Uffd memory backend of a snapshot restore (mem_backend {"backend_type": "Uffd",
// "backend_path": SOCKET}): guest memory stays anonymous and empty, and every page the guest (or
// the VMM) touches first is filled by another process, the page-fault handler, over userfaultfd.
//
// The protocol (README, "Snapshots", has it for handler writers):
// 1. embervm creates a userfaultfd (UFFD_FEATURE_EVENT_REMOVE asked for), registers every guest
//    memory region with UFFDIO_REGISTER_MODE_MISSING, connects to the handler's Unix stream
//    socket and sends one message: the regions as JSON (vmm/snapshot/uffd_message.h) with the
//    userfaultfd attached (SCM_RIGHTS). It never reads from that socket.
// 2. The handler resolves each fault (UFFD_EVENT_PAGEFAULT) with UFFDIO_COPY from the snapshot's
//    memory file (region bytes at `offset`) or UFFDIO_ZEROPAGE; on UFFD_EVENT_REMOVE (the balloon
//    gave pages back: madvise(MADV_DONTNEED)) it must serve the range's next faults as zero pages,
//    not from the file: what the guest gave back has no content to keep.
// 3. The handler keeps the connection open while it serves. embervm keeps its own copy of the
//    userfaultfd, so a handler that dies does not turn the guest's missing pages into zero pages
//    behind its back: a watch thread sees the connection close, the VM ends with one error line
//    naming mem_backend (exit status 1), and closing embervm's copy then wakes every thread still
//    waiting for a page. When embervm ends, the connection closes: the handler's cue to exit.
#pragma once

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "vmm/snapshot/uffd_message.h"
#include "vmm/sys/fd.h"

namespace embervm::memory {
class GuestMemory;
}

namespace embervm::snapshot {

class UffdBackend {
public:
    // Steps 1 above for `mem` (private anonymous memory, nothing in it yet). Throws Error with
    // one line starting "mem_backend": userfaultfd not permitted, registration refused, nothing
    // at `socket_path` or nobody listening there, the message not sent.
    UffdBackend(const memory::GuestMemory& mem, const std::string& socket_path);
    UffdBackend(const UffdBackend&) = delete;
    UffdBackend& operator=(const UffdBackend&) = delete;
    // Stops the watch, closes the connection and embervm's userfaultfd.
    ~UffdBackend();

    // Starts the watch thread: when the handler closes the connection, `on_gone` gets one line
    // naming mem_backend (once), then embervm's userfaultfd is closed. With `seccomp` the thread
    // runs under the event loop's allowlist (it polls, reads and closes). Once.
    void watch(std::function<void(const std::string&)> on_gone, bool seccomp);

    const std::vector<UffdRegion>& regions() const { return regions_; }
    // The UFFD_FEATURE_* bits the kernel granted.
    uint64_t features() const { return features_; }

private:
    void watch_thread(std::function<void(const std::string&)> on_gone, bool seccomp);

    std::string socket_path_;
    std::vector<UffdRegion> regions_;
    uint64_t features_ = 0;
    FileDescriptor uffd_;
    FileDescriptor conn_;
    FileDescriptor stop_;  // eventfd: ends the watch
    std::thread watcher_;
};

}  // namespace embervm::snapshot
