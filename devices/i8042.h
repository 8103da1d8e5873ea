// Minimal i8042 keyboard controller at ports 0x60-0x64: enough for Linux to probe it and,
// above all, for the guest's `reboot` (reset pulse through command 0xFE or the output port).
//
// The keyboard behind it has no keys of its own: keyboard commands are acknowledged, and the
// VMM can press Ctrl+Alt+Del on it (send_ctrl_alt_del(), Firecracker's SendCtrlAltDel), which a
// Linux guest with the atkbd driver turns into an orderly reboot. There is no AUX (mouse) port:
// AUX traffic is dropped. A Linux guest is best started with
// `i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd` so that it does not wait for a mouse.
//
// Scancodes: the keyboard sends set 2; with the command byte's translation bit (XLATE, bit 6,
// set at power-on) the controller translates each byte to set 1 as it moves into the output
// buffer, as an 8042 does. The guest reads them one byte at a time: the next byte moves into
// the output buffer (status OBF, IRQ 1 when the command byte enables it) only once the guest
// has read the previous one.
//
// A disabled keyboard: while the controller inhibits the keyboard interface (command byte bit 4,
// command 0xAD) the keyboard holds its scancodes and sends them once the interface is enabled
// again (0xAE or a command-byte write), as a real keyboard with its clock held low does. While
// the keyboard itself has scanning disabled (keyboard command 0xF5, until 0xF4 or reset 0xFF)
// key presses are not reported: send_ctrl_alt_del() drops them. Commands 0xF4, 0xF5, 0xF6
// and 0xFF clear the keyboard's held scancodes, as they clear a real keyboard's buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>

#include "devices/irq.h"
#include "devices/bus.h"
#include "vmm/sys/state_stream.h"

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

    // Presses Ctrl, Alt and Del and releases them again (any thread). Returns false if the
    // keyboard dropped the key strokes: scanning disabled by the guest, or the keyboard's
    // buffer still holds earlier key strokes the guest has not read.
    bool send_ctrl_alt_del();

    // Snapshots: command byte, output port, the output buffer, a command waiting for its
    // parameter and the keyboard's held scancodes. Restore validates every field (StateError
    // naming it), changes nothing when one is bad and raises no interrupt (the irqchip's saved
    // state has any the guest had not taken).
    void save_state(StateWriter& w);
    void restore_state(StateReader& r);

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
    // Moves the keyboard's next scancode into the output buffer if that is empty and the
    // keyboard interface is enabled, translated to set 1 under XLATE.
    void deliver_scancode(Effects& fx);
    void apply(const Effects& fx);
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
    // The keyboard's side: set 2 scancodes not yet sent to the controller, and whether the
    // keyboard scans (reports key strokes) at all.
    std::deque<uint8_t> keyboard_buffer_;
    bool scanning_ = true;
};

}  // namespace embervm::devices
