#!/usr/bin/env python3
"""Writes the binary seed corpora of the fuzz targets that take images or machine state:
boot_elf, boot_bzimage, boot_initrd, insn_decode and vhost_user_frontend
(tests/fuzz/corpus/NAME/). Their input layouts are described at the top of
tests/fuzz/boot_harness.h, boot_initrd.cpp, insn_decode.cpp and vhost_user_frontend.cpp. Deterministic: running it again rewrites the same files.

    tests/fuzz/make_corpus.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# boot_harness.h: byte 0 flags
MEM = {"1M": 0, "2M": 1, "4M": 2, "16M": 3, "64M": 4, "256M": 5, "3G+8M": 6, "4G+4M": 7}
PVH, ACPI, INITRD, KERNEL_FD, INITRD_FD = 0x08, 0x10, 0x20, 0x40, 0x80


def boot_header(mem="16M", flags=0, vcpus=1, cmdline=13, initrd=0):
    return struct.pack("<BBHI", MEM[mem] | flags, vcpus, cmdline, initrd)


def elf(segments, entry, notes=b"", note_align=4, extra_phdrs=()):
    """An ELF64 x86-64 ET_EXEC: segments are (paddr, data, memsz); notes go in a PT_NOTE."""
    phdrs = []
    nph = len(segments) + (1 if notes else 0) + len(extra_phdrs)
    off = 64 + 56 * nph
    body = b""
    for paddr, data, memsz in segments:
        phdrs.append(struct.pack("<IIQQQQQQ", 1, 5, off + len(body), paddr | 0xffffffff80000000, paddr,
                                 len(data), memsz, 0x200000))
        body += data
    if notes:
        phdrs.append(struct.pack("<IIQQQQQQ", 4, 4, off + len(body), 0, 0, len(notes), len(notes), note_align))
        body += notes
    for ph in extra_phdrs:
        phdrs.append(ph)
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, 64, 0, 0, 64, 56, nph, 64, 0, 0)
    return ehdr + b"".join(phdrs) + body


def note(name, ntype, desc, align=4):
    def pad(b):
        return b + bytes((-len(b)) % align)
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def pvh_note(entry, size=4, align=4):
    return note(b"Xen\0", 18, struct.pack("<I" if size == 4 else "<Q", entry), align)


CODE = bytes([0xfa, 0xf4, 0xeb, 0xfd]) + bytes(60)  # cli; hlt; jmp .-1


def bzimage(setup_sects=1, version=0x20f, kernel=CODE * 16, loadflags=0x01, xloadflags=0x1,
            align=0x200000, relocatable=1, pref=0x1000000, init_size=0x20000, cmdline_size=2047,
            initrd_max=0x7fffffff, header_end=0x26c, syssize=None):
    sects = setup_sects if setup_sects else 4
    img = bytearray((sects + 1) * 512)
    img[0x1f1] = setup_sects
    struct.pack_into("<I", img, 0x1f4, len(kernel) // 16 if syssize is None else syssize)
    struct.pack_into("<H", img, 0x1fe, 0xaa55)
    img[0x200] = 0xeb
    img[0x201] = header_end - 0x202
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x206, version)
    img[0x211] = loadflags
    struct.pack_into("<I", img, 0x22c, initrd_max)
    struct.pack_into("<I", img, 0x230, align)
    img[0x234] = relocatable
    img[0x235] = 21
    struct.pack_into("<H", img, 0x236, xloadflags)
    struct.pack_into("<I", img, 0x238, cmdline_size)
    struct.pack_into("<Q", img, 0x258, pref)
    struct.pack_into("<I", img, 0x260, init_size)
    return bytes(img) + kernel


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def boot_elf():
    M = 0x100000
    plain = elf([(M, CODE, 0x2000)], M)
    with_pvh = elf([(M, CODE, 0x2000)], M, notes=pvh_note(M + 4))
    write("boot_elf", "plain-64bit-entry", boot_header() + plain)
    write("boot_elf", "pvh-note", boot_header(flags=PVH) + with_pvh)
    write("boot_elf", "pvh-note-8-byte-desc-acpi-2vcpus",
          boot_header(flags=PVH | ACPI, vcpus=2) + elf([(M, CODE, 0x2000)], M, notes=pvh_note(M, 8, 8), note_align=8))
    write("boot_elf", "pvh-note-not-preferred", boot_header() + with_pvh)
    write("boot_elf", "two-notes-and-padding",
          boot_header(flags=PVH) + elf([(M, CODE, 0x1000)], M,
                                       notes=note(b"Linux\0", 6, b"6.1\0") + pvh_note(M) + bytes(8)))
    write("boot_elf", "two-segments-bss-initrd",
          boot_header(flags=INITRD, initrd=0x3000) + elf([(M, CODE, 0x1000), (2 * M, CODE[:16], 0x10000)], 2 * M))
    write("boot_elf", "from-file-initrd-from-file",
          boot_header(flags=KERNEL_FD | INITRD | INITRD_FD, initrd=0x1234) + plain)
    write("boot_elf", "high-memory-layout", boot_header(mem="3G+8M", flags=ACPI | INITRD, vcpus=4, initrd=0x10000) + plain)
    write("boot_elf", "above-4g-segment",
          boot_header(mem="4G+4M") + elf([(M, CODE, 0x1000), (0x100000000, CODE, 0x1000)], M))
    write("boot_elf", "too-small-memory", boot_header(mem="2M") + elf([(M, CODE, 0x200000)], M))
    write("boot_elf", "long-cmdline", boot_header(cmdline=2047) + plain)
    write("boot_elf", "zero-vcpus", boot_header(vcpus=0) + plain)
    write("boot_elf", "non-load-phdr",
          boot_header() + elf([(M, CODE, 0x1000)], M,
                              extra_phdrs=[struct.pack("<IIQQQQQQ", 0x6474e551, 6, 0, 0, 0, 0, 0, 16)]))


def boot_bzimage():
    write("boot_bzimage", "relocatable-2.15", boot_header(mem="64M") + bzimage())
    write("boot_bzimage", "acpi-initrd-from-file",
          boot_header(mem="64M", flags=ACPI | INITRD | KERNEL_FD | INITRD_FD, vcpus=2, initrd=0x2000) + bzimage())
    write("boot_bzimage", "not-relocatable", boot_header(mem="64M") + bzimage(relocatable=0, setup_sects=0))
    write("boot_bzimage", "protocol-2.12", boot_header(mem="64M") + bzimage(version=0x20c, header_end=0x264))
    write("boot_bzimage", "small-init-size", boot_header(mem="4M") + bzimage(pref=0x100000, init_size=0x1000))
    write("boot_bzimage", "low-initrd-addr-max",
          boot_header(mem="64M", flags=INITRD, initrd=0x100000) + bzimage(initrd_max=0x1ffffff))
    write("boot_bzimage", "short-cmdline-size", boot_header(mem="64M", cmdline=300) + bzimage(cmdline_size=255))
    write("boot_bzimage", "high-memory", boot_header(mem="3G+8M", flags=INITRD, initrd=0x8000) + bzimage())
    write("boot_bzimage", "zimage", boot_header(mem="64M") + bzimage(loadflags=0))


def boot_initrd():
    def v(size, kend, amax, ram):
        return struct.pack("<QQQQ", size, kend, amax, ram)
    write("boot_initrd", "fits", v(0x100000, 0x200000, 0x37ffffff, 0x8000000))
    write("boot_initrd", "unaligned-size", v(0x12345, 0x1800123, 0x37ffffff, 0x8000000))
    write("boot_initrd", "addr-max-limits", v(0x1000, 0x200000, 0x1ffffff, 0xc0000000))
    write("boot_initrd", "no-limit", v(0x1000, 0x200000, 0xffffffffffffffff, 0x4000000))
    write("boot_initrd", "too-big", v(0x8000000, 0x200000, 0x37ffffff, 0x8000000))
    write("boot_initrd", "exact-fit", v(0x1000, 0x3000, 0x37ffffff, 0x4000))
    write("boot_initrd", "empty", v(0, 0x200000, 0x37ffffff, 0x8000000))


def insn_decode():
    # FuzzCpu: mode, cpl, unmapped, pad[5], 18 registers, fs_base, gs_base, kernel_gs_base
    LONG = 0x1 | 0x4 | 0x8 | 0x40  # cs.l, EFER.LMA, CR0.PE, CR4.FSGSBASE

    def cpu(mode=LONG, cpl=0, unmapped=8, regs=None, fs=0, gs=0, kgs=0):
        r = [0] * 18
        r[16] = 0x1000  # rip
        r[17] = 0x2     # rflags
        for i, val in (regs or {}).items():
            r[i] = val
        return struct.pack("<BBB5x18QQQQ", mode, cpl, unmapped, *r, fs, gs, kgs)

    def case(name, insn, state=None, memory=b""):
        write("insn_decode", name, bytes([len(insn)]) + bytes(insn) + (state or cpu()) + memory)

    RAX, RCX, RDX, RBX, RSP, RSI, RDI = 0, 2, 3, 1, 6, 4, 5
    case("nop", [0x90])
    case("pause", [0xf3, 0x90])
    case("nopl-modrm", [0x0f, 0x1f, 0x44, 0x00, 0x00])
    case("nopw-long", [0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00])
    case("fwait", [0x9b])
    case("fwait-ts-mp", [0x9b], cpu(mode=LONG | 0x10 | 0x20))
    case("int3", [0xcc])
    case("popcnt-reg", [0xf3, 0x48, 0x0f, 0xb8, 0xc1], cpu(regs={RCX: 0xf0f0}))
    case("popcnt-mem-riprel", [0xf3, 0x0f, 0xb8, 0x05, 0x00, 0x01, 0x00, 0x00], memory=bytes(0x1108) + b"\xff" * 4)
    case("popcnt-mem-fs", [0x64, 0xf3, 0x48, 0x0f, 0xb8, 0x04, 0x25, 0x10, 0x00, 0x00, 0x00], cpu(fs=0x2000))
    case("popcnt-sib", [0xf3, 0x0f, 0xb8, 0x04, 0x8b], cpu(regs={RBX: 0x3000, RCX: 4}))
    case("cmpxchg16b", [0xf0, 0x48, 0x0f, 0xc7, 0x0f], cpu(regs={RDI: 0x2000, RAX: 0, RDX: 0, RBX: 1, RCX: 2}))
    case("cmpxchg16b-unaligned", [0xf0, 0x48, 0x0f, 0xc7, 0x0f], cpu(regs={RDI: 0x2008}))
    case("cmpxchg8b", [0xf0, 0x0f, 0xc7, 0x0e], cpu(regs={RSI: 0x2000, RAX: 5}), memory=bytes(0x2000) + b"\x05" + bytes(7))
    case("cmpxchg8b-page-cross", [0x0f, 0xc7, 0x0e], cpu(regs={RSI: 0x2ffc}))
    case("cmpxchg8b-unmapped", [0x0f, 0xc7, 0x0e], cpu(regs={RSI: 0x2000}, unmapped=2))
    case("cmpxchg8b-outside-ram", [0x0f, 0xc7, 0x0e], cpu(regs={RSI: 0x180000}))
    case("cmpxchg8b-noncanonical", [0x0f, 0xc7, 0x0e], cpu(regs={RSI: 0x0000800000000000}))
    case("swapgs", [0x0f, 0x01, 0xf8], cpu(gs=0x1111, kgs=0x2222))
    case("swapgs-user", [0x0f, 0x01, 0xf8], cpu(cpl=3))
    case("clac", [0x0f, 0x01, 0xca])
    case("stac", [0x0f, 0x01, 0xcb])
    case("rdfsbase", [0xf3, 0x48, 0x0f, 0xae, 0xc0], cpu(fs=0x12345678))
    case("wrgsbase", [0xf3, 0x48, 0x0f, 0xae, 0xd8], cpu(regs={RAX: 0xffff800000000000}))
    case("wrfsbase-noncanonical", [0xf3, 0x48, 0x0f, 0xae, 0xd0], cpu(regs={RAX: 0x8000000000000000}))
    case("rdgsbase-no-fsgsbase", [0xf3, 0x0f, 0xae, 0xc8], cpu(mode=0x1 | 0x4 | 0x8))
    case("lfence", [0x0f, 0xae, 0xe8])
    case("mfence", [0x0f, 0xae, 0xf0])
    case("sfence", [0x0f, 0xae, 0xf8])
    case("lock-nop", [0xf0, 0x90])
    case("16-byte-prefixes", [0x66] * 14 + [0x90, 0x90])
    case("truncated", [0x0f])
    case("real-mode-nop", [0x90], cpu(mode=0, regs={16: 0xffff}))
    case("protected-32-int3", [0xcc], cpu(mode=0x2 | 0x8, regs={16: 0xffffffff}))
    case("compat-popcnt", [0xf3, 0x0f, 0xb8, 0xc1], cpu(mode=0x2 | 0x4 | 0x8))
    case("unsupported", [0x0f, 0x05])


# vhost_user_frontend.cpp: request numbers and the reply flags (version 1 | reply).
VU = {"GET_FEATURES": 1, "SET_FEATURES": 2, "SET_OWNER": 3, "SET_MEM_TABLE": 5, "SET_VRING_NUM": 8,
      "SET_VRING_ADDR": 9, "SET_VRING_BASE": 10, "GET_VRING_BASE": 11, "SET_VRING_KICK": 12,
      "SET_VRING_CALL": 13, "SET_VRING_ERR": 14, "GET_PROTOCOL_FEATURES": 15, "GET_QUEUE_NUM": 17,
      "SET_VRING_ENABLE": 18, "GET_CONFIG": 24}


def vu_reply(request, payload, flags=5):
    return struct.pack("<III", VU[request], flags, len(payload)) + payload


def vu_ack(request, status=0):
    return vu_reply(request, struct.pack("<Q", status))


def vu_stream(messages, fd_on=()):
    """The backend's stream: each message one chunk (ctl = its length, bit 7 = attach an eventfd)."""
    out = b""
    for i, m in enumerate(messages):
        while m:
            part, m = m[:127], m[127:]
            out += bytes([len(part) | (0x80 if i in fd_on else 0)]) + part
    return out


