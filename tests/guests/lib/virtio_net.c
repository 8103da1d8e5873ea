// libguest: virtio-net helpers (see virtio_net.h).
#include "virtio_net.h"

#include "guest.h"
#include "io.h"
#include "str.h"

int virtio_net_find(struct virtio_dev* d, const char* cmdline) {
    struct virtio_mmio_entry entries[VIRTIO_MAX_DEVICES];
    const int found = virtio_find_devices(cmdline, entries, VIRTIO_MAX_DEVICES);
    for (int i = 0; i < found && i < VIRTIO_MAX_DEVICES; i++) {
        if (virtio_probe(d, &entries[i]) == NULL && d->device_id == VIRTIO_ID_NET) return 0;
    }
    return -1;
}

void virtio_net_read_config(const struct virtio_dev* d, struct virtio_net_config_info* out) {
    for (int tries = 0; tries < 100; tries++) {
        const uint32_t before = virtio_config_generation(d);
        for (uint32_t i = 0; i < 6; i++) out->mac[i] = virtio_config_read8(d, VIRTIO_NET_CFG_MAC + i);
        out->status = virtio_config_read16(d, VIRTIO_NET_CFG_STATUS);
        out->max_pairs = virtio_config_read16(d, VIRTIO_NET_CFG_MAX_VQ_PAIRS);
        out->mtu = virtio_config_read16(d, VIRTIO_NET_CFG_MTU);
        if (virtio_config_generation(d) == before) return;
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int virtio_net_parse_mac(const char* s, size_t n, uint8_t mac[6]) {
    if (n != 17) return -1;
    for (int i = 0; i < 6; i++) {
        const int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);
        if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':')) return -1;
        mac[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

size_t net_build_arp(uint8_t* f, const uint8_t* mac, uint32_t ip, uint16_t op, const uint8_t* tha, uint32_t tpa) {
    static const uint8_t broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    memcpy(f, op == 1 ? broadcast : tha, 6);
    memcpy(f + 6, mac, 6);
    put16(f + 12, 0x0806);
    uint8_t* a = f + 14;
    put16(a, 1);  // Ethernet
    put16(a + 2, 0x0800);  // IPv4
    a[4] = 6;
    a[5] = 4;
    put16(a + 6, op);
    memcpy(a + 8, mac, 6);
    put32(a + 14, ip);
    memcpy(a + 18, tha, 6);
    put32(a + 24, tpa);
    memset(a + 28, 0, 18);  // padding to 60 bytes
    return 60;
}

uint32_t inet_csum_add(uint32_t sum, const void* p, size_t n) {
    const uint8_t* b = p;
    for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)(b[i] << 8 | b[i + 1]);
    if (n & 1) sum += (uint32_t)b[n - 1] << 8;
    // Keep room for more additions: fold the carries now and then.
    while (sum >> 24) sum = (sum & 0xffff) + (sum >> 16);
    return sum;
}

uint16_t inet_csum_fold(uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

uint32_t inet_pseudo_sum(uint32_t src, uint32_t dst, uint8_t proto, uint16_t len) {
    return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto + len;
}
