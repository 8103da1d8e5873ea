// libguest: virtio-net definitions and small helpers on top of virtio.h (virtio 1.2, 5.1
// "Network Device"), for the test guests net.c and net_malicious.c.
//
//   virtio_net_find()          the first virtio-net device (virtio_find_devices(): mmio or pci)
//   virtio_net_read_config()   mac, status, max_virtqueue_pairs, mtu (ConfigGeneration-consistent)
//   struct virtio_net_hdr_v1   the 12-byte header in front of every frame (VERSION_1: always
//                              with num_buffers, 5.1.6)
//   be16() ... put32()         big-endian fields of packet headers
//   net_build_arp()            an ARP request or reply
//   inet_csum_*()              RFC 1071 Internet checksum pieces for IPv4 / ICMP / UDP
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "virtio.h"

// Feature bits (5.1.3).
#define VIRTIO_NET_F_CSUM 0         // the device takes partial checksums (NEEDS_CSUM on TX)
#define VIRTIO_NET_F_GUEST_CSUM 1   // the driver takes partial checksums (NEEDS_CSUM on RX)
#define VIRTIO_NET_F_MTU 3
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN 9
#define VIRTIO_NET_F_GUEST_UFO 10
#define VIRTIO_NET_F_HOST_TSO4 11
#define VIRTIO_NET_F_HOST_TSO6 12
#define VIRTIO_NET_F_HOST_ECN 13
#define VIRTIO_NET_F_HOST_UFO 14
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17
#define VIRTIO_NET_F_MQ 22

// Configuration layout (5.1.4).
#define VIRTIO_NET_CFG_MAC 0
#define VIRTIO_NET_CFG_STATUS 6
#define VIRTIO_NET_CFG_MAX_VQ_PAIRS 8
#define VIRTIO_NET_CFG_MTU 10
#define VIRTIO_NET_S_LINK_UP 1
#define VIRTIO_NET_S_ANNOUNCE 2

// Queues without MQ (5.1.2).
#define VIRTIO_NET_RXQ 0
#define VIRTIO_NET_TXQ 1

// Header flags and GSO types (5.1.6).
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_F_RSC_INFO 4
#define VIRTIO_NET_HDR_GSO_NONE 0

struct virtio_net_hdr_v1 {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
    uint16_t num_buffers;
} __attribute__((packed));
_Static_assert(sizeof(struct virtio_net_hdr_v1) == 12, "virtio_net_hdr_v1 is 12 bytes");
#define VIRTIO_NET_HDR_SIZE 12

struct virtio_net_config_info {
    uint8_t mac[6];
    uint16_t status;     // valid with VIRTIO_NET_F_STATUS
    uint16_t max_pairs;  // valid with VIRTIO_NET_F_MQ
    uint16_t mtu;        // valid with VIRTIO_NET_F_MTU
};

// Probes the devices virtio_find_devices() lists (virtio-mmio from `cmdline`, then virtio-pci)
// in order and fills `d` with the first virtio-net device. Returns 0, or -1 if there is none (or the entries are malformed).
int virtio_net_find(struct virtio_dev* d, const char* cmdline);

// Reads the configuration fields (all of them; which are meaningful depends on the features)
// inside a ConfigGeneration retry loop, as 4.2.2.2 / 2.5.1 ask for fields wider than a byte.
void virtio_net_read_config(const struct virtio_dev* d, struct virtio_net_config_info* out);

// Parses "aa:bb:cc:dd:ee:ff" (exactly `n` = 17 characters). Returns 0 or -1.
int virtio_net_parse_mac(const char* s, size_t n, uint8_t mac[6]);

// ---- network byte order in packet buffers ----
static inline uint16_t be16(const uint8_t* p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t* p) { return (uint32_t)be16(p) << 16 | be16(p + 2); }
static inline void put16(uint8_t* p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void put32(uint8_t* p, uint32_t v) {
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

// An ARP packet (RFC 826, Ethernet / IPv4) in the frame at `f` (from its Ethernet header on),
// padded to the 60-byte minimum: a request (op 1, to the broadcast address) or a reply (op 2,
// to `tha`). Returns its length (60).
size_t net_build_arp(uint8_t* f, const uint8_t* mac, uint32_t ip, uint16_t op, const uint8_t* tha, uint32_t tpa);

// ---- Internet checksum (RFC 1071), big-endian 16-bit words ----
// Adds `n` bytes at `p` to a running 32-bit sum (an odd last byte is the high half of a word).
uint32_t inet_csum_add(uint32_t sum, const void* p, size_t n);
// Folds the carries and returns the ones' complement: the value for a checksum field, and 0
// when a sum over data that includes a correct checksum is checked.
uint16_t inet_csum_fold(uint32_t sum);
// The IPv4 pseudo-header sum (addresses in host order) for a TCP/UDP checksum.
uint32_t inet_pseudo_sum(uint32_t src_ip, uint32_t dst_ip, uint8_t proto, uint16_t l4_len);
