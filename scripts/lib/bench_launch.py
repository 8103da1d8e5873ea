#!/usr/bin/env python3
"""scripts/bench-launch's measurement (see there for what and why); configured by BL_* variables."""
import json
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import callgrind_startup

E = os.environ
EMBERVM, TINY, QEMU = E["BL_EMBERVM"], E["BL_TINY"], E["BL_QEMU"]
NS = [int(n) for n in E["BL_NS"].split(",")]
MODES, VIAS, GUESTS = E["BL_MODES"].split(","), E["BL_VIAS"].split(","), E["BL_GUESTS"].split(",")
VMMS = ["embervm", "qemu"] if E["BL_VMM"] == "both" else [E["BL_VMM"]]
MEM, TIMEOUT = int(E["BL_MEM"]), float(E["BL_TIMEOUT"])
CALLGRIND = E.get("BL_CALLGRIND", "1") == "1"
LINUX_CMDLINE = E["BL_LINUX_CMDLINE"]
KERNEL_DIR, INITRAMFS = E.get("EMBERVM_TEST_KERNEL_DIR", ""), E.get("EMBERVM_TEST_INITRAMFS", "")
TINY_CMDLINE = "bench"
KVM_RUN = 0xAE80
NCPU = os.cpu_count() or 1
# What ends the measured part of a boot: the guest's first whole line.
FIRST_LINE = {"tiny": b"idle: ready", "linux": b"Linux version"}
# The exit status of a VMM ended by SIGTERM.
SIGTERM_STATUS = {"embervm": 128 + signal.SIGTERM, "qemu": 0}

work = tempfile.mkdtemp(prefix="embervm-bench-launch.")  # Unix sockets: /tmp (a tmpfs in with-kvm's VM)


class Fail(Exception):
    pass


VMSTAT_KEYS = ("pgfault", "pgmajfault", "thp_fault_alloc", "compact_stall", "pgscan_direct", "pgfree")


def vmstat():
    """This kernel's /proc/vmstat counters named in VMSTAT_KEYS."""
    out = {}
    with open("/proc/vmstat") as f:
        for line in f:
            key, _, value = line.partition(" ")
            if key in VMSTAT_KEYS:
                out[key] = int(value)
    return out


def say(msg):
    print(f"bench-launch: {msg}", file=sys.stderr, flush=True)


# ---- the scheduler trace ---------------------------------------------------------------------

