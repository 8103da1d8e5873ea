// Tests for devices/i8042: controller commands, command byte, status, reset, keyboard ACKs.
#include <catch2/catch.hpp>

#include <memory>
#include <vector>

#include "devices/i8042.h"
#include "tests/unit/devices/fakes.h"

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
