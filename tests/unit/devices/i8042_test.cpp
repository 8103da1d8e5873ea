// Tests for devices/i8042: controller commands, command byte, status, reset, keyboard ACKs,
// Ctrl+Alt+Del injection.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "devices/i8042.h"
#include "tests/unit/devices/fakes.h"

// Everything of this file in a namespace of its own: the sanitizer build compiles the unit
// tests as a unity build (several files in one translation unit).
namespace unit_i8042_test {

using embervm::devices::I8042;
using embervm::devices::testing::CountingIrq;
using embervm::devices::testing::read8;
using embervm::devices::testing::write8;

namespace {

constexpr uint64_t kData = 0, kPortB = 1, kCommand = 4;
constexpr uint8_t kOutputFull = 0x01, kSystem = 0x04, kLastWasCommand = 0x08;

struct Controller {
    Controller() : irq(std::make_shared<CountingIrq>()), kbc([this] { ++resets; }, irq) {}

    uint8_t status() { return read8(kbc, kCommand); }
    uint8_t data() { return read8(kbc, kData); }
    void command(uint8_t c) { write8(kbc, kCommand, c); }
    void send(uint8_t d) { write8(kbc, kData, d); }
    // Reads every pending output byte.
    std::vector<uint8_t> drain() {
        std::vector<uint8_t> out;
        while (status() & kOutputFull) {
            out.push_back(data());
        }
        return out;
    }

