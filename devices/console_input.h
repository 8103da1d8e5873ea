// ConsoleInput: a guest device that takes the host console's input (the UART, devices/serial.h,
// or virtio-console, virtio/console/console_device.h), as vmm/console.h's StdinConsole feeds it.
//
// Back-pressure without polling: enqueue_input() takes only what the device has room for; the
// caller keeps the rest, reads nothing more from the host, and offers it again once the device
// calls its input-ready callback.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

namespace embervm::devices {

class ConsoleInput {
public:
    virtual ~ConsoleInput() = default;
    // Host input (event-loop thread): queues as many bytes as fit and returns that count.
    virtual size_t enqueue_input(std::span<const uint8_t> bytes) = 0;
    // Called once after enqueue_input() turned bytes away, when the device has room again. It
    // must be cheap, thread-safe and must not call back into the device (post to the event
    // loop): the device may call it from a vCPU thread or with its own lock held.
    virtual void set_input_ready_callback(std::function<void()> callback) = 0;
};

}  // namespace embervm::devices
