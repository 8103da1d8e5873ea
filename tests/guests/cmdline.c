// Test guest "cmdline": prints the kernel command line from the zero page (or hvm_start_info)
// as "cmdline: <text>" and exits with N if it contains the word "exit=N" (0 - 255), so a test
// sees from the exit status alone that the command line arrived. Without "exit=" it exits with
// GUEST_PASS; with a malformed N, with GUEST_FAIL.
#include "guest.h"
#include "str.h"

// The command line may be long (the VMM reserves 64 KiB); printf() truncates at 256 bytes.
#define CMDLINE_PRINT_MAX 4096

int guest_main(void) {
    const char* cmdline = boot_cmdline();
    const size_t len = strnlen(cmdline, CMDLINE_PRINT_MAX);
    printf("cmdline: ");
    serial_write(cmdline, len);
    printf("%s\n", len == CMDLINE_PRINT_MAX ? "... (truncated)" : "");
    printf("cmdline: %zu bytes, boot protocol %s\n", strlen(cmdline), boot_protocol_name());

    size_t value_len = 0;
    const char* value = cmdline_find(cmdline, "exit", &value_len);
    if (!value) {
        printf("cmdline: no exit=N, exiting with PASS (%d)\n", GUEST_PASS);
        return GUEST_PASS;
    }
    uint64_t status = 0;
    if (value_len == 0 || parse_u64(value, &status) != value_len || status > 255) {
        char shown[32];
        const size_t n = value_len < sizeof(shown) - 1 ? value_len : sizeof(shown) - 1;
        memcpy(shown, value, n);
        shown[n] = '\0';
        printf("cmdline: FAIL: malformed exit=%s (expected 0 - 255)\n", shown);
        return GUEST_FAIL;
    }
    printf("cmdline: exiting with status %lu\n", status);
    return (int)status;
}
