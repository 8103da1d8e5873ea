// libguest: virtio-blk on top of the virtio-mmio driver (virtio.h), for the test guests that drive
// embervm's block device from the inside (tests/guests/blk.c, blk_malicious.c).
//
//   blk_open()      probe (device ID 2), negotiate, read the configuration, set up the request
//                   queue (256 entries or QueueNumMax) and set DRIVER_OK
//   blk_request()   one synchronous request: header, data buffers, status byte; polls (bounded)
//                   for its used element and checks the id and the used length
//
// Request layout (virtio 1.2, 5.2.6): a device-readable 16-byte header {type, reserved, sector},
// data (device-readable for OUT / DISCARD / WRITE_ZEROES, device-writable for IN / GET_ID), then
// one device-writable status byte. Sector units are 512 bytes whatever blk_size says.
#pragma once

#include <stdint.h>

#include "virtio.h"

// Feature bits (5.2.3).
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_GEOMETRY 4
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_TOPOLOGY 10
#define VIRTIO_BLK_F_CONFIG_WCE 11
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

// Request types and statuses (5.2.6).
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1
#define VIRTIO_BLK_SECTOR_SIZE 512

// struct virtio_blk_config offsets (5.2.4).
#define VIRTIO_BLK_CFG_CAPACITY 0               // le64
#define VIRTIO_BLK_CFG_SIZE_MAX 8               // le32
#define VIRTIO_BLK_CFG_SEG_MAX 12               // le32
#define VIRTIO_BLK_CFG_BLK_SIZE 20              // le32
#define VIRTIO_BLK_CFG_NUM_QUEUES 34            // le16
#define VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS 36   // le32
#define VIRTIO_BLK_CFG_MAX_DISCARD_SEG 40       // le32
#define VIRTIO_BLK_CFG_DISCARD_ALIGNMENT 44     // le32
#define VIRTIO_BLK_CFG_MAX_WZ_SECTORS 48        // le32
#define VIRTIO_BLK_CFG_MAX_WZ_SEG 52            // le32
#define VIRTIO_BLK_CFG_WZ_MAY_UNMAP 56          // u8

struct virtio_blk_req_hdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

struct virtio_blk_discard_segment {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};

// Every feature a test guest understands (the ring features and the block ones above).
#define VIRTIO_BLK_GUEST_FEATURES                                                                         \
    (VIRTIO_BIT(VIRTIO_F_EVENT_IDX) | VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC) | VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) | \
     VIRTIO_BIT(VIRTIO_BLK_F_RO) | VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE) | VIRTIO_BIT(VIRTIO_BLK_F_FLUSH) |       \
     VIRTIO_BIT(VIRTIO_BLK_F_DISCARD) | VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES))

struct blk_dev {
    struct virtio_dev v;
    struct virtio_mmio_entry entry;
    uint64_t capacity;  // 512-byte sectors
    uint32_t seg_max;   // 0 unless VIRTIO_BLK_F_SEG_MAX
    uint32_t blk_size;  // 0 unless VIRTIO_BLK_F_BLK_SIZE
    uint32_t max_discard_sectors, max_discard_seg, max_wz_sectors, max_wz_seg;
    uint8_t wz_may_unmap;
    int ro, flush, discard, write_zeroes, indirect, event_idx;  // negotiated
    char id[VIRTIO_BLK_ID_BYTES + 1];                           // blk_get_id(); NUL-terminated
};

static inline int blk_has(const struct blk_dev* b, unsigned bit) { return (b->v.features & VIRTIO_BIT(bit)) != 0; }

// Probes the window (must be a virtio-blk device), negotiates `wanted` (VIRTIO_F_VERSION_1 is
// always added), reads the configuration, sets up queue 0 with `queue_size` entries (0: the
// largest the library supports) and sets DRIVER_OK. Returns NULL or what failed.
const char* blk_open(struct blk_dev* b, const struct virtio_mmio_entry* e, uint64_t wanted, uint16_t queue_size);

// Result of blk_request(): a status byte (VIRTIO_BLK_S_*, >= 0) or one of these.
#define BLK_ERR_QUEUE_FULL (-1)
#define BLK_ERR_TIMEOUT (-2)
#define BLK_ERR_NEEDS_RESET (-3)
#define BLK_ERR_BAD_USED (-4)  // used element with a wrong id
const char* blk_err_name(int r);  // "OK", "IOERR", "UNSUPP", "timeout", ...

// One synchronous request with a single data buffer (`data_len` 0: none). The data is
// device-writable if `device_writes` (IN, GET_ID). Returns the status byte or BLK_ERR_*; stores
// the used element's len in *used_len (if not NULL). Uses direct descriptors.
int blk_request(struct blk_dev* b, uint32_t type, uint64_t sector, void* data, uint32_t data_len, int device_writes,
                uint32_t* used_len);

// GET_ID into b->id. Returns the status (or BLK_ERR_*).
int blk_get_id(struct blk_dev* b);

// DISCARD / WRITE_ZEROES of one segment. Returns the status (or BLK_ERR_*).
int blk_range_op(struct blk_dev* b, uint32_t type, uint64_t sector, uint32_t num_sectors, uint32_t flags);
