"""What the snapshot tests (tests/guests/run-snapshot-test) and scripts/bench-snapshot share: an
embervm process driven through its API socket with its console in a file, the counts a guest
prints on it, a process's memory figures, the minimal Linux guest counting onto its drive
(init.sh gtest=snapshot) and a private network namespace with a TAP device in it."""
import ctypes
import http.client
import json
import os
import re
import socket
import subprocess
import time

SCALE = int(os.environ.get("EMBERVM_TEST_TIMEOUT_MULTIPLIER", "1"))


class Fail(Exception):
    """A check failed; the message says which."""


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def connect_unix(path, proc, what, timeout):
    """A connection to the Unix socket PATH once PROC listens on it (the file appears at bind(),
    before listen(): until then a connection is refused)."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError as e:
            s.close()
            if time.monotonic() > deadline or proc.poll() is not None:
                raise Fail(f"{what}: cannot connect to {path}: {e}")
        time.sleep(0.005)


def counts(text, word="count"):
    """The numbers of the guest's 'WORD N' lines, in order."""
    return [int(n) for n in re.findall(word + r" (\d+)\r?\n", text)]


def memory_kib(pid):
    """{'Rss': KiB, 'Pss': KiB, ...} of a process, from /proc/PID/smaps_rollup."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


class Vmm:
    """An embervm process with an API socket and its console in a file. WRAP is put before the
    embervm command (for instance `unshare --mount ...`: it must exec embervm in the end, so that
    the process's PID is embervm's)."""

    def __init__(self, embervm, workdir, name, wrap=(), word="count"):
        self.name = name
        self.word = word
        self.sock = os.path.join(workdir, name + ".sock")
        self.console = os.path.join(workdir, name + ".out")
        self.log = os.path.join(workdir, name + ".log")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(list(wrap) + [embervm, "--api-sock", self.sock, "--serial-out", self.console],
                                     stdin=subprocess.DEVNULL, stderr=open(self.log, "w"))
        connect_unix(self.sock, self.proc, f"{name}: the API socket", 30 * SCALE).close()

    def request(self, method, path, body=None):
        conn = UnixConnection(self.sock, 120 * SCALE)
        conn.request(method, path, body=json.dumps(body) if body is not None else None)
        r = conn.getresponse()
        data = r.read().decode()
        conn.close()
        return r.status, data

    def ok(self, method, path, body=None):
        status, data = self.request(method, path, body)
        if status // 100 != 2:
            raise Fail(f"{self.name}: {method} {path}: {status} {data}")

    def output(self):
        try:
            with open(self.console, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def counts(self):
        return counts(self.output(), self.word)

    def wait_for(self, pred, what, timeout=60):
        """Waits until PRED(console text) holds."""
        deadline = time.monotonic() + timeout * SCALE
        while True:
            text = self.output()
            if pred(text):
                return text
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise Fail(f"{self.name}: {what} after {time.monotonic() - self.started:.0f} s (exit status "
                           f"{self.proc.poll()}; {self.cpu_times()}): ...{text[-400:]!r} "
                           f"log: {open(self.log, errors='replace').read()[-600:]!r}")
            time.sleep(0.005)

    def wait_counts(self, n, timeout=60):
        """Waits for N counts on the console."""
        self.wait_for(lambda t: len(counts(t, self.word)) >= n, f"fewer than {n} {self.word}s", timeout)

    def wait_count_past(self, last, timeout=60):
        """Waits for a count above LAST."""
        self.wait_for(lambda t: any(c > last for c in counts(t, self.word)), f"no {self.word} above {last}", timeout)

    def load(self, snap, mem, resume=True, backend="File", **extra):
        """PUT /snapshot/load; MEM is the memory file (File) or the handler's socket (Uffd)."""
        return self.request("PUT", "/snapshot/load", {"snapshot_path": snap, "mem_backend": {
            "backend_type": backend, "backend_path": mem}, "resume_vm": resume, **extra})

    def cpu_times(self):
        """The CPU seconds of each of the process's threads, for a diagnosis."""
        out = []
        try:
            for tid in sorted(os.listdir(f"/proc/{self.proc.pid}/task"), key=int):
                with open(f"/proc/{self.proc.pid}/task/{tid}/stat") as f:
                    stat = f.read()
                fields = stat[stat.rindex(")") + 2:].split()
                ticks = int(fields[11]) + int(fields[12])
                out.append(f"{stat[stat.index('(') + 1:stat.rindex(')')]} {ticks / os.sysconf('SC_CLK_TCK'):.1f} s")
        except OSError:
            return "no CPU times"
        return "CPU " + ", ".join(out)

    def memory_kib(self):
        return memory_kib(self.proc.pid)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


