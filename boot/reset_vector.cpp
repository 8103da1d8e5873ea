// The reset-vector stub: real-mode code that ends the VM through the ACPI reset port or the i8042.
#include "boot/reset_vector.h"

#include "boot/acpi/platform.h"
#include "boot/layout.h"

namespace embervm::boot {

std::array<uint8_t, 16> reset_vector_stub() {
    constexpr uint16_t port = layout::kAcpiResetPort;
    constexpr uint8_t kI8042Command = layout::kI8042Port + 4;  // 0x64
    constexpr uint8_t kI8042PulseReset = 0xfe;
    return {
        0xba, port & 0xff, port >> 8,          // mov dx, kAcpiResetPort
        0xb0, acpi::kResetValue,               // mov al, kResetValue
        0xee,                                  // out dx, al
        0xb0, kI8042PulseReset,                // mov al, 0xfe
        0xe6, kI8042Command,                   // out 0x64, al
        0xfa,                                  // cli
        0xf4,                                  // hlt
        0xeb, 0xfd,                            // jmp short hlt
        0x00, 0x00,
    };
}

void write_reset_vector_stub(const memory::GuestMemory& mem) {
    const std::array<uint8_t, 16> code = reset_vector_stub();
    mem.write(memory::GuestAddress(layout::kResetVectorAddr), code);
}

}  // namespace embervm::boot
