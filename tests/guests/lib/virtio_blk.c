// libguest: virtio-blk helpers (see virtio_blk.h).
#include "virtio_blk.h"

#include "guest.h"
#include "str.h"

const char* blk_open(struct blk_dev* b, const struct virtio_mmio_entry* e, uint64_t wanted, uint16_t queue_size) {
    memset(b, 0, sizeof(*b));
    b->entry = *e;
    const char* err = virtio_probe(&b->v, e);
    if (err) return err;
    if (b->v.device_id != VIRTIO_ID_BLOCK) return "not a virtio-blk device";
    if ((err = virtio_negotiate(&b->v, wanted))) return err;
    b->capacity = virtio_config_read64(&b->v, VIRTIO_BLK_CFG_CAPACITY);
    b->ro = blk_has(b, VIRTIO_BLK_F_RO);
    b->flush = blk_has(b, VIRTIO_BLK_F_FLUSH);
    b->discard = blk_has(b, VIRTIO_BLK_F_DISCARD);
    b->write_zeroes = blk_has(b, VIRTIO_BLK_F_WRITE_ZEROES);
    b->indirect = blk_has(b, VIRTIO_F_INDIRECT_DESC);
    b->event_idx = blk_has(b, VIRTIO_F_EVENT_IDX);
    if (blk_has(b, VIRTIO_BLK_F_SEG_MAX)) b->seg_max = virtio_config_read32(&b->v, VIRTIO_BLK_CFG_SEG_MAX);
    if (blk_has(b, VIRTIO_BLK_F_BLK_SIZE)) b->blk_size = virtio_config_read32(&b->v, VIRTIO_BLK_CFG_BLK_SIZE);
    if (b->discard) {
        b->max_discard_sectors = virtio_config_read32(&b->v, VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS);
        b->max_discard_seg = virtio_config_read32(&b->v, VIRTIO_BLK_CFG_MAX_DISCARD_SEG);
    }
    if (b->write_zeroes) {
        b->max_wz_sectors = virtio_config_read32(&b->v, VIRTIO_BLK_CFG_MAX_WZ_SECTORS);
        b->max_wz_seg = virtio_config_read32(&b->v, VIRTIO_BLK_CFG_MAX_WZ_SEG);
        b->wz_may_unmap = virtio_config_read8(&b->v, VIRTIO_BLK_CFG_WZ_MAY_UNMAP);
    }
    if ((err = virtio_queue_setup(&b->v, 0, queue_size))) return err;
    virtio_driver_ok(&b->v);
    if (virtio_status(&b->v) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) return "DEVICE_NEEDS_RESET right after DRIVER_OK";
    if (!(virtio_status(&b->v) & VIRTIO_STATUS_DRIVER_OK)) return "DRIVER_OK did not stick";
    return NULL;
}

const char* blk_err_name(int r) {
    switch (r) {
        case VIRTIO_BLK_S_OK: return "OK";
        case VIRTIO_BLK_S_IOERR: return "IOERR";
        case VIRTIO_BLK_S_UNSUPP: return "UNSUPP";
        case BLK_ERR_QUEUE_FULL: return "queue full";
        case BLK_ERR_TIMEOUT: return "timeout (no used element)";
        case BLK_ERR_NEEDS_RESET: return "DEVICE_NEEDS_RESET";
        case BLK_ERR_BAD_USED: return "used element with a wrong id";
        default: return "unknown status";
    }
}

// One request at a time through these (the guests are single-threaded).
static struct virtio_blk_req_hdr req_hdr __attribute__((aligned(16)));
static struct virtio_blk_discard_segment req_seg __attribute__((aligned(16)));
static volatile uint8_t req_status;

static int submit_and_wait(struct blk_dev* b, const struct virtio_buf* bufs, unsigned n, uint32_t* used_len) {
    struct virtq* q = &b->v.vq[0];
    const int head = virtq_add(q, bufs, n);
    if (head < 0) return BLK_ERR_QUEUE_FULL;
    virtq_publish(q);
    virtq_kick(&b->v, q);
    struct virtq_used_elem e;
    const enum virtq_wait_result w = virtq_wait_used(&b->v, q, &e);
    if (w == VIRTQ_TIMEOUT) return BLK_ERR_TIMEOUT;
    if (w == VIRTQ_NEEDS_RESET) return BLK_ERR_NEEDS_RESET;
    if (e.id != (uint32_t)head || virtq_free_chain(q, e.id) != 0) return BLK_ERR_BAD_USED;
    if (used_len) *used_len = e.len;
    return req_status;
}

int blk_request(struct blk_dev* b, uint32_t type, uint64_t sector, void* data, uint32_t data_len, int device_writes,
                uint32_t* used_len) {
    req_hdr.type = type;
    req_hdr.reserved = 0;
    req_hdr.sector = sector;
    req_status = 0xff;
    struct virtio_buf bufs[3];
    unsigned n = 0;
    bufs[n++] = (struct virtio_buf){(uint64_t)(uintptr_t)&req_hdr, sizeof(req_hdr), 0};
    if (data_len) bufs[n++] = (struct virtio_buf){(uint64_t)(uintptr_t)data, data_len, (uint8_t)(device_writes != 0)};
    bufs[n++] = (struct virtio_buf){(uint64_t)(uintptr_t)&req_status, 1, 1};
    return submit_and_wait(b, bufs, n, used_len);
}

int blk_get_id(struct blk_dev* b) {
    static char id[VIRTIO_BLK_ID_BYTES];
    memset(id, 0, sizeof(id));
    const int r = blk_request(b, VIRTIO_BLK_T_GET_ID, 0, id, sizeof(id), 1, NULL);
    memcpy(b->id, id, sizeof(id));
    b->id[VIRTIO_BLK_ID_BYTES] = '\0';
    return r;
}

int blk_range_op(struct blk_dev* b, uint32_t type, uint64_t sector, uint32_t num_sectors, uint32_t flags) {
    req_seg.sector = sector;
    req_seg.num_sectors = num_sectors;
    req_seg.flags = flags;
    return blk_request(b, type, 0, &req_seg, sizeof(req_seg), 0, NULL);
}