# ---- the minimal Linux guest counting onto its drive (init.sh gtest=snapshot) ----------------

def linux_paths():
    """The minimal Linux guest's kernel and initramfs (scripts/test sets the variables)."""
    kdir, initrd = os.environ.get("EMBERVM_TEST_KERNEL_DIR", ""), os.environ.get("EMBERVM_TEST_INITRAMFS", "")
    kernel = os.path.join(kdir, "vmlinux")
    if not os.path.isfile(kernel) or not os.path.isfile(initrd):
        raise Fail("EMBERVM_TEST_KERNEL_DIR (with a vmlinux) and EMBERVM_TEST_INITRAMFS are needed "
                   "(scripts/build-guest-kernel, scripts/build-initramfs; scripts/test sets them)")
    return kernel, initrd


LINUX_CMDLINE = "console=ttyS0 reboot=k panic=-1 oops=panic gtest=snapshot"


def make_disk(path, mib=16):
    with open(path, "wb") as f:
        f.truncate(mib << 20)


def boot_linux(vmm, disk, mem_mib, extra_args="", net=None, vsock=None, track_dirty_pages=False, vhost=False,
               drive_socket=None, pci=False):
    """Boots the counting Linux guest in VMM (an embervm without a VM yet) on drive DISK; NET a
    TAP device name for eth0 (served by vhost-net with VHOST), VSOCK a uds_path for a vsock device
    with guest CID 3. With DRIVE_SOCKET the drive is a vhost-user-blk drive whose backend (serving
    DISK) listens there. PCI puts every virtio device on virtio-pci (PUT /pci, embervm's own:
    Firecracker has only a flag)."""
    kernel, initrd = linux_paths()
    if pci:
        vmm.ok("PUT", "/pci", {"enable_pci": True})
    vmm.ok("PUT", "/boot-source", {"kernel_image_path": kernel, "initrd_path": initrd,
                                   "boot_args": (LINUX_CMDLINE + " " + extra_args).strip()})
    vmm.ok("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": mem_mib, "track_dirty_pages": track_dirty_pages})
    if drive_socket:
        vmm.ok("PUT", "/drives/d0", {"drive_id": "d0", "socket": drive_socket, "is_root_device": False,
                                     "cache_type": "Writeback"})
    else:
        vmm.ok("PUT", "/drives/d0", {"drive_id": "d0", "path_on_host": disk, "is_root_device": False,
                                     "is_read_only": False})
    if net:
        iface = {"iface_id": "eth0", "host_dev_name": net, "guest_mac": "06:00:0a:00:02:0f"}
        if vhost:
            iface["vhost"] = True
        vmm.ok("PUT", "/network-interfaces/eth0", iface)
    if vsock:
        vmm.ok("PUT", "/vsock", {"guest_cid": 3, "uds_path": vsock})
    vmm.ok("PUT", "/actions", {"action_type": "InstanceStart"})


def check_drive(disk, last):
    """Sector N of DISK holds 'SNAP N' for every count N up to LAST."""
    with open(disk, "rb") as f:
        image = f.read(512 * (last + 1))
    for n in range(last + 1):
        want = f"SNAP {n}".encode()
        if image[512 * n:512 * n + len(want)] != want:
            raise Fail(f"{disk}: sector {n} does not hold '{want.decode()}' though the console showed count {n}")


# ---- a private network namespace with a TAP device --------------------------------------------

