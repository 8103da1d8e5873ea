// Test guest "hello" (and "hello_pvh", the same program linked with the PVH entry): prints a
// greeting, how it was booted and its command line, and exits with GUEST_PASS.
// A PVH boot with a bad hvm_start_info magic exits with GUEST_FAIL.
#include "guest.h"
#include "io.h"

int guest_main(void) {
    printf("hello from embervm test guest\n");
    const uint64_t info = boot_info_addr();
    if (boot_protocol() == BOOT_PVH) {
        const struct hvm_start_info* si = phys_ptr(info);
        printf("boot protocol: pvh (hvm_start_info at 0x%lx, magic 0x%x, version %u)\n", info, si->magic,
               si->version);
        if (si->magic != HVM_START_MAGIC) {
            printf("hello: FAIL: hvm_start_info magic 0x%x, expected 0x%x\n", si->magic, HVM_START_MAGIC);
            return GUEST_FAIL;
        }
    } else {
        printf("boot protocol: linux64 (zero page at 0x%lx)\n", info);
    }
    printf("cmdline: %s\n", boot_cmdline());
    return GUEST_PASS;
}