    std::shared_ptr<CountingIrq> irq;
    int resets = 0;
    I8042 kbc;
};

}  // namespace

TEST_CASE("i8042: command 0xFE pulses the reset line", "[devices][i8042]") {
    Controller c;
    c.command(0xfe);
    CHECK(c.resets == 1);
}

TEST_CASE("i8042: clearing bit 0 of the output port resets", "[devices][i8042]") {
    Controller c;
    c.command(0xd0);
    CHECK(c.drain() == std::vector<uint8_t>{0x03});
    c.command(0xd1);
    c.send(0x03);  // reset line stays high
    CHECK(c.resets == 0);
    c.command(0xd0);
    CHECK(c.drain() == std::vector<uint8_t>{0x03});
    c.command(0xd1);
    c.send(0x02);
    CHECK(c.resets == 1);
}

TEST_CASE("i8042: pulse commands other than reset do nothing", "[devices][i8042]") {
    Controller c;
    c.command(0xff);
    c.command(0xfd);
    CHECK(c.resets == 0);
    CHECK(c.drain().empty());
}

TEST_CASE("i8042: self-test and interface test replies", "[devices][i8042]") {
    Controller c;
    c.command(0xaa);
    CHECK((c.status() & kOutputFull) != 0);
    CHECK(c.data() == 0x55);
    CHECK((c.status() & kOutputFull) == 0);
    c.command(0xab);
    CHECK(c.drain() == std::vector<uint8_t>{0x00});
    CHECK(c.irq->count() == 0);  // controller replies are polled, not interrupts
}

TEST_CASE("i8042: command byte round trip and enable/disable commands", "[devices][i8042]") {
    Controller c;
    c.command(0x20);
    const auto initial = c.drain();
    REQUIRE(initial.size() == 1);
    CHECK((initial[0] & 0x01) != 0);  // keyboard interrupt enabled
    CHECK((initial[0] & 0x04) != 0);  // system flag

    c.command(0x60);
    c.send(0x44);
    CHECK(c.resets == 0);
    CHECK(c.drain().empty());  // a command-byte write is not a keyboard command: no ACK
    c.command(0x20);
    CHECK(c.drain() == std::vector<uint8_t>{0x44});

    c.command(0xad);
    c.command(0xa7);
    c.command(0x20);
    CHECK(c.drain() == std::vector<uint8_t>{0x74});
    c.command(0xae);
    c.command(0xa8);
    c.command(0x20);
    CHECK(c.drain() == std::vector<uint8_t>{0x44});
}

TEST_CASE("i8042: status register bits", "[devices][i8042]") {
    Controller c;
    CHECK((c.status() & kOutputFull) == 0);
    CHECK((c.status() & kSystem) != 0);
    c.command(0x20);
    CHECK((c.status() & (kOutputFull | kLastWasCommand)) == (kOutputFull | kLastWasCommand));
    c.data();
    c.send(0xf4);
    CHECK((c.status() & kLastWasCommand) == 0);
    CHECK((c.status() & kOutputFull) != 0);
    c.data();
    // The system flag follows the command byte.
    c.command(0x60);
    c.send(0x01);
    CHECK((c.status() & kSystem) == 0);
    c.command(0xaa);  // self-test sets it again
    CHECK(c.drain() == std::vector<uint8_t>{0x55});
    CHECK((c.status() & kSystem) != 0);
}

TEST_CASE("i8042: keyboard commands are acknowledged with IRQ 1", "[devices][i8042]") {
    Controller c;
    c.send(0xff);  // reset: ACK then self-test passed
    CHECK(c.irq->take() == 1);
    CHECK(c.data() == 0xfa);
    CHECK(c.irq->take() == 1);  // the next byte moved into the output buffer
    CHECK(c.data() == 0xaa);
    CHECK(c.irq->take() == 0);
    CHECK((c.status() & kOutputFull) == 0);

    c.send(0xf5);
    c.send(0xf4);
    CHECK(c.drain() == std::vector<uint8_t>{0xfa, 0xfa});
    c.send(0xed);  // set LEDs takes a parameter, acknowledged too
    c.send(0x07);
    CHECK(c.drain() == std::vector<uint8_t>{0xfa, 0xfa});
    c.send(0xf2);
    CHECK(c.drain() == std::vector<uint8_t>{0xfa, 0xab, 0x83});
    CHECK(c.irq->take() == 7);  // one edge per keyboard byte reaching the buffer
}

TEST_CASE("i8042: no keyboard IRQ while the command byte disables it", "[devices][i8042]") {
    Controller c;
    c.command(0x60);
    c.send(0x44);  // keyboard interrupt off
    c.send(0xf4);
    CHECK(c.irq->take() == 0);
    c.command(0x60);
    c.send(0x45);  // turning it on with keyboard data pending raises it
    CHECK(c.irq->take() == 1);
    CHECK(c.drain() == std::vector<uint8_t>{0xfa});
}

TEST_CASE("i8042: works without an IRQ line and ignores the AUX port", "[devices][i8042]") {
    int resets = 0;
    I8042 kbc([&] { ++resets; });
    write8(kbc, kData, 0xff);
    CHECK(read8(kbc, kData) == 0xfa);
    CHECK(read8(kbc, kData) == 0xaa);
    write8(kbc, kCommand, 0xd4);
    write8(kbc, kData, 0xf4);  // to the mouse: dropped
    CHECK((read8(kbc, kCommand) & kOutputFull) == 0);
    CHECK(read8(kbc, kData) == 0xaa);  // an empty buffer repeats the last byte
    CHECK(resets == 0);
}

TEST_CASE("i8042: port 0x61 and the unused ports", "[devices][i8042]") {
    Controller c;
    CHECK(read8(c.kbc, kPortB) == 0);
    write8(c.kbc, kPortB, 0x03);
    CHECK(read8(c.kbc, kPortB) == 0);
    CHECK(read8(c.kbc, 2) == 0xff);
    CHECK(read8(c.kbc, 3) == 0xff);
    write8(c.kbc, 2, 0xfe);
    write8(c.kbc, 3, 0xfe);
    CHECK(c.resets == 0);
    CHECK(c.drain().empty());
}

TEST_CASE("i8042: unread replies do not grow without bound", "[devices][i8042]") {
    Controller c;
    for (int i = 0; i < 1000; ++i) {
        c.send(0xf4);
    }
    CHECK(c.drain().size() <= 16);
}

// ---- Ctrl+Alt+Del from the VMM (send_ctrl_alt_del) ----

namespace {

const std::vector<uint8_t> kSet1CtrlAltDel = {0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d};
const std::vector<uint8_t> kSet2CtrlAltDel = {0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14};

// Reads the output buffer the way an interrupt-driven driver does: one byte per IRQ 1 edge,
// checking that exactly one edge came for each byte and OBF is set while (only while) a byte
// waits.
std::vector<uint8_t> read_per_interrupt(Controller& c) {
    std::vector<uint8_t> out;
    while (c.irq->take() == 1) {
        REQUIRE((c.status() & kOutputFull) != 0);
        out.push_back(c.data());
    }
    CHECK((c.status() & kOutputFull) == 0);
    CHECK(c.irq->take() == 0);
    return out;
}

}  // namespace

TEST_CASE("i8042: Ctrl+Alt+Del arrives in set 1 under translation, one IRQ per byte", "[devices][i8042]") {
    Controller c;
    c.command(0x20);
    REQUIRE((c.drain().at(0) & 0x40) != 0);  // XLATE is on at power-on
    REQUIRE(c.kbc.send_ctrl_alt_del());
    CHECK(read_per_interrupt(c) == kSet1CtrlAltDel);
    // The data port repeats the last byte once the buffer is empty; no more bytes come.
    CHECK(c.data() == 0x9d);
    CHECK((c.status() & kOutputFull) == 0);
}

TEST_CASE("i8042: Ctrl+Alt+Del arrives in set 2 without translation", "[devices][i8042]") {
    Controller c;
    c.command(0x60);
    c.send(0x05);  // keyboard interrupt and system flag, no XLATE
    REQUIRE(c.kbc.send_ctrl_alt_del());
    CHECK(read_per_interrupt(c) == kSet2CtrlAltDel);
}

TEST_CASE("i8042: translation applies when a byte enters the output buffer", "[devices][i8042]") {
    Controller c;
    REQUIRE(c.kbc.send_ctrl_alt_del());
    CHECK(c.data() == 0x1d);  // set 1; 0x38 (Alt) is already in the output buffer
    c.command(0x60);
    c.send(0x05);  // XLATE off: the rest comes untranslated
    CHECK(c.drain() == std::vector<uint8_t>{0x38, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14});
}

TEST_CASE("i8042: one byte in the output buffer at a time", "[devices][i8042]") {
    Controller c;
    REQUIRE(c.kbc.send_ctrl_alt_del());
    CHECK(c.irq->take() == 1);
    // Status reads and controller commands do not push more key bytes in while one waits.
    for (int i = 0; i < 5; ++i) {
        CHECK((c.status() & kOutputFull) != 0);
    }
    CHECK(c.irq->take() == 0);
    CHECK(c.data() == 0x1d);
    CHECK(c.irq->take() == 1);
    CHECK(c.data() == 0x38);
    CHECK(c.irq->take() == 1);
}

TEST_CASE("i8042: a controller-disabled keyboard holds its scancodes until enabled", "[devices][i8042]") {
    Controller c;
    c.command(0xad);
    REQUIRE(c.kbc.send_ctrl_alt_del());
    CHECK((c.status() & kOutputFull) == 0);
    CHECK(c.irq->take() == 0);
    c.command(0xae);
    CHECK(read_per_interrupt(c) == kSet1CtrlAltDel);

    // The same through the command byte's bit 4, enabled again by a command-byte write.
    c.command(0x60);
    c.send(0x55);  // 0x45 | keyboard disabled
    REQUIRE(c.kbc.send_ctrl_alt_del());
    CHECK((c.status() & kOutputFull) == 0);
    CHECK(c.irq->take() == 0);
    c.command(0x60);
    c.send(0x45);
    CHECK(read_per_interrupt(c) == kSet1CtrlAltDel);
}

TEST_CASE("i8042: a keyboard with scanning disabled drops Ctrl+Alt+Del", "[devices][i8042]") {
    Controller c;
    c.send(0xf5);
    CHECK(c.drain() == std::vector<uint8_t>{0xfa});
    c.irq->take();
    CHECK_FALSE(c.kbc.send_ctrl_alt_del());
    CHECK((c.status() & kOutputFull) == 0);
    CHECK(c.irq->take() == 0);
    c.send(0xf4);
    CHECK(c.drain() == std::vector<uint8_t>{0xfa});
    c.irq->take();
    REQUIRE(c.kbc.send_ctrl_alt_del());
    CHECK(read_per_interrupt(c) == kSet1CtrlAltDel);

    // A keyboard reset turns scanning on again too.
    c.send(0xf5);
    c.send(0xff);
    CHECK(c.drain() == std::vector<uint8_t>{0xfa, 0xfa, 0xaa});
    CHECK(c.kbc.send_ctrl_alt_del());
}

TEST_CASE("i8042: keyboard commands clear the scancodes it holds", "[devices][i8042]") {
    for (const uint8_t command : {0xf4, 0xf5, 0xf6, 0xff}) {
        Controller c;
        REQUIRE(c.kbc.send_ctrl_alt_del());
        c.send(command);
        std::vector<uint8_t> expect = {0x1d, 0xfa};  // the byte already in the output buffer stays
        if (command == 0xff) expect.push_back(0xaa);
        CHECK(c.drain() == expect);
    }
}

TEST_CASE("i8042: unread key strokes do not grow without bound", "[devices][i8042]") {
    Controller c;
    CHECK(c.kbc.send_ctrl_alt_del());
    CHECK(c.kbc.send_ctrl_alt_del());
    CHECK_FALSE(c.kbc.send_ctrl_alt_del());  // the keyboard's buffer is full: dropped whole
    std::vector<uint8_t> two = kSet1CtrlAltDel;
    two.insert(two.end(), kSet1CtrlAltDel.begin(), kSet1CtrlAltDel.end());
    CHECK(c.drain() == two);
    CHECK(c.kbc.send_ctrl_alt_del());
    CHECK(c.drain() == kSet1CtrlAltDel);
}

TEST_CASE("i8042: key bytes without the keyboard interrupt are polled", "[devices][i8042]") {
    Controller c;
    c.command(0x60);
    c.send(0x44);  // XLATE, no keyboard interrupt
    REQUIRE(c.kbc.send_ctrl_alt_del());
    CHECK(c.drain() == kSet1CtrlAltDel);
    CHECK(c.irq->take() == 0);

    I8042 no_line([] {});
    REQUIRE(no_line.send_ctrl_alt_del());
    std::vector<uint8_t> out;
    while (read8(no_line, kCommand) & kOutputFull) out.push_back(read8(no_line, kData));
    CHECK(out == kSet1CtrlAltDel);
}

TEST_CASE("i8042: Ctrl+Alt+Del from another thread while the guest reads", "[devices][i8042]") {
    Controller c;
    constexpr int kSends = 200;
    std::atomic<bool> give_up{false};
    std::thread sender([&] {
        for (int sent = 0; sent < kSends && !give_up;) {
            if (c.kbc.send_ctrl_alt_del()) {
                ++sent;
            } else {
                std::this_thread::yield();
            }
        }
    });
    std::vector<uint8_t> got;
    const size_t want = kSends * kSet1CtrlAltDel.size();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
        if (c.status() & kOutputFull) got.push_back(c.data());
    }
    give_up = true;
    sender.join();
    REQUIRE(got.size() == want);
    for (size_t i = 0; i < got.size(); ++i) {
        REQUIRE(got[i] == kSet1CtrlAltDel[i % kSet1CtrlAltDel.size()]);
    }
}

