// Minimal i8042 keyboard controller at ports 0x60-0x64: enough for Linux to probe it and,
// above all, for the guest's `reboot` (reset pulse through command 0xFE or the output port).
//
// There is no real keyboard behind it and no AUX (mouse) port: keyboard commands are
// acknowledged, AUX traffic is dropped. A Linux guest is best started with
// `i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd` so that it does not wait for a mouse.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>

#include "devices/irq.h"
#include "vmm/bus.h"

namespace embervm::devices {

class I8042 : public vmm::BusDevice {
public:
    // Inserted at layout::kI8042Port: offset 0 = data port 0x60, offset 1 = system control
    // port B 0x61 (reads 0, writes ignored; KVM's in-kernel PIT normally claims it first),
    // offsets 2 and 3 unused, offset 4 = command/status port 0x64.
    static constexpr uint64_t kSize = 5;

    // `on_reset` runs on the vCPU thread when the guest pulses the CPU reset line; it must not
    // call back into this device. `kbd_irq` (IRQ 1) may be null.
    explicit I8042(std::function<void()> on_reset, std::shared_ptr<IrqLine> kbd_irq = nullptr);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    // What a data-port write is for, when a controller command asked for a parameter.
    enum class Pending { None, CommandByte, OutputPort, KbdOutputBuffer, Discard, KbdParameter };

    struct Byte {
        uint8_t value;
        bool from_keyboard;  // keyboard data raises IRQ 1; controller replies are polled
    };
    struct Effects {
        bool raise_irq = false;
        bool reset = false;
    };

    uint8_t read_port(uint64_t offset, Effects& fx);
    void write_port(uint64_t offset, uint8_t value, Effects& fx);
    void controller_command(uint8_t command, Effects& fx);
    void data_write(uint8_t value, Effects& fx);
    void keyboard_command(uint8_t command, Effects& fx);
    void write_output_port(uint8_t value, Effects& fx);
    void push_output(uint8_t value, bool from_keyboard, Effects& fx);
    // Raises IRQ 1 if the byte now at the head of the output buffer calls for it.
    void update_irq(Effects& fx) const;
    uint8_t status() const;

    const std::function<void()> on_reset_;
    const std::shared_ptr<IrqLine> kbd_irq_;

    std::mutex mutex_;
    std::deque<Byte> output_;   // output buffer; the head is what port 0x60 reads
    uint8_t last_data_ = 0;     // port 0x60 repeats the last byte when the buffer is empty
    uint8_t command_byte_;
    uint8_t output_port_;
    Pending pending_ = Pending::None;
    bool last_write_was_command_ = false;  // status bit 3
};

}  // namespace embervm::devices
