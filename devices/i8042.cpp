// i8042 keyboard controller: controller commands, command byte, a keyboard that says ACK and
// can send Ctrl+Alt+Del.
#include "devices/i8042.h"

#include <array>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vmm/sys/log.h"

namespace embervm::devices {

namespace {

constexpr uint64_t kDataPort = 0;      // 0x60
constexpr uint64_t kControlPortB = 1;  // 0x61
constexpr uint64_t kCommandPort = 4;   // 0x64

// Status register.
constexpr uint8_t kStatusOutputFull = 0x01;
constexpr uint8_t kStatusSystem = 0x04;
constexpr uint8_t kStatusCommand = 0x08;   // last write went to the command port
constexpr uint8_t kStatusUnlocked = 0x10;  // keyboard not inhibited

// Command byte.
constexpr uint8_t kCbKbdInterrupt = 0x01;
constexpr uint8_t kCbSystem = 0x04;
constexpr uint8_t kCbKbdDisabled = 0x10;
constexpr uint8_t kCbAuxDisabled = 0x20;
constexpr uint8_t kCbTranslate = 0x40;
constexpr uint8_t kDefaultCommandByte = kCbKbdInterrupt | kCbSystem | kCbAuxDisabled | kCbTranslate;

// Output port: bit 0 is the CPU reset line (active low), bit 1 the A20 gate.
constexpr uint8_t kOutputPortReset = 0x01;
constexpr uint8_t kDefaultOutputPort = 0x03;

// Controller commands (port 0x64).
constexpr uint8_t kCmdReadCommandByte = 0x20;
constexpr uint8_t kCmdWriteCommandByte = 0x60;
constexpr uint8_t kCmdAuxDisable = 0xa7;
constexpr uint8_t kCmdAuxEnable = 0xa8;
constexpr uint8_t kCmdSelfTest = 0xaa;
constexpr uint8_t kCmdKbdInterfaceTest = 0xab;
constexpr uint8_t kCmdKbdDisable = 0xad;
constexpr uint8_t kCmdKbdEnable = 0xae;
constexpr uint8_t kCmdReadOutputPort = 0xd0;
constexpr uint8_t kCmdWriteOutputPort = 0xd1;
constexpr uint8_t kCmdWriteKbdOutput = 0xd2;
constexpr uint8_t kCmdWriteAuxOutput = 0xd3;
constexpr uint8_t kCmdWriteToAux = 0xd4;

constexpr uint8_t kSelfTestPassed = 0x55;
constexpr uint8_t kInterfaceTestPassed = 0x00;

// Keyboard commands (port 0x60) and replies.
constexpr uint8_t kKbdSetLeds = 0xed;
constexpr uint8_t kKbdEcho = 0xee;
constexpr uint8_t kKbdScancodeSet = 0xf0;
constexpr uint8_t kKbdGetId = 0xf2;
constexpr uint8_t kKbdSetTypematic = 0xf3;
constexpr uint8_t kKbdEnableScanning = 0xf4;
constexpr uint8_t kKbdDisableScanning = 0xf5;
constexpr uint8_t kKbdSetDefaults = 0xf6;
constexpr uint8_t kKbdReset = 0xff;
constexpr uint8_t kKbdAck = 0xfa;
constexpr uint8_t kKbdSelfTestPassed = 0xaa;
constexpr uint8_t kKbdIdFirst = 0xab;  // MF2 keyboard
constexpr uint8_t kKbdIdSecond = 0x83;

// A guest that writes keyboard commands without reading replies cannot grow the buffer.
constexpr size_t kOutputBufferMax = 16;

// Scancodes (set 2, what the keyboard sends). 0xE0 prefixes the extended keys, 0xF0 a release.
constexpr uint8_t kSet2Extended = 0xe0;
constexpr uint8_t kSet2Release = 0xf0;
constexpr uint8_t kSet2LeftCtrl = 0x14;
constexpr uint8_t kSet2LeftAlt = 0x11;
constexpr uint8_t kSet2Delete = 0x71;  // after 0xE0

// Ctrl, Alt, Del pressed, then released in the opposite order.
constexpr std::array<uint8_t, 11> kCtrlAltDel = {
    kSet2LeftCtrl, kSet2LeftAlt, kSet2Extended, kSet2Delete,
    kSet2Extended, kSet2Release, kSet2Delete, kSet2Release, kSet2LeftAlt, kSet2Release, kSet2LeftCtrl,
};

// The keyboard holds at most this many scancodes the controller has not taken yet.
constexpr size_t kKeyboardBufferMax = 2 * kCtrlAltDel.size();

// The controller's set 2 -> set 1 translation for the keys this keyboard has; a set 1 release
// is the make code with bit 7 set (instead of the 0xF0 prefix). 0xE0 passes unchanged.
uint8_t set2_to_set1(uint8_t code) {
    switch (code) {
        case kSet2LeftCtrl: return 0x1d;
        case kSet2LeftAlt: return 0x38;
        case kSet2Delete: return 0x53;
        default: return code;
    }
}

}  // namespace

I8042::I8042(std::function<void()> on_reset, std::shared_ptr<IrqLine> kbd_irq)
    : on_reset_(std::move(on_reset)),
      kbd_irq_(std::move(kbd_irq)),
      command_byte_(kDefaultCommandByte),
      output_port_(kDefaultOutputPort) {}

void I8042::read(uint64_t offset, std::span<uint8_t> data) {
    Effects fx;
    {
        std::lock_guard lock(mutex_);
        for (size_t i = 0; i < data.size(); ++i) {
            data[i] = read_port(offset + i, fx);
            deliver_scancode(fx);
        }
    }
    apply(fx);
}

void I8042::write(uint64_t offset, std::span<const uint8_t> data) {
    Effects fx;
    {
        std::lock_guard lock(mutex_);
        for (size_t i = 0; i < data.size(); ++i) {
            write_port(offset + i, data[i], fx);
            deliver_scancode(fx);
        }
    }
    apply(fx);
}

bool I8042::send_ctrl_alt_del() {
    Effects fx;
    {
        std::lock_guard lock(mutex_);
        // All or nothing: a press without its release would leave the guest with a stuck key.
        if (!scanning_ || keyboard_buffer_.size() + kCtrlAltDel.size() > kKeyboardBufferMax) {
            return false;
        }
        keyboard_buffer_.insert(keyboard_buffer_.end(), kCtrlAltDel.begin(), kCtrlAltDel.end());
        deliver_scancode(fx);
    }
    apply(fx);
    return true;
}

// Runs outside the lock: the IRQ line and the reset callback may take locks of their own.
void I8042::apply(const Effects& fx) {
    if (fx.raise_irq && kbd_irq_) {
        kbd_irq_->trigger();
    }
    if (fx.reset && on_reset_) {
        log::info("i8042: guest pulsed the reset line");
        on_reset_();
    }
}

uint8_t I8042::read_port(uint64_t offset, Effects& fx) {
    switch (offset) {
        case kDataPort:
            if (!output_.empty()) {
                last_data_ = output_.front().value;
                output_.pop_front();
                update_irq(fx);
            }
            return last_data_;
        case kControlPortB:
            return 0;
        case kCommandPort:
            return status();
        default:
            return 0xff;
    }
}

void I8042::write_port(uint64_t offset, uint8_t value, Effects& fx) {
    switch (offset) {
        case kDataPort:
            last_write_was_command_ = false;
            data_write(value, fx);
            break;
        case kCommandPort:
            last_write_was_command_ = true;
            controller_command(value, fx);
            break;
        default:  // port B and the unused ports: ignored
            break;
    }
}

uint8_t I8042::status() const {
    uint8_t s = kStatusUnlocked;
    if (!output_.empty()) s |= kStatusOutputFull;
    if (command_byte_ & kCbSystem) s |= kStatusSystem;
    if (last_write_was_command_) s |= kStatusCommand;
    return s;
}

void I8042::controller_command(uint8_t command, Effects& fx) {
    pending_ = Pending::None;
    switch (command) {
        case kCmdReadCommandByte:
            push_output(command_byte_, false, fx);
            break;
        case kCmdWriteCommandByte:
            pending_ = Pending::CommandByte;
            break;
        case kCmdAuxDisable:
            command_byte_ |= kCbAuxDisabled;
            break;
        case kCmdAuxEnable:
            command_byte_ &= static_cast<uint8_t>(~kCbAuxDisabled);
            break;
        case kCmdSelfTest:
            command_byte_ |= kCbSystem;
            push_output(kSelfTestPassed, false, fx);
            break;
        case kCmdKbdInterfaceTest:
            push_output(kInterfaceTestPassed, false, fx);
            break;
        case kCmdKbdDisable:
            command_byte_ |= kCbKbdDisabled;
            break;
        case kCmdKbdEnable:
            command_byte_ &= static_cast<uint8_t>(~kCbKbdDisabled);
            break;
        case kCmdReadOutputPort:
            push_output(output_port_, false, fx);
            break;
        case kCmdWriteOutputPort:
            pending_ = Pending::OutputPort;
            break;
        case kCmdWriteKbdOutput:
            pending_ = Pending::KbdOutputBuffer;
            break;
        case kCmdWriteAuxOutput:
        case kCmdWriteToAux:
            pending_ = Pending::Discard;  // no AUX device
            break;
        default:
            if ((command & 0xf0) == 0xf0) {
                // 0xF0-0xFF pulse the output-port lines whose bit is clear; bit 0 is reset.
                if (!(command & kOutputPortReset)) {
                    fx.reset = true;
                }
            } else if (command >= 0x61 && command <= 0x7f) {
                pending_ = Pending::Discard;  // write to controller RAM
            } else if (command >= 0x21 && command <= 0x3f) {
                push_output(0, false, fx);  // read controller RAM
            } else {
                log::debug("i8042: ignoring controller command {:#04x}", command);
            }
            break;
    }
}

void I8042::data_write(uint8_t value, Effects& fx) {
    const Pending pending = std::exchange(pending_, Pending::None);
    switch (pending) {
        case Pending::CommandByte: {
            const bool was_enabled = command_byte_ & kCbKbdInterrupt;
            command_byte_ = value;
            if (!was_enabled) {
                update_irq(fx);
            }
            break;
        }
        case Pending::OutputPort:
            write_output_port(value, fx);
            break;
        case Pending::KbdOutputBuffer:
            push_output(value, true, fx);
            break;
        case Pending::Discard:
            break;
        case Pending::KbdParameter:
            push_output(kKbdAck, true, fx);
            break;
        case Pending::None:
            keyboard_command(value, fx);
            break;
    }
}

void I8042::keyboard_command(uint8_t command, Effects& fx) {
    switch (command) {
        case kKbdReset:
            keyboard_buffer_.clear();
            scanning_ = true;
            push_output(kKbdAck, true, fx);
            push_output(kKbdSelfTestPassed, true, fx);
            break;
        case kKbdGetId:
            push_output(kKbdAck, true, fx);
            push_output(kKbdIdFirst, true, fx);
            push_output(kKbdIdSecond, true, fx);
            break;
        case kKbdEcho:
            push_output(kKbdEcho, true, fx);
            break;
        case kKbdSetLeds:
        case kKbdScancodeSet:
        case kKbdSetTypematic:
            push_output(kKbdAck, true, fx);
            pending_ = Pending::KbdParameter;
            break;
        case kKbdEnableScanning:
        case kKbdDisableScanning:
        case kKbdSetDefaults:
            // All three clear the keyboard's buffer; 0xF5 stops reporting key strokes until
            // 0xF4 (or a reset) starts it again, 0xF6 leaves scanning as it was.
            keyboard_buffer_.clear();
            if (command != kKbdSetDefaults) {
                scanning_ = command == kKbdEnableScanning;
            }
            push_output(kKbdAck, true, fx);
            break;
        default:  // typematic/make/break modes, resend, ...: acknowledged
            push_output(kKbdAck, true, fx);
            break;
    }
}

void I8042::write_output_port(uint8_t value, Effects& fx) {
    output_port_ = value;
    if (!(value & kOutputPortReset)) {
        fx.reset = true;
    }
}

void I8042::push_output(uint8_t value, bool from_keyboard, Effects& fx) {
    if (output_.size() >= kOutputBufferMax) {
        return;
    }
    output_.push_back(Byte{value, from_keyboard});
    if (output_.size() == 1) {
        update_irq(fx);
    }
}

void I8042::deliver_scancode(Effects& fx) {
    if (keyboard_buffer_.empty() || !output_.empty() || (command_byte_ & kCbKbdDisabled)) {
        return;
    }
    uint8_t code = keyboard_buffer_.front();
    keyboard_buffer_.pop_front();
    if (command_byte_ & kCbTranslate) {
        if (code == kSet2Release) {
            // The translated release is one byte: the next code with bit 7 set. The keyboard
            // buffer only ever holds whole key strokes, so the code after 0xF0 is there.
            if (keyboard_buffer_.empty()) {
                return;
            }
            code = static_cast<uint8_t>(set2_to_set1(keyboard_buffer_.front()) | 0x80);
            keyboard_buffer_.pop_front();
        } else {
            code = set2_to_set1(code);
        }
    }
    push_output(code, true, fx);
}

void I8042::update_irq(Effects& fx) const {
    if (!output_.empty() && output_.front().from_keyboard && (command_byte_ & kCbKbdInterrupt)) {
        fx.raise_irq = true;
    }
}

namespace {
constexpr uint32_t kI8042StateVersion = 1;
}

void I8042::save_state(StateWriter& w) {
    std::lock_guard lock(mutex_);
    w.put<uint32_t>(kI8042StateVersion);
    w.put<uint32_t>(static_cast<uint32_t>(output_.size()));
    for (const Byte& b : output_) {
        w.put(b.value);
        w.put_bool(b.from_keyboard);
    }
    w.put(last_data_);
    w.put(command_byte_);
    w.put(output_port_);
    w.put<uint8_t>(static_cast<uint8_t>(pending_));
    w.put_bool(last_write_was_command_);
    w.put_blob(std::vector<uint8_t>(keyboard_buffer_.begin(), keyboard_buffer_.end()));
    w.put_bool(scanning_);
}

void I8042::restore_state(StateReader& r) {
    r.get_version(kI8042StateVersion);
    const auto count = r.get<uint32_t>("output");
    if (count > kOutputBufferMax) {
        r.fail("output", fmt::format("{} bytes, the output buffer holds {}", count, kOutputBufferMax));
    }
    std::deque<Byte> output;
    for (uint32_t i = 0; i < count; i++) {
        const auto value = r.get<uint8_t>("output");
        output.push_back(Byte{value, r.get_bool("output")});
    }
    const auto last_data = r.get<uint8_t>("last_data");
    const auto command_byte = r.get<uint8_t>("command_byte");
    const auto output_port = r.get<uint8_t>("output_port");
    const auto pending = r.get<uint8_t>("pending");
    if (pending > static_cast<uint8_t>(Pending::KbdParameter)) {
        r.fail("pending", fmt::format("{} is not a pending command", pending));
    }
    const bool last_write_was_command = r.get_bool("last_write_was_command");
    const auto keyboard = r.get_blob("keyboard_buffer");
    if (keyboard.size() > kKeyboardBufferMax) {
        r.fail("keyboard_buffer", fmt::format("{} bytes, the keyboard holds {}", keyboard.size(), kKeyboardBufferMax));
    }
    const bool scanning = r.get_bool("scanning");

    std::unique_lock lock(mutex_);
    output_ = std::move(output);
    last_data_ = last_data;
    command_byte_ = command_byte;
    output_port_ = output_port;
    pending_ = static_cast<Pending>(pending);
    last_write_was_command_ = last_write_was_command;
    keyboard_buffer_.assign(keyboard.begin(), keyboard.end());
    scanning_ = scanning;
    Effects fx;
    update_irq(fx);
    lock.unlock();
    // As the UART's: the saved irqchip may lack the edge of a pending keyboard interrupt.
    if (fx.raise_irq && kbd_irq_) kbd_irq_->trigger();
}

}  // namespace embervm::devices
