"""qemu-storage-daemon exporting a raw image as a vhost-user-blk socket: the drive behind
embervm's `socket` key in scripts/bench-blk --vhost-user and the vhost-user test guests."""
import os
import subprocess
import time


class Error(Exception):
    pass


def start(qsd, image, sock, aio=None, timeout=30):
    """Starts QSD exporting IMAGE (writable; file driver, aio=AIO when given) at the Unix socket
    SOCK and returns the process once the socket exists. Raises Error with the daemon's stderr
    when it exits or does not listen within TIMEOUT seconds."""
    if os.path.exists(sock):
        os.unlink(sock)
    blockdev = f"driver=file,node-name=d,filename={image}" + (f",aio={aio}" if aio else "")
    p = subprocess.Popen([qsd, "--blockdev", blockdev,
                          "--export", f"type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path={sock},"
                          "writable=on"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not os.path.exists(sock):
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            p.wait()
            raise Error(f"qemu-storage-daemon did not listen on {sock}: {p.stderr.read().decode(errors='replace')}")
        time.sleep(0.05)
    return p
