#!/usr/bin/env python3
"""Writes the seed corpus of the virtio fuzz targets (tests/fuzz/corpus/<target>/).

Each seed is a small, meaningful input in the target's own encoding (tests/fuzz/virtio_fuzz.h's
FuzzInput: little-endian fields, a one-byte choice per operation): a well-formed request of
each kind the device knows, and a few of the malformed cases the unit tests cover, so the
fuzzer starts from inputs that reach deep into the code rather than from random bytes.

    tests/fuzz/make_virtio_corpus.py [OUTDIR]   (default: tests/fuzz/corpus next to this script)
"""
import os
import struct
import sys


class Enc:
    """The writer's side of FuzzInput."""

    def __init__(self):
        self.b = bytearray()

    def u8(self, v):
        self.b += struct.pack('<B', v & 0xff)
        return self

    def u16(self, v):
        self.b += struct.pack('<H', v & 0xffff)
        return self

    def u32(self, v):
        self.b += struct.pack('<I', v & 0xffffffff)
        return self

    def u64(self, v):
        self.b += struct.pack('<Q', v & 0xffffffffffffffff)
        return self

    def raw(self, data):
        self.b += data
        return self

    def addr(self, a, scale=2):
        """FuzzInput::guest_addr: a multiple of `scale` below 64 Ki * scale, else a wild value."""
        if a % scale == 0 and a // scale <= 0xffff:
            return self.u8(0).u16(a // scale)
        return self.u8(7).u64(a)

    def length(self, n):
        if n <= 0xffff:
            return self.u8(0).u16(n)
        return self.u8(7).u32(n)

    # RingDriver::act (device targets): op 0 = direct chain, 4 = indirect, 5 = raw bytes,
    # 6 = avail.idx / avail.flags / used_event.
    def chain(self, bufs, indirect_at=None):
        """bufs: [(addr, len, device_writes)]."""
        self.u8(4 if indirect_at is not None else 0).u8(len(bufs) - 1).u8(0)
        if indirect_at is not None:
            self.addr(indirect_at)
        for a, n, w in bufs:
            self.addr(a).length(n).u8(1 if w else 0)
        return self

    def poke(self, a, data):
        assert len(data) <= 255
        return self.u8(5).addr(a).u8(len(data)).raw(data)

    def ring_field(self, which, v):
        return self.u8(6).u16(v).u8(which)


def write(outdir, target, name, enc):
    d = os.path.join(outdir, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(bytes(enc.b))


# ---------------------------------------------------------------------------------------------
# split_queue: rings at 0x1000 / 0x2000 / 0x3000 (scale 1 addresses), buffers from 0x4000;
# guest memory is [0, 0xc000), two regions split at 0x8000.

def queue_header(size_log2=4, event_idx=False, indirect=False):
    e = Enc()
    e.u8(size_log2 | (0x10 if event_idx else 0) | (0x20 if indirect else 0))
    e.addr(0x1000, 1).addr(0x2000, 1).addr(0x3000, 1)
    return e


def q_desc(e, index, addr, length, flags, nxt=0):
    return e.u8(1).u8(index).addr(addr, 1).length(length).u8(flags).u16(nxt)


def q_table_desc(e, table, index, addr, length, flags, nxt=0):
    return e.u8(2).addr(table, 1).u8(index).addr(addr, 1).length(length).u8(flags).u16(nxt)


def q_publish(e, head):
    return e.u8(3).u16(head).u8(0)


def q_pop(e):
    return e.u8(5)


def q_read(e, skip, n):
    return e.u8(8).u8(0).u16(skip).u8(0).u16(n)  # the first chain popped, skip, read n


def q_write(e, mode, arg):
    e.u8(9).u8(0).u8(mode)
    if mode & 1:
        e.u8(1)  # a one-byte tail
    if mode & 2:
        e.u32(arg)
    else:
        e.u16(arg)
    return e


def q_used(e, length):
    return e.u8(10).u32(length).u16(0).u8(0).u8(0)


def split_queue_seeds(out):
    R, N, W, I = 0, 1, 2, 4
    e = queue_header()
    q_desc(e, 0, 0x4000, 64, R)
    q_publish(e, 0)
    q_pop(e)
    q_read(e, 0, 64)
    q_used(e, 0)
    e.u8(13)
    write(out, 'split_queue', 'one-readable', e)

    # Header, data across the region boundary, status: R + W + W.
    e = queue_header()
    q_desc(e, 0, 0x4000, 16, R | N, 1)
    q_desc(e, 1, 0x7f00, 0x200, W | N, 2)
    q_desc(e, 2, 0x4100, 1, W)
    q_publish(e, 0)
    q_pop(e)
    q_read(e, 0, 16)
    q_write(e, 1, 0x200)
    q_used(e, 0x201)
    e.u8(14).u8(0)  # enable_notification
    write(out, 'split_queue', 'three-across-regions', e)

    e = queue_header(indirect=True)
    q_table_desc(e, 0x5000, 0, 0x4000, 32, R | N, 1)
    q_table_desc(e, 0x5000, 1, 0x6000, 0x1000, W | N, 2)
    q_table_desc(e, 0x5000, 2, 0x4100, 1, W)
    q_desc(e, 3, 0x5000, 48, I)
    q_publish(e, 3)
    q_pop(e)
    q_write(e, 3, 0x1001)
    q_used(e, 0x1001)
    write(out, 'split_queue', 'indirect', e)

    # EVENT_IDX: used_event set, several completions, notification checks in between.
    e = queue_header(event_idx=True)
    for i in range(4):
        q_desc(e, i, 0x4000 + 0x100 * i, 0x100, W)
        q_publish(e, i)
    e.u8(4).u16(1).u8(2)  # used_event = 1
    for _ in range(4):
        q_pop(e)
        q_used(e, 0x100)
        e.u8(13)
    e.u8(14).u8(0).u8(14).u8(1)
    write(out, 'split_queue', 'event-idx', e)

    # A descriptor whose next is itself: a loop the queue must refuse.
    e = queue_header()
    q_desc(e, 0, 0x4000, 16, R | N, 0)
    q_publish(e, 0)
    q_pop(e)
    write(out, 'split_queue', 'loop', e)

    # avail.idx far ahead of the device.
    e = queue_header()
    e.u8(4).u16(0x1234).u8(0)
    q_pop(e)
    write(out, 'split_queue', 'avail-idx-jump', e)

    # A batch, an undo, a buffer reaching past guest memory.
    e = queue_header(size_log2=8)
    q_desc(e, 0, 0x4000, 8, W)
    q_desc(e, 1, 0xbff0, 0x20, W)
    q_publish(e, 0)
    q_publish(e, 1)
    q_pop(e)
    e.u8(7)  # undo_pop
    q_pop(e)
    e.u8(12).u8(1).u8(0).u32(8)
    q_pop(e)
    write(out, 'split_queue', 'batch-undo-outside', e)


# ---------------------------------------------------------------------------------------------
# Device targets: queue q's rings at q * 0x1000 (RingDriver), data from 0x4000 on; memory is
# [0, 0x20000), two regions split at 0x10000.

HDR, STATUS, DATA = 0x4000, 0x4800, 0x8000


def blk_header(e, type_, sector, at=HDR):
    return e.poke(at, struct.pack('<IIQ', type_, 0, sector))


def blk_seeds(out):
    def start(ro=False, flush=True, sectors=64, ident=b'fuzz-disk', mask=0xffffffff, size_log2=4):
        e = Enc()
        e.u8((1 if ro else 0) | (2 if flush else 0)).u8(sectors - 1)
        e.u8(len(ident)).raw(ident)
        e.u32(mask).u8(size_log2)
        return e

    def act(e):
        return e.u8(0)

    def kick(e):
        return e.u8(3)

    # read, write, flush, get_id: one request each, kicked.
    for name, type_, sector, bufs in [
        ('read', 0, 2, [(DATA, 1024, True)]),
        ('write', 1, 4, [(DATA, 512, False), (DATA + 0x1000, 512, False)]),
        ('flush', 4, 0, []),
        ('get-id', 8, 0, [(DATA, 20, True)]),
        ('unsupported', 7, 0, []),
        ('read-past-end', 0, 63, [(DATA, 1024, True)]),
    ]:
        e = start()
        act(e)
        blk_header(e, type_, sector)
        act(e).chain([(HDR, 16, False)] + bufs + [(STATUS, 1, True)])
        kick(e)
        write(out, 'virtio_blk', name, e)

    # discard and write-zeroes with one segment each.
    for name, type_ in [('discard', 11), ('write-zeroes', 13)]:
        e = start()
        act(e)
        blk_header(e, type_, 0)
        act(e).poke(HDR + 0x100, struct.pack('<QII', 8, 8, 0))
        act(e).chain([(HDR, 16, False), (HDR + 0x100, 16, False), (STATUS, 1, True)])
        kick(e)
        write(out, 'virtio_blk', name, e)

    # A read through an indirect table, data across the region boundary.
    e = start()
    act(e)
    blk_header(e, 0, 0)
    act(e).chain([(HDR, 16, False), (0xff00, 0x200, True), (STATUS, 1, True)], indirect_at=0x6000)
    kick(e)
    write(out, 'virtio_blk', 'indirect-across-regions', e)

    # Held requests, a full backend, completions after a kick, then a reset.
    e = start()
    e.u8(4).u8(0)           # hold
    e.u8(4).u8(2).u8(1)     # depth 2
    for i in range(3):
        act(e)
        blk_header(e, 0, i, at=HDR + 0x10 * i)
        act(e).chain([(HDR + 0x10 * i, 16, False), (DATA + 0x200 * i, 512, True), (STATUS + i, 1, True)])
    kick(e)
    e.u8(4).u8(1)           # release held, kick
    e.u8(6).u32(0xffffffff).u8(3)  # reset, activate again
    write(out, 'virtio_blk', 'held-full-reset', e)

    # Read-only drive: a write fails, a status buffer that is readable is a guest error.
    e = start(ro=True)
    act(e)
    blk_header(e, 1, 0)
    act(e).chain([(HDR, 16, False), (DATA, 512, False), (STATUS, 1, True)])
    act(e).chain([(HDR, 16, False), (STATUS, 1, False)])
    kick(e)
    e.u8(5).u8(3).u8(0).u8(1)  # config read: 8 bytes at 0
    write(out, 'virtio_blk', 'read-only', e)


def net_seeds(out):
    def start(mrg=False, mtu=None, size_log2=4):
        e = Enc()
        e.u8(1 if mtu is not None else 0)
        if mtu is not None:
            e.u16(mtu)
        e.u16(0x3ff)  # every offload
        mask = 0xffffffff if mrg else 0xffffffff & ~(1 << 15)
        e.u32(mask).u8(size_log2 | (size_log2 << 4))
        return e

    def act(e, q):
        return e.u8(0).u8(q)

    def kick(e, q):
        return e.u8(3).u8(q)

    def frame(e, length, hdr=b'\0' * 12):
        return e.u8(4).u32(length).raw(hdr + bytes(range(16))[:max(0, min(length, 28) - len(hdr))])

    e = start()
    act(e, 1).chain([(0x4000, 12, False), (0x5000, 1500, False)])
    act(e, 1).chain([(0x6000, 12 + 60, False)])
    kick(e, 1)
    write(out, 'virtio_net', 'tx', e)

    e = start()
    act(e, 0).chain([(0x4000, 2048, True)])                  # bounced
    act(e, 0).chain([(0x8000, 12 + 65536 + 18, True)])       # zero copy (any frame fits)
    frame(e, 12 + 60)
    frame(e, 12 + 1500)
    kick(e, 0)
    write(out, 'virtio_net', 'rx', e)

    e = start(mrg=True)
    for i in range(4):
        act(e, 0).chain([(0x4000 + 0x800 * i, 0x800, True)])
    frame(e, 12 + 5000)
    frame(e, 12 + 60)
    kick(e, 0)
    write(out, 'virtio_net', 'rx-mergeable', e)

    # Frames before any buffer (the device waits), then buffers and a kick.
    e = start(mtu=1400)
    frame(e, 12 + 100)
    frame(e, 12 + 200)
    act(e, 0).chain([(0x4000, 1024, True)])
    kick(e, 0)
    e.u8(5).u8(1).u8(0)  # backend write error -EAGAIN
    act(e, 1).chain([(0x6000, 12 + 60, False)])
    kick(e, 1)
    e.u8(6).u32(0xffffffff).u8(0x44)  # reset, activate again
    write(out, 'virtio_net', 'rx-wait-tx-error-reset', e)

    # A GSO header on transmit (checksum offload), a writable buffer in a TX chain.
    e = start()
    act(e, 1).chain([(0x4000, 12 + 100, False)])
    e.u8(0).u8(1).poke(0x4000, struct.pack('<BBHHHHH', 1, 1, 54, 1448, 34, 16, 0))
    act(e, 1).chain([(0x5000, 12, False), (0x5100, 64, True)])
    kick(e, 1)
    write(out, 'virtio_net', 'tx-gso-bad', e)


def balloon_seeds(out):
    def start(opts=0, interval=None, mask=0xffffffff, size_log2=4):
        e = Enc()
        e.u8(opts).u8(16)
        if opts & 2:
            e.u8(interval or 1)
        e.u32(mask).u8(size_log2 | 0x70)
        return e

    def act(e, q):
        return e.u8(0).u8(q)

    def pfns(e, q, at, pages):
        data = struct.pack('<%dI' % len(pages), *pages)
        act(e, q).poke(at, data)
        act(e, q).chain([(at, len(data), False)])
        return e.u8(3).u8(q)

    e = start()
    pfns(e, 0, 0x4000, [0x10, 0x11, 0x12, 0x1f, 0x100000])  # the last one is outside memory
    pfns(e, 1, 0x4100, [0x10, 0x11])
    e.u8(4).u16(32)                                          # a new target
    e.u8(7).u8(2).u8(0).u8(1)                                # config read
    write(out, 'virtio_balloon', 'inflate-deflate', e)

    e = start(opts=2, interval=5)
    stats = b''.join(struct.pack('<HQ', tag, 1000 * (tag + 1)) for tag in range(10))
    act(e, 2).poke(0x5000, stats[:250])
    act(e, 2).chain([(0x5000, len(stats), False)])
    e.u8(3).u8(2)
    e.u8(5)                                                  # request_stats
    e.u8(3).u8(2)
    write(out, 'virtio_balloon', 'stats', e)

    e = start(opts=4)
    act(e, 2).chain([(0x10000, 0x4000, True), (0x18000, 0x1000, True)])
    e.u8(3).u8(2)
    write(out, 'virtio_balloon', 'reporting', e)

    e = start(opts=7, interval=1)
    act(e, 0).chain([(0x4000, 6, False)])                    # not a multiple of 4
    e.u8(3).u8(0)
    e.u8(6).u32(0xffffffff).u8(0x73)                          # reset, activate again
    pfns(e, 0, 0x4000, [0x18])
    write(out, 'virtio_balloon', 'malformed-reset', e)


def mmio_seeds(out):
    def negotiate(e, mask=0xffffffffffffffff):
        return e.u8(5).u64(mask)

    def setup(e, q, size_log2=4):
        return e.u8(6).u8(q).u8(size_log2)

    def act(e, q):
        return e.u8(8).u8(q)

    def driver_ok(e):
        return e.u8(7)

    def notify(e, q):
        return e.u8(10).u8(q)

    # virtio-blk: negotiate, queue, DRIVER_OK, one read, interrupt ack, reset.
    e = Enc().u8(0).u8(2).u8(63)
    negotiate(e)
    setup(e, 0)
    driver_ok(e)
    act(e, 0)
    blk_header(e, 0, 1)
    act(e, 0).chain([(HDR, 16, False), (DATA, 512, True), (STATUS, 1, True)])
    notify(e, 0)
    e.u8(11).u8(0)                 # interrupt ack
    e.u8(0).u8(8).u32(0)           # status 0: reset
    write(out, 'mmio_transport', 'blk-read', e)

    # virtio-net: both queues, a transmit.
    e = Enc().u8(1).u8(0)
    negotiate(e)
    setup(e, 0)
    setup(e, 1)
    driver_ok(e)
    act(e, 1).chain([(0x4000, 12 + 60, False)])
    notify(e, 1)
    write(out, 'mmio_transport', 'net-tx', e)

    # virtio-balloon with statistics: config space access, an inflate.
    e = Enc().u8(2).u8(2).u8(8)
    negotiate(e)
    for q in range(3):
        setup(e, q)
    driver_ok(e)
    e.u8(3).u16(0x100).u8(2).u8(1)  # 4-byte config read at 0x100
    e.u8(3).u16(0x104).u8(2).u8(0).u64(16)  # config write: actual
    act(e, 0).poke(0x4000, struct.pack('<2I', 0x10, 0x11))
    act(e, 0).chain([(0x4000, 8, False)])
    notify(e, 0)
    write(out, 'mmio_transport', 'balloon-inflate', e)

    # DRIVER_OK without FEATURES_OK, features not offered, a queue outside memory.
    e = Enc().u8(0).u8(0).u8(7)
    e.u8(0).u8(8).u32(3)                    # ACK | DRIVER
    e.u8(0).u8(2).u32(1)                    # DriverFeaturesSel 1
    e.u8(0).u8(1).u32(0xffffffff)           # every feature
    e.u8(0).u8(8).u32(0xb)                  # FEATURES_OK
    e.u8(0).u8(3).u32(0)                    # QueueSel 0
    e.u8(0).u8(9).u32(0xfffff000)           # QueueDescLow outside memory
    e.u8(0).u8(5).u32(1)                    # QueueReady
    driver_ok(e)
    write(out, 'mmio_transport', 'bad-negotiation', e)


# ---------------------------------------------------------------------------------------------
# pci_transport: two functions (each: the device choice as in mmio_transport), then operations
# (tests/fuzz/pci_transport.cpp), each naming the function first. Function 0's rings at
# q * 0x1000, function 1's from 0x8000; buffers at 0x4000-0x7fff and from 0xe000.
def pci_seeds(out):
    def negotiate(e, f, mask=0xffffffffffffffff):
        return e.u8(5).u8(f).u64(mask)

    def setup(e, f, q, vector, size_log2=4):
        return e.u8(6).u8(f).u8(q).u8(size_log2).u8(vector)

    def driver_ok(e, f, config_vector):
        return e.u8(7).u8(f).u8(config_vector)

    def act(e, f, q):
        return e.u8(8).u8(f).u8(q)

    def notify(e, f, q):
        return e.u8(10).u8(f).u8(q).u8(1).u8(1).u8(1)  # at the queue's address, 2 bytes, value q

    def vector(e, f, index, data, unmask=True):
        return e.u8(11).u8(f).u8(index).u8(0).u32(data).u8(1 if unmask else 0).raw(b'' if unmask else b'\1\0\0\0')

    def msix_control(e, f, bits):  # bits: 2 = enable, 3 = enable + function mask
        return e.u8(12).u8(f).u8(0).u8(bits)

    def reads(e, f):
        return e.u8(14).u8(f).u8(0).u8(2)

    # virtio-blk (function 0) with MSI-X: vectors, enable, negotiate, a queue on vector 0,
    # DRIVER_OK, one read, the ISR, then a reset through the status field.
    e = Enc().u8(0).u8(2).u8(63).u8(1).u8(0)
    vector(e, 0, 0, 0x30)
    vector(e, 0, 1, 0x31)
    msix_control(e, 0, 2)
    negotiate(e, 0)
    setup(e, 0, 0, 0)
    driver_ok(e, 0, 1)
    act(e, 0, 0)
    blk_header(e, 0, 1)
    act(e, 0, 0).chain([(HDR, 16, False), (0x5000, 512, True), (STATUS, 1, True)])
    notify(e, 0, 0)
    reads(e, 0)
    e.u8(0).u8(0).u8(4).u64(0)  # common config: device_status 0 (reset)
    write(out, 'pci_transport', 'blk-read-msix', e)

    # virtio-balloon (function 0) and virtio-net (function 1): both set up, a transmit on the
    # net function with MSI-X off (ISR only), an inflate on the balloon with its vector masked.
    e = Enc().u8(2).u8(2).u8(8).u8(1).u8(0)
    negotiate(e, 1)
    setup(e, 1, 0, 0)
    setup(e, 1, 1, 1)
    driver_ok(e, 1, 2)
    act(e, 1, 1).chain([(0xe000, 12 + 60, False)])
    notify(e, 1, 1)
    reads(e, 1)
    vector(e, 0, 0, 0x40, unmask=False)
    msix_control(e, 0, 2)
    negotiate(e, 0)
    for q in range(3):
        setup(e, 0, q, q)
    driver_ok(e, 0, 3)
    act(e, 0, 0).poke(0x4000, struct.pack('<2I', 0x10, 0x11))
    act(e, 0, 0).chain([(0x4000, 8, False)])
    notify(e, 0, 0)
    vector(e, 0, 0, 0x40)  # unmasked now: the pending interrupt goes out
    write(out, 'pci_transport', 'balloon-net', e)

    # Configuration space: the BAR moved (memory decoding off and on), sized, through ports and
    # ECAM; then a negotiation at the new place.
    e = Enc().u8(0).u8(0).u8(7).u8(0).u8(1).u8(3)
    e.u8(13).u8(0).u8(0).u16(0)                  # command: memory space off
    e.u8(13).u8(0).u8(1).u8(0).u8(0x20)          # BAR 0 to window + 0x20000
    e.u8(13).u8(0).u8(0).u16(6)                  # memory space and bus master on
    e.u8(13).u8(1).u8(2).u8(0).u32(0xc0000000)   # function 1: BAR sizing, then over function 0's old place
    e.u8(3).u8(1).u8(0).u8(1).u8(0).u8(0).u8(4).u8(2).u8(1)   # latch 00:01.0 reg 0, 4-byte data read (IDs)
    e.u8(4).u8(0).u8(2).u8(0).u16(0x40).u8(0).u8(1)         # ECAM 00:02.0, byte read at 0x40
    negotiate(e, 0)
    write(out, 'pci_transport', 'bar-moves', e)

    # Bad values: a queue vector out of range, DRIVER_OK with a queue outside memory, a function
    # mask, a notification of a queue that does not exist and one at an odd address.
    e = Enc().u8(1).u8(0).u8(0).u8(2).u8(4)
    msix_control(e, 0, 3)
    negotiate(e, 0)
    e.u8(6).u8(0).u8(0).u8(4).u8(0xff).u16(0x7ff)  # queue 0 on vector 0x7ff
    e.u8(0).u8(0).u8(9).u64(0xfffffffffffff000)     # queue_desc outside memory
    driver_ok(e, 0, 0)
    e.u8(10).u8(0).u8(2).u8(1).u8(1).u8(1)
    e.u8(10).u8(0).u8(0).u8(0).u8(3).u8(2).u8(0).u32(0xffff)
    write(out, 'pci_transport', 'bad-values', e)


# ---------------------------------------------------------------------------------------------
# virtio_vsock: steps 0 guest packet, 3 receive buffer, 4 kick, 5 host connect, 6 host write,
# 7 host close, 9 reset, 11 run the loop (tests/fuzz/virtio_vsock.cpp).
VS_SERVICE, VS_HOST_PORT, VS_GUEST_PORT = 0, 1, 2


def vs_start(e, max_connections=7, features=0):
    return e.u8(max_connections).u32(features)


def vs_rx(e, n=4):
    for _ in range(n):
        e.u8(3).u8(1).u8(0)
    return e.u8(4).u8(0)


def vs_packet(e, op, src=(VS_GUEST_PORT, 0), dst=(VS_SERVICE, 0), data=b'', flags=0, mode=0, extra=()):
    """op 1-7 (REQUEST .. CREDIT_REQUEST); src/dst: (selector, index) as VsockFuzzer::port reads them."""
    e.u8(0).u8(mode)
    for v in extra:
        e.u64(v)
    e.u8(src[0]).u8(src[1]).u8(dst[0]).u8(dst[1])
    e.u8(op - 1).u8(flags).u32(0).u16(len(data)).raw(data)
    return e.u8(1)


def vsock_seeds(out):
    # Guest to a host service: REQUEST, data both ways, SHUTDOWN of both directions.
    e = vs_rx(vs_start(Enc()))
    vs_packet(e, 1)
    vs_packet(e, 5, data=b'hello')
    e.u8(6).u16(5).raw(b'world').u8(0)
    vs_packet(e, 6)
    vs_packet(e, 4, flags=3)
    e.u8(11)
    write(out, 'virtio_vsock', 'guest-connects-data-shutdown', e)

    # Host to guest: CONNECT 1000, the guest's RESPONSE to the host port it was offered, data
    # both ways, then the host closes.
    e = vs_rx(vs_start(Enc()))
    e.u8(5).u8(1).u8(VS_GUEST_PORT).u8(0)
    vs_packet(e, 2, dst=(VS_HOST_PORT, 0))
    e.u8(6).u16(4).raw(b'ping').u8(0)
    vs_packet(e, 5, dst=(VS_HOST_PORT, 0), data=b'pong')
    e.u8(7).u8(0).u8(0)
    e.u8(11)
    write(out, 'virtio_vsock', 'host-connects-data-close', e)

    # Malformed: another source CID, a datagram type, a len beyond the payload, an unknown op,
    # a REQUEST to a port nobody listens on, a garbage CONNECT line; then a reset while a
    # connection is open.
    e = vs_rx(vs_start(Enc(), max_connections=1))
    vs_packet(e, 1, mode=1, extra=(99,))
    e.u8(0).u8(4).u8(VS_GUEST_PORT).u8(1).u8(VS_SERVICE).u8(1).u16(3).u8(0).u8(0).u32(0).u16(0).u8(1)
    e.u8(0).u8(32).u8(VS_GUEST_PORT).u8(1).u8(VS_SERVICE).u8(1).u8(4).u8(0).u32(0).u16(3).raw(b'abc').u32(4096).u8(1)
    e.u8(0).u8(8).u8(VS_GUEST_PORT).u8(2).u8(VS_SERVICE).u8(0).u16(0x99).u8(0).u32(0).u16(0).u8(1)
    vs_packet(e, 1, src=(VS_GUEST_PORT, 3), dst=(3, 0))
    e.raw(b'\x00\x00\x00\x00')
    e.u8(5).u8(0).u8(9).raw(b'CONNECT x')
    vs_packet(e, 1, src=(VS_GUEST_PORT, 2), dst=(VS_SERVICE, 1))
    e.u8(9).u32(0)
    vs_rx(e)
    e.u8(11)
    write(out, 'virtio_vsock', 'malformed-and-reset', e)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus')
    split_queue_seeds(out)
    blk_seeds(out)
    net_seeds(out)
    balloon_seeds(out)
    mmio_seeds(out)
    pci_seeds(out)
    vsock_seeds(out)


if __name__ == '__main__':
    main()
