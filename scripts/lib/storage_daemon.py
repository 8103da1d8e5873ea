"""qemu-storage-daemon exporting a raw image as a vhost-user-blk socket: the drive behind
embervm's `socket` key in scripts/bench-blk --vhost-user and the vhost-user test guests."""
import os
import subprocess
import time


class Error(Exception):
    pass


def listening(sock):
    """Whether a Unix stream socket at path SOCK listens (/proc/net/unix, flag __SO_ACCEPTCON),
    found without connecting. The file alone is not enough: a server binds (the file appears)
    before it listens, and a connect in between is refused."""
    with open("/proc/net/unix") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == sock and int(fields[3], 16) & 0x10000:
                return True
    return False


def start(qsd, image, sock, aio=None, timeout=30):
    """Starts QSD exporting IMAGE (writable; file driver, aio=AIO when given) at the Unix socket
    SOCK and returns the process once it listens there. Raises Error with the daemon's stderr
    when it exits or does not listen within TIMEOUT seconds."""
    if os.path.exists(sock):
        os.unlink(sock)
    blockdev = f"driver=file,node-name=d,filename={image}" + (f",aio={aio}" if aio else "")
    p = subprocess.Popen([qsd, "--blockdev", blockdev,
                          "--export", f"type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path={sock},"
                          "writable=on"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not listening(sock):
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            p.wait()
            raise Error(f"qemu-storage-daemon did not listen on {sock}: {p.stderr.read().decode(errors='replace')}")
        time.sleep(0.05)
    return p