class Trace:
    """An ftrace instance of its own recording, with the `mono` clock (time.monotonic()'s), the
    scheduler's switches, execs and KVM_RUN ioctls of this process and everything it starts."""

    def __init__(self):
        root = "/sys/kernel/tracing"
        if not os.path.isdir(os.path.join(root, "instances")):
            if os.system(f"mount -t tracefs nodev {root} 2>/dev/null") != 0 or not os.path.isdir(f"{root}/instances"):
                raise Fail(f"tracefs is not available at {root} (the CPU times come from the scheduler's trace)")
        self.dir = os.path.join(root, "instances", f"embervm-bench-launch-{os.getpid()}")
        os.mkdir(self.dir)
        self.write("trace_clock", "mono")
        # 512 MiB in all: 50 QEMUs booting Linux at once switch threads often enough to overrun
        # 64 MiB (19320 events lost in a 1-vCPU nested VM).
        self.write("buffer_size_kb", str(512 * 1024 // max(1, NCPU)))
        self.write("options/record-tgid", "1")
        self.write("options/event-fork", "1")
        self.write("set_event_pid", str(os.getpid()))
        self.write("events/syscalls/sys_enter_ioctl/filter", f"cmd == {KVM_RUN:#x}")
        for ev in ("sched/sched_switch", "sched/sched_process_exec", "syscalls/sys_enter_ioctl"):
            self.write(f"events/{ev}/enable", "1")

    def write(self, name, value):
        try:
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(value)
        except OSError as e:
            raise Fail(f"tracefs: cannot write '{value}' to {name}: {e}")

    def start(self):
        self.write("trace", "")  # clears
        self.write("tracing_on", "1")

    def stop_and_read(self):
        self.write("tracing_on", "0")
        with open(os.path.join(self.dir, "trace")) as f:
            text = f.read()
        with open(os.path.join(self.dir, "per_cpu/cpu0/stats")) as f:
            overrun = re.search(r"overrun: (\d+)", f.read())
        if overrun and int(overrun.group(1)) > 0:
            raise Fail(f"the trace buffer overran ({overrun.group(1)} events lost): fewer VMs at once, please")
        return text

    def close(self):
        try:
            self.write("tracing_on", "0")
            for ev in ("sched/sched_switch", "sched/sched_process_exec", "syscalls/sys_enter_ioctl"):
                self.write(f"events/{ev}/enable", "0")
        except Fail:
            pass
        try:
            os.rmdir(self.dir)
        except OSError as e:
            say(f"could not remove the trace instance {self.dir}: {e}")


LINE = re.compile(r"^\s*(.*)-(\d+)\s+\(\s*(\d+|-+)\)\s+\[(\d+)\]\s+\S+\s+(\d+\.\d+): (\w+)(?:: |\()(.*)$")


class Timeline:
    """Per process (tgid): exec time, on-CPU intervals of all its threads, first KVM_RUN."""

    def __init__(self, text):
        self.exec_at, self.first_run, self.runs = {}, {}, {}
        cur = {}  # cpu -> (tid, switched in at)
        for line in text.splitlines():
            m = LINE.match(line)
            if not m:
                continue
            tid, tgid, cpu, t, event, rest = int(m.group(2)), m.group(3), int(m.group(4)), float(m.group(5)), m.group(6), m.group(7)
            tgid = int(tgid) if tgid.isdigit() else tid
            if event == "sched_switch":
                prev = int(re.search(r"prev_pid=(\d+)", rest).group(1))
                nxt = int(re.search(r"next_pid=(\d+)", rest).group(1))
                if cpu in cur and cur[cpu][0] == prev and prev != 0:
                    self.runs.setdefault(tgid, []).append((cur[cpu][1], t))
                cur[cpu] = (nxt, t)
            elif event == "sched_process_exec":
                pid = int(re.search(r" pid=(\d+)", rest).group(1))
                self.exec_at[pid] = t  # the last exec wins (the VMM's)
            elif event.startswith("sys_enter") or event == "sys_ioctl":
                if tgid not in self.first_run and tgid in self.exec_at:
                    self.first_run[tgid] = t
        self.open = {tid: t0 for tid, t0 in cur.values()}  # threads on a CPU when tracing stopped

    def cpu(self, pid, until, from_exec=True):
        """CPU seconds process `pid` used from its exec (or its fork) to `until` (monotonic seconds)."""
        start = self.exec_at[pid] if from_exec else 0.0
        return sum(max(0.0, min(b, until) - max(a, start)) for a, b in self.runs.get(pid, ()))


# ---- one VM ----------------------------------------------------------------------------------

def argv_for(vmm, guest, via, sock):
    if vmm == "embervm":
        # Info level: the VMM's own "first KVM_RUN at ..." line (its getrusage), printed next to
        # the trace's figure as a check.
        if via == "api":
            return [EMBERVM, "--log-level", "info", "--api-sock", sock]
        if guest == "tiny":
            return [EMBERVM, "--log-level", "info", "--kernel", TINY, "--cmdline", TINY_CMDLINE, "--vcpus", "1",
                    "--mem", str(MEM)]
        return [EMBERVM, "--log-level", "info", "--kernel", KERNEL_DIR + "/vmlinux", "--initrd", INITRAMFS, "--cmdline", LINUX_CMDLINE,
                "--vcpus", "1", "--mem", str(MEM)]
    argv = [QEMU, "-M", "microvm,acpi=off", "-enable-kvm", "-cpu", "max,-arch-capabilities", "-m", str(MEM),
            "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"]
    if guest == "tiny":
        argv += ["-device", "isa-debug-exit,iobase=0xf4,iosize=1", "-kernel", TINY, "-append", TINY_CMDLINE]
    else:
        argv += ["-device", "i8042", "-kernel", KERNEL_DIR + "/vmlinux", "-initrd", INITRAMFS, "-append", LINUX_CMDLINE]
    if via == "api":
        argv += ["-S", "-qmp", f"unix:{sock},server=on,wait=off"]
    return argv


def http(sock, method, path, body=None):
    data = json.dumps(body) if body is not None else ""
    req = (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n{data}")
    sock.sendall(req.encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise Fail(f"{method} {path}: the API closed the connection")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = int((re.search(rb"(?i)content-length:\s*(\d+)", head) or [None, b"0"])[1])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    status = int(head.split()[1])
    if status >= 300:
        raise Fail(f"{method} {path}: HTTP {status}: {rest[:300].decode(errors='replace')}")
    return rest


def qmp(f, sock, command):
    sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
    while True:
        line = f.readline()
        if not line:
            raise Fail(f"QMP {command}: the monitor closed the connection")
        msg = json.loads(line)
        if "return" in msg:
            return
        if "error" in msg:
            raise Fail(f"QMP {command}: {msg['error']}")


def connect(path, proc, deadline):
    """Connects to the Unix socket at `path` as soon as it accepts."""
    while True:
        if proc_exited(proc):
            raise Fail("the VMM exited before its API socket accepted")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.settimeout(max(1.0, deadline - time.monotonic()))
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
        if time.monotonic() > deadline:
            raise Fail("timeout waiting for the API socket")
        time.sleep(0.001)


def proc_exited(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def memory_figures(pid):
    """(VmHWM, VmRSS, resident guest RAM) in KiB. Guest RAM: the anonymous mappings of the guest's
    memory size (up to 8 MiB more: QEMU aligns its RAM block)."""
    with open(f"/proc/{pid}/status") as f:
        st = f.read()
    hwm = int(re.search(r"VmHWM:\s+(\d+)", st).group(1))
    rss = int(re.search(r"VmRSS:\s+(\d+)", st).group(1))
    guest, found = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        size = None
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)\s*(.*)$", line)
            if m:
                lo, hi, inode, path = int(m.group(1), 16), int(m.group(2), 16), int(m.group(3)), m.group(4)
                anon = inode == 0 and (not path or path.startswith("[anon"))
                size = (hi - lo) if anon and MEM << 20 <= hi - lo <= (MEM + 8) << 20 else None
            elif size is not None and line.startswith("Rss:"):
                guest += int(line.split()[1])
                found = True
    if not found:
        raise Fail(f"no guest RAM mapping of {MEM} MiB in /proc/{pid}/smaps")
    return hwm, rss, guest


class Launch:
    """One VM from exec to its guest's first line, then SIGTERM; run() in its own thread."""

    def __init__(self, vmm, guest, via, index):
        self.vmm, self.guest, self.via, self.index = vmm, guest, via, index
        self.name = f"{vmm}-{guest}-{via}-{index}"
        self.sock = os.path.join(work, self.name + ".sock")
        self.stderr_path = os.path.join(work, self.name + ".stderr")
        self.argv = argv_for(vmm, guest, via, self.sock)
        self.console = bytearray()
        self.error = None
        self.r = {}

    def run(self):
        try:
            self._run()
        except Fail as e:
            self.error = str(e)
        except Exception as e:  # a bug here must fail the benchmark too, with its VM's output
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self._end()

    def _run(self):
        r_fd, w_fd = os.pipe()
        self.out = r_fd
        with open(self.stderr_path, "wb") as err:
            self.pid = os.posix_spawn(self.argv[0], self.argv, dict(E), file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, w_fd, 1), (os.POSIX_SPAWN_DUP2, err.fileno(), 2),
                (os.POSIX_SPAWN_CLOSE, r_fd), (os.POSIX_SPAWN_CLOSE, w_fd)], setsid=True)
        os.close(w_fd)
        self.reaped = False
        deadline = time.monotonic() + TIMEOUT
        if self.via == "api":
            self._start_through_api(deadline)
        want = FIRST_LINE[self.guest]
        while want not in self.console:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(f"no '{want.decode()}' on the console within {TIMEOUT:.0f} s")
            ready, _, _ = select.select([self.out], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.out, 65536)
            now = time.monotonic()
            if not chunk:
                raise Fail("the VMM exited before its guest printed " + repr(want.decode()))
            if not self.console:
                self.r["t_byte"] = now
            self.console += chunk
        hwm, rss, guest = memory_figures(self.pid)
        self.r.update(hwm_kib=hwm, rss_kib=rss, guest_kib=guest)

    def _start_through_api(self, deadline):
        s = connect(self.sock, self.pid, deadline)
        with s:
            if self.vmm == "embervm":
                http(s, "GET", "/")
                self.r["t_api"] = time.monotonic()
                if self.guest == "tiny":
                    boot = {"kernel_image_path": TINY, "boot_args": TINY_CMDLINE}
                else:
                    boot = {"kernel_image_path": KERNEL_DIR + "/vmlinux", "initrd_path": INITRAMFS,
                            "boot_args": LINUX_CMDLINE}
                http(s, "PUT", "/boot-source", boot)
                http(s, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": MEM})
                http(s, "PUT", "/actions", {"action_type": "InstanceStart"})
            else:
                f = s.makefile("rb")
                greeting = f.readline()
                if b"QMP" not in greeting:
                    raise Fail(f"QMP: no greeting ({greeting[:100]!r})")
                self.r["t_api"] = time.monotonic()
                qmp(f, s, "qmp_capabilities")
                qmp(f, s, "cont")

    def _end(self):
        if not hasattr(self, "pid"):
            return
        try:
            if self.error is None and proc_exited(self.pid):
                self.error = "the VMM exited before it was ended"
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        end = time.monotonic() + 30
        while True:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > end:
                os.kill(self.pid, signal.SIGKILL)
                pid, status, ru = os.wait4(self.pid, 0)
                self.error = self.error or "the VMM did not end within 30 s of SIGTERM"
                break
            # Keep the console pipe drained: a VMM blocked writing its guest's output would not end.
            ready, _, _ = select.select([self.out], [], [], 0.01)
            if ready:
                chunk = os.read(self.out, 65536)
                self.console += chunk[:4096]
        os.close(self.out)
        code = os.waitstatus_to_exitcode(status)
        self.r["status"] = code
        self.r["rusage_cpu"] = ru.ru_utime + ru.ru_stime
        if self.error is None and code != SIGTERM_STATUS[self.vmm]:
            self.error = f"exit status {code} after SIGTERM, expected {SIGTERM_STATUS[self.vmm]}"

    def report(self):
        with open(self.stderr_path, "rb") as f:
            err = f.read().decode(errors="replace").splitlines()[-20:]
        con = bytes(self.console).decode(errors="replace").splitlines()[-20:]
        return (f"{self.name}: {self.error}\n  command: {' '.join(self.argv)}\n"
                "---- console (last lines) ----\n" + "\n".join(con) +
                "\n---- VMM stderr (last lines) ----\n" + "\n".join(err))


# ---- the instruction count ------------------------------------------------------------------

def startup_instructions():
    """embervm's instructions from exec to the first KVM_RUN, tiny guest through the command line
    (callgrind: scripts/lib/callgrind_startup.py); None without valgrind. A figure of work that,
    unlike the CPU times, does not move with the host's load."""
    if not callgrind_startup.available():
        say("valgrind is missing (scripts/install-deps --bench): no instruction count")
        return None
    out = os.path.join(work, "callgrind.tiny")
    err_path = os.path.join(work, "callgrind.stderr")
    argv = callgrind_startup.prefix(out) + argv_for("embervm", "tiny", "cli", None) + callgrind_startup.VMM_ARGS
    console = b""
    with open(err_path, "wb") as err:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    try:
        # The profile is complete once the guest prints: embervm dumps it before its first KVM_RUN.
        deadline = time.monotonic() + TIMEOUT
        while FIRST_LINE["tiny"] not in console:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(f"callgrind run: no '{FIRST_LINE['tiny'].decode()}' within {TIMEOUT:.0f} s")
            ready, _, _ = select.select([p.stdout], [], [], left)
            if ready:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    raise Fail(f"callgrind run: the VMM exited (status {p.wait()}) before its guest printed")
                console += chunk
    except Fail as e:
        with open(err_path, "rb") as f:
            raise Fail(f"{e}\n  command: {' '.join(argv)}\n---- stderr ----\n"
                       + f.read().decode(errors="replace")[-2000:])
    finally:
        p.terminate()
        p.wait()
        p.stdout.close()
    try:
        count = callgrind_startup.instructions(out)
    except callgrind_startup.NoProfile as e:
        raise Fail(str(e))
    callgrind_startup.remove(out)
    os.unlink(err_path)
    return count


def qemu_startup_instructions(guest):
    """QEMU's instructions from exec to a machine ready to run `guest` (-S: built, paused, QMP
    answering), then qmp_capabilities and quit (so a little more than its start-up), under
    callgrind: the figure to set beside embervm's count. QEMU offers no marker at its first
    KVM_RUN; -S stops it just before. None without valgrind."""
    if not callgrind_startup.available():
        return None
    out = os.path.join(work, f"callgrind.qemu.{guest}")
    sock = os.path.join(work, "callgrind.qmp")
    err_path = os.path.join(work, "callgrind.qemu.stderr")
    argv = callgrind_startup.prefix(out) + argv_for("qemu", guest, "api", sock)
    with open(err_path, "wb") as err:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        s = connect(sock, p.pid, time.monotonic() + TIMEOUT)
        with s, s.makefile("rb") as f:
            if b"QMP" not in f.readline():
                raise Fail("no QMP greeting")
            qmp(f, s, "qmp_capabilities")
            s.sendall(b'{"execute": "quit"}\n')
            # Open until QEMU has gone: a monitor closed at once drops the quit unread.
            p.wait(timeout=TIMEOUT)
    except (Fail, OSError, subprocess.TimeoutExpired) as e:
        p.kill()
        p.wait()
        with open(err_path, "rb") as f:
            raise Fail(f"QEMU under callgrind: {e}\n  command: {' '.join(argv)}\n---- stderr ----\n"
                       + f.read().decode(errors="replace")[-2000:])
    try:
        count = callgrind_startup.total_instructions(out)
    except callgrind_startup.NoProfile as e:
        raise Fail(str(e))
    os.unlink(out)
    os.unlink(err_path)
    return count


# ---- batches ---------------------------------------------------------------------------------

def batch(trace, vmm, guest, via, mode, n):
    launches = [Launch(vmm, guest, via, i) for i in range(n)]
    trace.start()
    if mode == "serial":
        for ln in launches:
            ln.run()
            if ln.error:
                break
    else:
        threads = [threading.Thread(target=ln.run) for ln in launches]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    text = trace.stop_and_read()
    if E.get("BL_KEEP_TRACE"):
        with open(E["BL_KEEP_TRACE"], "a") as f:
            f.write(text)
    failed = [ln for ln in launches if ln.error]
    if failed:
        raise Fail(f"{len(failed)} of {n} launches failed ({vmm}, {guest}, {via}, {mode}):\n" + failed[0].report())
    tl = Timeline(text)
    vms = []
    for ln in launches:
        r, pid = ln.r, ln.pid
        if pid not in tl.exec_at:
            raise Fail(f"{ln.name}: no exec of pid {pid} in the scheduler trace")
        if pid not in tl.first_run:
            raise Fail(f"{ln.name}: no KVM_RUN of pid {pid} in the scheduler trace")
        t0 = tl.exec_at[pid]
        v = {"pid": pid, "status": r["status"]}
        for key, t in (("api", r.get("t_api")), ("kvm_run", tl.first_run[pid]), ("byte", r["t_byte"])):
            if t is not None:
                v[f"{key}_wall_ms"] = (t - t0) * 1e3
                v[f"{key}_cpu_ms"] = tl.cpu(pid, t) * 1e3
        v["total_cpu_ms_trace"] = tl.cpu(pid, float("inf"), from_exec=False) * 1e3
        v["total_cpu_ms_rusage"] = r["rusage_cpu"] * 1e3
        # VmHWM, not wait4's ru_maxrss: posix_spawn's child shares this process's memory until its
        # exec, and the kernel keeps that memory's high-water mark as the child's maxrss.
        v["peak_rss_mib"] = r["hwm_kib"] / 1024
        v["rss_mib"] = r["rss_kib"] / 1024
        v["guest_touched_mib"] = r["guest_kib"] / 1024
        v["rss_above_guest_mib"] = (r["rss_kib"] - r["guest_kib"]) / 1024
        v["t_exec"], v["t_byte"] = t0, r["t_byte"]
        if vmm == "embervm":
            with open(ln.stderr_path, "rb") as f:
                m = re.search(rb"first KVM_RUN at (\d+) us since VMM start, process CPU user (\d+) us sys (\d+) us",
                              f.read())
            if m:
                v["own_kvm_run_wall_ms"] = int(m.group(1)) / 1e3
                v["own_kvm_run_cpu_ms"] = (int(m.group(2)) + int(m.group(3))) / 1e3
                v["own_kvm_run_user_ms"], v["own_kvm_run_sys_ms"] = int(m.group(2)) / 1e3, int(m.group(3)) / 1e3
        # The trace's total (from the fork: getrusage counts the exec itself too) must be the
        # kernel's own; allow for rounding.
        if abs(v["total_cpu_ms_trace"] - v["total_cpu_ms_rusage"]) > max(5.0, 0.1 * v["total_cpu_ms_rusage"]):
            say(f"warning: {ln.name}: CPU time from the trace {v['total_cpu_ms_trace']:.1f} ms, "
                f"getrusage {v['total_cpu_ms_rusage']:.1f} ms")
        vms.append(v)
    first_exec = min(v["t_exec"] for v in vms)
    last_byte = max(v["t_byte"] for v in vms)
    summary = {"vmm": vmm, "guest": guest, "via": via, "mode": mode, "n": n,
               "batch_wall_s": last_byte - first_exec,
               "vms_per_s_per_core_cpu": n / (sum(v["byte_cpu_ms"] for v in vms) / 1e3),
               "vms_per_s_per_core_wall": n / ((last_byte - first_exec) * NCPU)}
    for key in ("api_cpu_ms", "kvm_run_cpu_ms", "byte_cpu_ms", "api_wall_ms", "kvm_run_wall_ms", "byte_wall_ms",
                "peak_rss_mib", "rss_above_guest_mib", "guest_touched_mib", "own_kvm_run_cpu_ms", "own_kvm_run_wall_ms"):
        vals = [v[key] for v in vms if key in v]
        if vals:
            summary[key] = statistics.median(vals)
            summary[key + "_max"] = max(vals)
    return summary, vms


COLUMNS = [("api_cpu_ms", "API CPU"), ("kvm_run_cpu_ms", "KVM_RUN CPU"), ("byte_cpu_ms", "byte CPU"),
           ("api_wall_ms", "API wall"), ("kvm_run_wall_ms", "KVM_RUN wall"), ("byte_wall_ms", "byte wall"),
           ("peak_rss_mib", "peak RSS"), ("rss_above_guest_mib", "RSS-guest"),
           ("vms_per_s_per_core_cpu", "VMs/s/core CPU"), ("vms_per_s_per_core_wall", "VMs/s/core wall"),
           ("own_kvm_run_cpu_ms", "own KVM_RUN CPU")]


def fmt(x):
    if x is None:
        return "-"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def table(summaries):
    head = ["guest", "via", "mode", "N", "vmm"] + [c[1] for c in COLUMNS]
    rows = []
    keyed = {(s["guest"], s["via"], s["mode"], s["n"], s["vmm"]): s for s in summaries}
    for (guest, via, mode, n, vmm), s in keyed.items():
        rows.append([guest, via, mode, str(n), vmm] + [fmt(s.get(k)) for k, _ in COLUMNS])
        if vmm == "qemu" and (guest, via, mode, n, "embervm") in keyed:
            e = keyed[(guest, via, mode, n, "embervm")]
            ratio = lambda k: fmt(e[k] / s[k]) if e.get(k) is not None and s.get(k) else "-"
            rows.append([guest, via, mode, str(n), "ratio"] + [ratio(k) for k, _ in COLUMNS])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    out = ["  ".join(h.ljust(w) if i < 5 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) if i < 5 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join(out)


def main():
    for path in [EMBERVM, TINY] + ([QEMU] if "qemu" in VMMS else []):
        if not os.path.exists(path):
            raise Fail(f"{path} is missing")
    trace = Trace()
    summaries, all_vms = [], []
    instructions = qemu_instructions = None
    try:
        # One launch of each VMM and guest first, not counted: the first exec reads the VMM, its
        # libraries and the guest from disk (over 9p in scripts/with-kvm's VM), the later ones
        # from the page cache, as they would on a host that launches VMs all day.
        for guest in GUESTS:
            for vmm in VMMS:
                batch(trace, vmm, guest, "cli", "serial", 1)
        if CALLGRIND and "embervm" in VMMS:
            instructions = startup_instructions()
            if instructions is not None:
                say(f"embervm, tiny guest: {instructions} instructions from exec to the first KVM_RUN (callgrind)")
        if CALLGRIND and "qemu" in VMMS:
            qemu_instructions = qemu_startup_instructions("tiny")
            if qemu_instructions is not None:
                say(f"QEMU, tiny guest: {qemu_instructions} instructions from exec to ready (-S) and quit (callgrind)")
        load = open("/proc/loadavg").read().split()[:3]
        say(f"{NCPU} CPU(s), load {' '.join(load)}; N = {NS}, {MODES}, {VIAS}, {GUESTS}, {VMMS}; 1 vCPU, {MEM} MiB")
        for guest in GUESTS:
            for via in VIAS:
                for mode in MODES:
                    for n in NS:
                        if mode == "parallel" and n == 1 and "serial" in MODES:
                            continue  # the same as serial
                        for vmm in VMMS:
                            t = time.monotonic()
                            before = vmstat()
                            s, vms = batch(trace, vmm, guest, via, mode, n)
                            after = vmstat()
                            summaries.append(s)
                            all_vms += [dict(v, vmm=vmm, guest=guest, via=via, mode=mode, n=n) for v in vms]
                            say(f"{guest} {via} {mode} N={n} {vmm}: " + ", ".join(
                                f"{label} {fmt(s.get(k))}" for k, label in COLUMNS if k in s)
                                + f" ({time.monotonic() - t:.1f} s)")
                            # Each launch's own user / sys CPU to its first KVM_RUN: which of the
                            # two an outlier spent (the medians hide it).
                            split = [f"{fmt(v['own_kvm_run_user_ms'])}/{fmt(v['own_kvm_run_sys_ms'])}"
                                     for v in vms if "own_kvm_run_user_ms" in v]
                            if split:
                                say(f"  own CPU to the first KVM_RUN per launch, user/sys ms: {', '.join(split)}")
                            # The kernel's memory work during the batch (a first touch of memory
                            # can cost far more under nested KVM than the VMM's own work).
                            say("  kernel during the batch: " + ", ".join(
                                f"{k} +{after.get(k, 0) - before.get(k, 0)}" for k in VMSTAT_KEYS))
    finally:
        trace.close()
    load = open("/proc/loadavg").read().split()[:3]
    print(f"\nLaunch benchmark: medians per VM (CPU = user+sys of the VMM process from its exec, ms; wall from "
          f"its exec, ms; RSS MiB at the guest's first line), {NCPU} CPU(s), load at the end {' '.join(load)}")
    print(table(summaries))
    if instructions is not None:
        print(f"embervm, tiny guest, command line: {instructions} instructions from exec to the first KVM_RUN "
              f"(callgrind; a figure of work, unlike the times above)")
    if qemu_instructions is not None:
        ratio = f"; embervm / QEMU {instructions / qemu_instructions:.3f}" if instructions else ""
        print(f"QEMU, tiny guest: {qemu_instructions} instructions from exec to a paused machine ready to run (-S), "
              f"QMP's greeting, qmp_capabilities and quit{ratio}")
    if E["BL_JSON"]:
        with open(E["BL_JSON"], "w") as f:
            json.dump({"cpus": NCPU, "mem_mib": MEM, "startup_instructions": instructions,
                       "qemu_startup_instructions": qemu_instructions, "summaries": summaries,
                       "vms": all_vms}, f, indent=1)
        say(f"wrote {E['BL_JSON']}")


if __name__ == "__main__":
    try:
        main()
    except Fail as e:
        print(f"\nbench-launch: FAIL: {e}", file=sys.stderr)
        print(f"bench-launch: logs kept in {work}", file=sys.stderr)
        sys.exit(1)
    for name in os.listdir(work):
        os.unlink(os.path.join(work, name))
    os.rmdir(work)
