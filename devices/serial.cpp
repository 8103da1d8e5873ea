// 16550A UART: register model, interrupt identification, RX buffering and output sinks.
#include "devices/serial.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "vmm/sys/error.h"
#include "vmm/sys/log.h"
#include "vmm/sys/write_all.h"

namespace embervm::devices {

namespace {

// Register offsets (DLAB selects the divisor latch at 0 and 1).
constexpr uint64_t kRegData = 0;  // RBR (read) / THR (write) / DLL
constexpr uint64_t kRegIer = 1;   // IER / DLM
constexpr uint64_t kRegIir = 2;   // IIR (read) / FCR (write)
constexpr uint64_t kRegLcr = 3;
constexpr uint64_t kRegMcr = 4;
constexpr uint64_t kRegLsr = 5;
constexpr uint64_t kRegMsr = 6;
constexpr uint64_t kRegScr = 7;

constexpr uint8_t kIerRxData = 0x01;      // ERBFI
constexpr uint8_t kIerThrEmpty = 0x02;    // ETBEI
constexpr uint8_t kIerLineStatus = 0x04;  // ELSI
constexpr uint8_t kIerModemStatus = 0x08; // EDSSI
constexpr uint8_t kIerMask = 0x0f;

constexpr uint8_t kIirNoInterrupt = 0x01;
constexpr uint8_t kIirLineStatus = 0x06;
constexpr uint8_t kIirRxData = 0x04;
constexpr uint8_t kIirThrEmpty = 0x02;
constexpr uint8_t kIirModemStatus = 0x00;
constexpr uint8_t kIirFifoEnabled = 0xc0;

constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearRx = 0x02;

constexpr uint8_t kLcrDlab = 0x80;

constexpr uint8_t kMcrDtr = 0x01;
constexpr uint8_t kMcrRts = 0x02;
constexpr uint8_t kMcrOut1 = 0x04;
constexpr uint8_t kMcrOut2 = 0x08;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kMcrMask = 0x1f;

constexpr uint8_t kLsrDataReady = 0x01;
constexpr uint8_t kLsrOverrun = 0x02;
constexpr uint8_t kLsrThrEmpty = 0x20;
constexpr uint8_t kLsrTxEmpty = 0x40;

constexpr uint8_t kMsrDeltaCts = 0x01;
constexpr uint8_t kMsrDeltaDsr = 0x02;
constexpr uint8_t kMsrTrailingRi = 0x04;
constexpr uint8_t kMsrDeltaDcd = 0x08;
constexpr uint8_t kMsrCts = 0x10;
constexpr uint8_t kMsrDsr = 0x20;
constexpr uint8_t kMsrRi = 0x40;
constexpr uint8_t kMsrDcd = 0x80;
constexpr uint8_t kMsrDeltaMask = 0x0f;
constexpr uint8_t kMsrLineMask = 0xf0;

}  // namespace

Serial::Serial(std::shared_ptr<IrqLine> irq, OutputSink sink, size_t rx_capacity)
    : irq_(std::move(irq)), sink_(std::move(sink)), rx_capacity_(rx_capacity) {
    if (!sink_) {
        throw Error("serial: an output sink is required");
    }
    if (rx_capacity_ == 0) {
        throw Error("serial: the RX buffer capacity must not be zero");
    }
}

void Serial::set_input_ready_callback(std::function<void()> callback) {
    std::lock_guard lock(mutex_);
    input_ready_callback_ = std::move(callback);
}

template <typename Op>
auto Serial::with_state(Op&& op) {
    Effects fx;
    std::function<void()> input_ready;
    std::unique_lock lock(mutex_);
    const bool was_pending = interrupt_pending_locked();
    auto result = op(fx);
    fx.raise_irq = !was_pending && interrupt_pending_locked();
    if (fx.input_ready) {
        input_ready = input_ready_callback_;
    }
    lock.unlock();

    if (fx.raise_irq && irq_) {
        irq_->trigger();
    }
    if (fx.transmit) {
        emit_output(fx);
    }
    if (input_ready) {
        input_ready();
    }
    return result;
}

void Serial::emit_output(const Effects& fx) {
    std::unique_lock lock(output_mutex_);
    output_turn_.wait(lock, [&] { return output_serving_ == fx.tx_ticket; });
    // Pass the turn on even if the sink throws, or every later writer would wait forever.
    struct NextTurn {
        Serial* self;
        ~NextTurn() {
            ++self->output_serving_;
            self->output_turn_.notify_all();
        }
    } next{this};
    sink_(std::span<const uint8_t>(&fx.tx_byte, 1));
}

void Serial::read(uint64_t offset, std::span<uint8_t> data) {
    // The UART is byte-wide: a wider access reads consecutive registers.
    for (size_t i = 0; i < data.size(); ++i) {
        data[i] = with_state([&](Effects& fx) { return read_register(offset + i, fx); });
    }
}

void Serial::write(uint64_t offset, std::span<const uint8_t> data) {
    for (size_t i = 0; i < data.size(); ++i) {
        with_state([&](Effects& fx) {
            write_register(offset + i, data[i], fx);
            return 0;
        });
    }
}

size_t Serial::enqueue_input(std::span<const uint8_t> bytes) {
    return with_state([&](Effects&) {
        const size_t room = rx_capacity_ - rx_.size();
        const size_t accepted = std::min(room, bytes.size());
        rx_.insert(rx_.end(), bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(accepted));
        if (accepted < bytes.size()) {
            input_refused_ = true;
        }
        return accepted;
    });
}

bool Serial::wants_input() const {
    return input_space() > 0;
}

size_t Serial::input_space() const {
    std::lock_guard lock(mutex_);
    return rx_capacity_ - rx_.size();
}

uint8_t Serial::read_register(uint64_t reg, Effects& fx) {
    const bool dlab = (lcr_ & kLcrDlab) != 0;
    switch (reg) {
        case kRegData:
            return dlab ? dll_ : pop_rx_locked(fx);
        case kRegIer:
            return dlab ? dlm_ : ier_;
        case kRegIir: {
            const uint8_t iir = interrupt_id_locked();
            // Reading IIR acknowledges a THR-empty interrupt when that is what it reports.
            if ((iir & 0x0f) == kIirThrEmpty) {
                thre_pending_ = false;
            }
            return iir;
        }
        case kRegLcr:
            return lcr_;
        case kRegMcr:
            return mcr_;
        case kRegLsr: {
            uint8_t lsr = kLsrThrEmpty | kLsrTxEmpty;  // transmission is instantaneous
            if (!rx_.empty()) {
                lsr |= kLsrDataReady;
            }
            if (overrun_) {
                lsr |= kLsrOverrun;
                overrun_ = false;
            }
            return lsr;
        }
        case kRegMsr: {
            const uint8_t msr = msr_;
            msr_ &= kMsrLineMask;
            return msr;
        }
        case kRegScr:
            return scr_;
        default:
            return 0xff;
    }
}

void Serial::write_register(uint64_t reg, uint8_t value, Effects& fx) {
    const bool dlab = (lcr_ & kLcrDlab) != 0;
    switch (reg) {
        case kRegData:
            if (dlab) {
                dll_ = value;
            } else {
                transmit_locked(value, fx);
            }
            break;
        case kRegIer:
            if (dlab) {
                dlm_ = value;
            } else {
                const uint8_t old = ier_;
                ier_ = value & kIerMask;
                // Enabling ETBEI with THR empty (always, here) latches a THR-empty interrupt.
                if ((ier_ & kIerThrEmpty) && !(old & kIerThrEmpty)) {
                    thre_pending_ = true;
                } else if (!(ier_ & kIerThrEmpty)) {
                    thre_pending_ = false;
                }
            }
            break;
        case kRegIir: {  // FCR
            const bool enable = (value & kFcrEnable) != 0;
            if (enable != fifo_enabled_) {
                clear_rx_locked(fx);  // toggling the FIFO mode resets the FIFOs
            }
            fifo_enabled_ = enable;
            if (enable && (value & kFcrClearRx)) {
                clear_rx_locked(fx);
            }
            // Clearing the TX FIFO (bit 2) has nothing to do: bytes leave on the THR write.
            break;
        }
        case kRegLcr:
            lcr_ = value;
            break;
        case kRegMcr:
            write_mcr_locked(value & kMcrMask);
            break;
        case kRegScr:
            scr_ = value;
            break;
        default:  // LSR and MSR are read-only
            break;
    }
}

void Serial::transmit_locked(uint8_t value, Effects& fx) {
    if (mcr_ & kMcrLoop) {
        if (rx_.size() < rx_capacity_) {
            rx_.push_back(value);
        } else {
            overrun_ = true;
        }
    } else {
        fx.transmit = true;
        fx.tx_byte = value;
        fx.tx_ticket = output_next_ticket_++;
    }
    // The byte is gone at once: THR is empty again.
    if (ier_ & kIerThrEmpty) {
        thre_pending_ = true;
    }
}

uint8_t Serial::modem_status_lines_locked() const {
    if (!(mcr_ & kMcrLoop)) {
        return kMsrCts | kMsrDsr | kMsrDcd;  // a null-modem peer that is always ready
    }
    // Loopback: the modem control outputs are wired back to the status inputs.
    uint8_t lines = 0;
    if (mcr_ & kMcrRts) lines |= kMsrCts;
    if (mcr_ & kMcrDtr) lines |= kMsrDsr;
    if (mcr_ & kMcrOut1) lines |= kMsrRi;
    if (mcr_ & kMcrOut2) lines |= kMsrDcd;
    return lines;
}

void Serial::write_mcr_locked(uint8_t value) {
    const uint8_t old_lines = msr_ & kMsrLineMask;
    mcr_ = value;
    const uint8_t new_lines = modem_status_lines_locked();
    const uint8_t changed = old_lines ^ new_lines;
    uint8_t deltas = 0;
    if (changed & kMsrCts) deltas |= kMsrDeltaCts;
    if (changed & kMsrDsr) deltas |= kMsrDeltaDsr;
    if ((old_lines & kMsrRi) && !(new_lines & kMsrRi)) deltas |= kMsrTrailingRi;
    if (changed & kMsrDcd) deltas |= kMsrDeltaDcd;
    msr_ = static_cast<uint8_t>(new_lines | (msr_ & kMsrDeltaMask) | deltas);
}

void Serial::clear_rx_locked(Effects& fx) {
    rx_.clear();
    note_rx_drained_locked(fx);
}

uint8_t Serial::pop_rx_locked(Effects& fx) {
    if (rx_.empty()) {
        return last_rx_;  // RBR keeps the last character
    }
    last_rx_ = rx_.front();
    rx_.pop_front();
    note_rx_drained_locked(fx);
    return last_rx_;
}

void Serial::note_rx_drained_locked(Effects& fx) {
    if (input_refused_ && rx_.size() <= rx_capacity_ / 2) {
        input_refused_ = false;
        fx.input_ready = true;
    }
}

uint8_t Serial::interrupt_id_locked() const {
    uint8_t id = kIirNoInterrupt;
    if ((ier_ & kIerLineStatus) && overrun_) {
        id = kIirLineStatus;
    } else if ((ier_ & kIerRxData) && !rx_.empty()) {
        id = kIirRxData;
    } else if ((ier_ & kIerThrEmpty) && thre_pending_) {
        id = kIirThrEmpty;
    } else if ((ier_ & kIerModemStatus) && (msr_ & kMsrDeltaMask)) {
        id = kIirModemStatus;
    }
    return fifo_enabled_ ? static_cast<uint8_t>(id | kIirFifoEnabled) : id;
}

// ---- File descriptor sinks ----

namespace {

struct FdSinkState {
    int fd;
    FileDescriptor owned;  // invalid when the fd is borrowed
    std::atomic<bool> broken{false};
};

void write_to_fd(FdSinkState& state, std::span<const uint8_t> bytes) {
    if (state.broken.load(std::memory_order_relaxed)) {
        return;
    }
    if (write_all(state.fd, bytes, WhenFull::Wait)) {
        return;
    }
    const int err = errno;
    log::error("serial output: write to fd {} failed: {} (errno {}); guest output is dropped from now on", state.fd,
               std::strerror(err), err);
    state.broken = true;
}

Serial::OutputSink make_fd_sink(std::shared_ptr<FdSinkState> state) {
    return [state = std::move(state)](std::span<const uint8_t> bytes) { write_to_fd(*state, bytes); };
}

}  // namespace

Serial::OutputSink fd_output_sink(int fd) {
    auto state = std::make_shared<FdSinkState>();
    state->fd = fd;
    return make_fd_sink(std::move(state));
}

Serial::OutputSink fd_output_sink(FileDescriptor fd) {
    auto state = std::make_shared<FdSinkState>();
    state->fd = fd.get();
    state->owned = std::move(fd);
    return make_fd_sink(std::move(state));
}

namespace {
constexpr uint32_t kSerialStateVersion = 1;
}

void Serial::save_state(StateWriter& w) const {
    std::lock_guard lock(mutex_);
    w.put<uint32_t>(kSerialStateVersion);
    const std::vector<uint8_t> rx(rx_.begin(), rx_.end());
    w.put_blob(rx);
    for (uint8_t reg : {last_rx_, ier_, lcr_, mcr_, msr_, scr_, dll_, dlm_}) w.put(reg);
    w.put_bool(fifo_enabled_);
    w.put_bool(overrun_);
    w.put_bool(thre_pending_);
}

void Serial::restore_state(StateReader& r) {
    r.get_version(kSerialStateVersion);
    const auto rx = r.get_blob("rx");
    if (rx.size() > rx_capacity_) {
        r.fail("rx", fmt::format("{} bytes do not fit the {}-byte RX buffer", rx.size(), rx_capacity_));
    }
    const auto last_rx = r.get<uint8_t>("last_rx");
    const auto ier = r.get<uint8_t>("ier");
    if ((ier & ~kIerMask) != 0) r.fail("ier", fmt::format("{:#04x} has reserved bits set", ier));
    const auto lcr = r.get<uint8_t>("lcr");
    const auto mcr = r.get<uint8_t>("mcr");
    if ((mcr & ~kMcrMask) != 0) r.fail("mcr", fmt::format("{:#04x} has reserved bits set", mcr));
    const auto msr = r.get<uint8_t>("msr");
    const auto scr = r.get<uint8_t>("scr");
    const auto dll = r.get<uint8_t>("dll");
    const auto dlm = r.get<uint8_t>("dlm");
    const bool fifo_enabled = r.get_bool("fifo_enabled");
    const bool overrun = r.get_bool("overrun");
    const bool thre_pending = r.get_bool("thre_pending");

    std::unique_lock lock(mutex_);
    rx_.assign(rx.begin(), rx.end());
    last_rx_ = last_rx;
    ier_ = ier;
    lcr_ = lcr;
    mcr_ = mcr;
    msr_ = msr;
    scr_ = scr;
    dll_ = dll;
    dlm_ = dlm;
    fifo_enabled_ = fifo_enabled;
    overrun_ = overrun;
    thre_pending_ = thre_pending;
    input_refused_ = false;
    const bool pending = interrupt_pending_locked();
    lock.unlock();
    // The edge of a pending interrupt may not be in the saved irqchip: KVM injects an IOAPIC
    // irqfd's edge from a kernel work item, which can run after the snapshot read the irqchip.
    // Lost, the driver would wait for ever (the UART raises only on a new condition); raised
    // again, it is at worst one spurious interrupt, which the driver's IIR read tells apart.
    if (pending && irq_) irq_->trigger();
}

}  // namespace embervm::devices
