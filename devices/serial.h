// 16550A UART (COM1): the guest's console. THR bytes go to an output sink; host input is
// queued into a bounded RX buffer that the guest drains through RBR.
//
// Transmission is instantaneous (THR and the shift register are always empty again after a
// write), so there is no TX FIFO to model. The RX buffer stands in for the 16-byte RX FIFO
// but is larger, so that the event loop can hand over a whole read() of stdin; it applies
// back-pressure instead of overrunning: enqueue_input() takes only what fits.
#pragma once

#include <cstddef>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>

#include "devices/console_input.h"
#include "devices/irq.h"
#include "devices/bus.h"
#include "vmm/sys/fd.h"
#include "vmm/sys/state_stream.h"

namespace embervm::devices {

class Serial : public vmm::BusDevice, public ConsoleInput {
public:
    // Receives every byte the guest transmits, in order, from the vCPU thread that wrote THR.
    // Calls are serialised; a slow sink stalls only the vCPUs writing to the UART.
    using OutputSink = std::function<void(std::span<const uint8_t>)>;

    static constexpr uint64_t kSize = 8;             // registers, at layout::kCom1Port
    static constexpr size_t kDefaultRxCapacity = 4096;

    // `irq` may be null (no interrupts). `rx_capacity` bounds the host-input buffer.
    Serial(std::shared_ptr<IrqLine> irq, OutputSink sink, size_t rx_capacity = kDefaultRxCapacity);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Host input (event-loop thread). Queues as many bytes as fit and returns that count;
    // the caller keeps the rest and offers it again when the input-ready callback comes.
    size_t enqueue_input(std::span<const uint8_t> bytes) override;
    // True while the RX buffer has room.
    bool wants_input() const;
    // Free space in the RX buffer, in bytes.
    size_t input_space() const;
    // Called once after enqueue_input() turned bytes away, as soon as the guest has drained
    // the RX buffer to half capacity (RBR reads, or an FCR that clears it): on the vCPU thread
    // of that access, after the device lock is released (it may call back into the device).
    // Not called while nothing was turned away. It must be cheap and thread-safe (post to the
    // event loop, write an eventfd). Any thread; a call already under way on another thread
    // may still run the previous callback, so whatever it reaches must outlive that (a
    // shared_ptr, an io_context that stays).
    void set_input_ready_callback(std::function<void()> callback) override;

    // Snapshots: the registers, latched interrupt conditions and the unread host input. Restore
    // validates every field (StateError naming it) and changes nothing when one is bad; it raises
    // no interrupt (one the guest had not taken is in the saved irqchip state).
    void save_state(StateWriter& w) const;
    void restore_state(StateReader& r);

private:
    struct Effects {
        bool raise_irq = false;
        bool input_ready = false;
        bool transmit = false;
        uint8_t tx_byte = 0;
        uint64_t tx_ticket = 0;
    };

    uint8_t read_register(uint64_t reg, Effects& fx);
    void write_register(uint64_t reg, uint8_t value, Effects& fx);
    void transmit_locked(uint8_t value, Effects& fx);
    void emit_output(const Effects& fx);
    void write_mcr_locked(uint8_t value);
    void clear_rx_locked(Effects& fx);
    uint8_t pop_rx_locked(Effects& fx);
    void note_rx_drained_locked(Effects& fx);
    uint8_t modem_status_lines_locked() const;
    uint8_t interrupt_id_locked() const;
    bool interrupt_pending_locked() const { return (interrupt_id_locked() & 0x01) == 0; }
    // Runs `op` under the state lock and then performs its effects outside of it.
    template <typename Op>
    auto with_state(Op&& op);

    const std::shared_ptr<IrqLine> irq_;
    const OutputSink sink_;
    const size_t rx_capacity_;
    std::function<void()> input_ready_callback_;

    // Sink calls happen outside mutex_ so that a blocked sink never stalls enqueue_input();
    // tickets taken under mutex_ keep them in THR order across vCPU threads.
    std::mutex output_mutex_;
    std::condition_variable output_turn_;
    uint64_t output_serving_ = 0;  // guarded by output_mutex_

    mutable std::mutex mutex_;  // guards the register state below
    uint64_t output_next_ticket_ = 0;
    std::deque<uint8_t> rx_;
    uint8_t last_rx_ = 0;
    uint8_t ier_ = 0;
    uint8_t lcr_ = 0x03;  // 8N1
    uint8_t mcr_ = 0;
    uint8_t msr_ = 0xb0;  // modem status: lines (CTS|DSR|DCD) in bits 4-7, deltas in bits 0-3
    uint8_t scr_ = 0;
    uint8_t dll_ = 0x0c;  // divisor 12: 9600 baud
    uint8_t dlm_ = 0;
    bool fifo_enabled_ = false;
    bool overrun_ = false;       // LSR.OE, cleared by reading LSR
    bool thre_pending_ = false;  // THR-empty interrupt latched
    bool input_refused_ = false;  // enqueue_input() turned bytes away; waiting for room
};

// Sinks that write the guest's output to a file descriptor. Every byte is written: short
// writes and EINTR are retried, EAGAIN on a non-blocking fd waits in poll(). A hard error
// (EPIPE, EIO...) is logged once and the output is dropped from then on. The VMM should
// ignore SIGPIPE.
// `fd` is borrowed (e.g. STDOUT_FILENO) and must outlive the sink.
Serial::OutputSink fd_output_sink(int fd);
// The sink owns `fd` (e.g. a console log file) and closes it when the last copy goes.
Serial::OutputSink fd_output_sink(FileDescriptor fd);

}  // namespace embervm::devices