class NetNamespace:
    """A network namespace NAME with loopback up and TAP device TAP at HOST_ADDR/24; enter() moves
    this process (its sockets and every process it starts from then on) into it."""

    def __init__(self, name, tap, host_addr):
        self.name, self.tap = name, tap
        if subprocess.run(["ip", "netns", "add", name]).returncode != 0:
            raise Fail(f"ip netns add {name} failed (needs root / CAP_NET_ADMIN)")
        for cmd in (["link", "set", "lo", "up"], ["tuntap", "add", "dev", tap, "mode", "tap"],
                    ["addr", "add", f"{host_addr}/24", "dev", tap], ["link", "set", tap, "up"]):
            if subprocess.run(["ip", "-n", name] + cmd).returncode != 0:
                self.delete()
                raise Fail(f"ip -n {name} {' '.join(cmd)} failed")

    def enter(self):
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                raise Fail(f"setns into {self.name}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)


# ---- 3 clones from one snapshot next to 3 fresh boots -----------------------------------------

MEMORY_KEYS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")


def own_drive(copy, disk):
    """The command prefix that runs a process in a mount namespace of its own where the file COPY
    is seen at the path DISK (the path the snapshot re-opens): each clone writes its own drive."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", copy, disk]


def clones_and_fresh(embervm, work, snap, mem, disk, mem_mib, saved, more=10, log=print):
    """Restores 3 clones at once from SNAP + MEM (the guest counting onto DISK, its console up to
    the snapshot SAVED), each on its own copy of DISK; checks that each goes on counting from the
    snapshot for MORE counts and that every count is on its drive, and takes each one's memory
    figures then. Then boots the same guest 3 times afresh (one after another: Linux guests
    booting at once can triple-fault under KVM nested in QEMU TCG), each on its own drive, and
    takes their figures when all have reached the clones' count. Returns (clones, fresh): lists
    of memory_kib() dicts."""
    base = counts(saved)[-1]
    target = base + more
    clones = []
    try:
        for i in range(3):
            copy = os.path.join(work, f"clone{i}.img")
            subprocess.run(["cp", "--sparse=always", disk, copy], check=True)
            clones.append((Vmm(embervm, work, f"clone{i}", wrap=own_drive(copy, disk)), copy))
        t = time.monotonic()
        for c, _ in clones:
            status, data = c.load(snap, mem)
            if status != 204:
                raise Fail(f"{c.name}: load: {status} {data}")
        log(f"3 clones loaded in {(time.monotonic() - t) * 1000:.0f} ms")
        for c, _ in clones:
            c.wait_count_past(target - 1, 300)
        log(f"3 clones counted past {target - 1}")
        clone_mem = [c.memory_kib() for c, _ in clones]
        for c, copy in clones:
            c.ok("PATCH", "/vm", {"state": "Paused"})
            check_continues(saved, c.output(), c.name)
            check_drive(copy, c.counts()[-1])
    finally:
        for c, _ in clones:
            c.kill()
    fresh = []
    try:
        for i in range(3):
            d = os.path.join(work, f"fresh{i}.img")
            make_disk(d)
            v = Vmm(embervm, work, f"fresh{i}")
            fresh.append(v)
            boot_linux(v, d, mem_mib)
            v.wait_counts(1, 300)
            log(f"fresh boot {i} counts")
        for v in fresh:
            v.wait_count_past(target - 1, 300)
        fresh_mem = [v.memory_kib() for v in fresh]
    finally:
        for v in fresh:
            v.kill()
    return clone_mem, fresh_mem


def memory_table(clones, fresh):
    """Markdown lines: each process's figures (MiB) and the sums."""
    head = "| | " + " | ".join(f"{k} MiB" for k in MEMORY_KEYS) + " |"
    lines = [head, "|" + "---|" * (len(MEMORY_KEYS) + 1)]
    for name, group in (("clone", clones), ("fresh boot", fresh)):
        for i, m in enumerate(group):
            lines.append(f"| {name} {i} | " + " | ".join(f"{m.get(k, 0) / 1024:.1f}" for k in MEMORY_KEYS) + " |")
        lines.append(f"| **3 {name}s** | " + " | ".join(f"{sum(m.get(k, 0) for m in group) / 1024:.1f}"
                                                     for k in MEMORY_KEYS) + " |")
    return lines


# A kernel message on the console ("[    3.304961] clocksource: ..."): the kernel writes it at
# once, in the middle of a line that user space is writing through the UART's interrupts if it
# comes then.
KERNEL_LINE = re.compile(r"\[ *\d+\.\d+\] [^\r\n]*\r?\n")


def check_continues(before, after, what, word="count", restart="INIT-START"):
    """The restored console AFTER goes on where the saved one BEFORE stopped: no restart, no gap,
    no repeat; and the guest's clocks agree after the restore."""
    if restart in after:
        raise Fail(f"{what}: the guest started again: {after[:200]!r}")
    # The TSC and kvmclock are restored in step (vmm/kvm/vcpu_state.h); a skew makes Linux's
    # clocksource watchdog complain.
    for m in re.finditer(r"\[ *\d+\.\d+\] clocksource: [^\r\n]*unstable[^\r\n]*", after):
        raise Fail(f"{what}: after the restore the guest's clocks disagree: {m.group(0)!r}")
    joined = counts(KERNEL_LINE.sub("", before + after), word)
    if not joined or joined != list(range(joined[0], joined[0] + len(joined))):
        raise Fail(f"{what}: the {word}s do not continue: {counts(before, word)[-3:]} then {counts(after, word)[:3]} "
                   f"(the saved console ends {before[-300:]!r}, the restored one begins {after[:300]!r})")
    if not counts(after, word):
        raise Fail(f"{what}: no {word} after the restore")