TEST_CASE("i8042: saved state restores the output buffer, a pending parameter and the command byte",
          "[devices][i8042][snapshot]") {
    Controller a;
    a.command(0x60);
    a.send(0x05);        // command byte: XLATE off, keyboard interrupt on, system flag
    a.command(0xad);     // keyboard interface inhibited: Ctrl+Alt+Del is held by the keyboard
    REQUIRE(a.kbc.send_ctrl_alt_del());
    a.command(0xd2);     // waiting for the byte to put in the output buffer
    embervm::StateWriter w;
    a.kbc.save_state(w);

    Controller b;
    embervm::StateReader r(w.bytes(), "i8042");
    b.kbc.restore_state(r);
    r.expect_end();
    CHECK(b.irq->count() == 0);
    CHECK((b.status() & kLastWasCommand) != 0);
    b.send(0x99);  // the parameter of 0xD2
    CHECK(b.drain() == std::vector<uint8_t>{0x99});
    b.command(0x20);
    CHECK(b.drain() == std::vector<uint8_t>{0x15});  // 0x05 | inhibit bit
    b.command(0xae);  // interface enabled: the held key strokes arrive untranslated (set 2)
    const std::vector<uint8_t> keys = b.drain();
    CHECK(keys == std::vector<uint8_t>{0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14});
    CHECK(b.irq->count() > 0);
}

