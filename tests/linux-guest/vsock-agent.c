/* vsock-agent: the guest side of the virtio-vsock Linux guest test (built with gcc -static into
 * the test initramfs as /bin/vsock-agent; run by init.sh's gtest=vsock, see tests/integration/linux-vsock-test).
 *
 *   vsock-agent connect PORT N BYTES   opens N connections to the host (CID 2) port PORT at once
 *                                      (the host's <uds_path>_PORT), then on each sends BYTES of
 *                                      a pattern seeded by the connection's index, shuts its
 *                                      sending side and checks that the host echoes exactly
 *                                      those bytes back; prints VSOCK-CONNECT-OK or a failure.
 *   vsock-agent listen PORT N          accepts N connections on port PORT (the host connects to
 *                                      uds_path with "CONNECT PORT\n"), then on each reads to
 *                                      EOF and answers "SUM <fnv1a-64 hex> <bytes>\n"; prints
 *                                      VSOCK-LISTEN-OK or a failure.
 *   vsock-agent hold PORT              opens one connection to the host port PORT, checks that a
 *                                      line comes back echoed (VSOCK-HOLD-OPEN), then waits on
 *                                      it until it ends: VSOCK-HOLD-RESET with the read's errno
 *                                      when the kernel reset it (a transport reset after a
 *                                      snapshot restore), exit 0; VSOCK-HOLD-EOF (the host closed
 *                                      it) is a failure.
 * Exit status 0 on success, 1 on any failure (with a VSOCK-FAIL line saying what). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define MAX_CONNECTIONS 1024

static int fail(const char *what, long index) {
    printf("VSOCK-FAIL %s (connection %ld): %s\n", what, index, strerror(errno));
    fflush(stdout);
    return 1;
}

static unsigned char pattern_byte(size_t i, unsigned seed) { return (unsigned char)((i * 7 + seed * 13) % 251); }

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static int write_all(int fd, const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int do_connect(unsigned port, long n, size_t bytes) {
    static int fds[MAX_CONNECTIONS];
    unsigned char *buf = malloc(bytes + 1);
    if (buf == NULL) return fail("malloc", -1);
    for (long i = 0; i < n; i++) {
        struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = port};
        fds[i] = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (fds[i] < 0) return fail("socket", i);
        /* The kernel gives a vsock connect 2 s by default; the VMM's user space runs far slower
         * on the project's nested-KVM-in-TCG hosts than the guest does. */
        struct timeval limit = {.tv_sec = 30};
        if (setsockopt(fds[i], AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &limit, sizeof(limit)) != 0)
            return fail("setsockopt connect timeout", i);
        if (connect(fds[i], (struct sockaddr *)&addr, sizeof(addr)) != 0) return fail("connect", i);
    }
    for (long i = 0; i < n; i++) {
        for (size_t j = 0; j < bytes; j++) buf[j] = pattern_byte(j, (unsigned)i);
        if (write_all(fds[i], buf, bytes) != 0) return fail("write", i);
        if (shutdown(fds[i], SHUT_WR) != 0) return fail("shutdown", i);
        size_t got = 0;
        for (;;) {
            unsigned char c[4096];
            ssize_t k = read(fds[i], c, sizeof(c));
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) return fail("read", i);
            if (k == 0) break;
            for (ssize_t j = 0; j < k; j++, got++) {
                if (got >= bytes || c[j] != pattern_byte(got, (unsigned)i)) {
                    errno = EBADMSG;
                    return fail("echo differs", i);
                }
            }
        }
        if (got != bytes) {
            errno = EBADMSG;
            return fail("echo short", i);
        }
        close(fds[i]);
    }
    printf("VSOCK-CONNECT-OK n=%ld bytes=%zu\n", n, bytes);
    fflush(stdout);
    return 0;
}

static int do_listen(unsigned port, long n) {
    static int fds[MAX_CONNECTIONS];
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
    int l = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (l < 0) return fail("socket", -1);
    if (bind(l, (struct sockaddr *)&addr, sizeof(addr)) != 0) return fail("bind", -1);
    if (listen(l, MAX_CONNECTIONS) != 0) return fail("listen", -1);
    printf("VSOCK-LISTENING port=%u\n", port);
    fflush(stdout);
    for (long i = 0; i < n; i++) {
        fds[i] = accept(l, NULL, NULL);
        if (fds[i] < 0) return fail("accept", i);
    }
    for (long i = 0; i < n; i++) {
        uint64_t h = 0xcbf29ce484222325ULL;
        size_t total = 0;
        for (;;) {
            unsigned char c[4096];
            ssize_t k = read(fds[i], c, sizeof(c));
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) return fail("read", i);
            if (k == 0) break;
            h = fnv1a(h, c, (size_t)k);
            total += (size_t)k;
        }
        char line[64];
        int len = snprintf(line, sizeof(line), "SUM %016llx %zu\n", (unsigned long long)h, total);
        if (write_all(fds[i], (const unsigned char *)line, (size_t)len) != 0) return fail("write", i);
        close(fds[i]);
    }
    printf("VSOCK-LISTEN-OK n=%ld\n", n);
    fflush(stdout);
    return 0;
}

static int do_hold(unsigned port) {
    static const unsigned char hello[] = "HOLD\n";
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = port};
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) return fail("socket", 0);
    struct timeval limit = {.tv_sec = 30};
    if (setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &limit, sizeof(limit)) != 0)
        return fail("setsockopt connect timeout", 0);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) return fail("connect", 0);
    if (write_all(fd, hello, sizeof(hello) - 1) != 0) return fail("write", 0);
    size_t got = 0;
    while (got < sizeof(hello) - 1) {
        unsigned char c[16];
        ssize_t k = read(fd, c, sizeof(hello) - 1 - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return fail("read the echo", 0);
        if (memcmp(c, hello + got, (size_t)k) != 0) {
            errno = EBADMSG;
            return fail("echo differs", 0);
        }
        got += (size_t)k;
    }
    printf("VSOCK-HOLD-OPEN port=%u\n", port);
    fflush(stdout);
    for (;;) {
        unsigned char c[64];
        ssize_t k = read(fd, c, sizeof(c));
        if (k < 0 && errno == EINTR) continue;
        if (k > 0) continue; /* nothing is expected; whatever comes is dropped */
        if (k == 0) {
            printf("VSOCK-FAIL VSOCK-HOLD-EOF: the host closed the held connection\n");
            fflush(stdout);
            return 1;
        }
        printf("VSOCK-HOLD-RESET errno=%d (%s)\n", errno, strerror(errno));
        fflush(stdout);
        close(fd);
        return 0;
    }
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "listen") == 0) {
        long n = atol(argv[3]);
        if (n < 1 || n > MAX_CONNECTIONS) return fail("bad N", n);
        return do_listen((unsigned)atol(argv[2]), n);
    }
    if (argc >= 5 && strcmp(argv[1], "connect") == 0) {
        long n = atol(argv[3]);
        if (n < 1 || n > MAX_CONNECTIONS) return fail("bad N", n);
        return do_connect((unsigned)atol(argv[2]), n, (size_t)atol(argv[4]));
    }
    if (argc >= 3 && strcmp(argv[1], "hold") == 0) return do_hold((unsigned)atol(argv[2]));
    fprintf(stderr, "usage: vsock-agent connect PORT N BYTES | vsock-agent listen PORT N | vsock-agent hold PORT\n");
    return 2;
}