def vu_config(wanted=7, cfg_offset=0, cfg_size=60, acked=1 << 32, index=0, size=128, base=0):
    return struct.pack("<BBHQBHH", wanted, cfg_offset, cfg_size, acked, index, size, base)


def vhost_user_frontend():
    blk_config = bytes.fromhex("0000020000000000000000007e0000000000000000020000000001000100000000000100008000000100"
                               "000001000000008000000100000000000000")
    setup = [vu_reply("GET_FEATURES", struct.pack("<Q", 0x175007e46)),
             vu_reply("GET_PROTOCOL_FEATURES", struct.pack("<Q", 0x8f2b)),
             vu_ack("SET_OWNER"),
             vu_reply("GET_QUEUE_NUM", struct.pack("<Q", 1)),
             vu_reply("GET_CONFIG", struct.pack("<III", 0, 60, 0) + blk_config)]
    start = [vu_ack(r) for r in ("SET_FEATURES", "SET_MEM_TABLE", "SET_VRING_NUM", "SET_VRING_BASE",
                                 "SET_VRING_ADDR", "SET_VRING_KICK", "SET_VRING_CALL", "SET_VRING_ERR",
                                 "SET_VRING_ENABLE")]
    stop = [vu_reply("GET_VRING_BASE", struct.pack("<II", 0, 17))]
    write("vhost_user_frontend", "whole-conversation-reply-ack", vu_config() + vu_stream(setup + start + stop))
    write("vhost_user_frontend", "no-protocol-features",
          vu_config(wanted=0) + vu_stream([vu_reply("GET_FEATURES", struct.pack("<Q", 0x100000000))] + stop))
    write("vhost_user_frontend", "descriptor-with-features", vu_config() + vu_stream(setup, fd_on=(0,)))
    write("vhost_user_frontend", "nack-mem-table",
          vu_config() + vu_stream(setup + [vu_ack("SET_FEATURES"), vu_ack("SET_MEM_TABLE", 1)]))
    write("vhost_user_frontend", "config-size-mismatch",
          vu_config() + vu_stream(setup[:4] + [vu_reply("GET_CONFIG", struct.pack("<III", 0, 59, 0) + blk_config[:59])]))
    write("vhost_user_frontend", "wrong-queue-base",
          vu_config() + vu_stream(setup + start + [vu_reply("GET_VRING_BASE", struct.pack("<II", 3, 17))]))
    write("vhost_user_frontend", "truncated-header", vu_config() + vu_stream([setup[0][:7]]))


if __name__ == "__main__":
    boot_elf()
    boot_bzimage()
    boot_initrd()
    insn_decode()
    vhost_user_frontend()