TEST_CASE("i8042: a restored controller raises a pending keyboard interrupt again", "[devices][i8042][snapshot]") {
    Controller a;
    a.command(0x60);
    a.send(0x05);  // keyboard interrupt on, no translation
    REQUIRE(a.kbc.send_ctrl_alt_del());
    REQUIRE((a.status() & kOutputFull) != 0);
    embervm::StateWriter w;
    a.kbc.save_state(w);
    Controller b;
    embervm::StateReader r(w.bytes(), "i8042");
    b.kbc.restore_state(r);
    CHECK(b.irq->count() == 1);
    CHECK(b.data() == 0x14);  // the first key stroke, set 2
}

TEST_CASE("i8042: a saved state with bad fields is refused naming the field, the controller unchanged",
          "[devices][i8042][snapshot]") {
    Controller a;
    embervm::StateWriter w;
    w.put<uint32_t>(1);
    std::string expected;
    SECTION("an output buffer larger than the controller's") {
        w.put<uint32_t>(17);
        expected = "i8042: saved state field 'output': 17 bytes, the output buffer holds 16";
    }
    SECTION("an unknown pending command") {
        w.put<uint32_t>(0);
        w.put<uint8_t>(0);
        w.put<uint8_t>(0);
        w.put<uint8_t>(0);
        w.put<uint8_t>(6);
        expected = "i8042: saved state field 'pending': 6 is not a pending command";
    }
    SECTION("truncated") {
        w.put<uint32_t>(1);
        w.put<uint8_t>(0xfa);
        expected = "i8042: saved state field 'output': truncated (1 bytes needed, 0 left)";
    }
    embervm::StateReader r(w.bytes(), "i8042");
    CHECK_THROWS_WITH(a.kbc.restore_state(r), expected);
    a.command(0x20);
    CHECK(a.drain() == std::vector<uint8_t>{0x65});  // the power-on command byte
}

}  // namespace unit_i8042_test
