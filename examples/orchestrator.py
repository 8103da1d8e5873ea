#!/usr/bin/env python3
"""Starts N embervm microVMs in parallel and configures each purely through its HTTP API.

Each VM is its own embervm process (--api-sock, --id vmK, --serial-out), configured with
PUT /boot-source and PUT /machine-config and started with PUT /actions InstanceStart. The
orchestrator then waits for a marker line on each console, records the boot time (InstanceStart
to the marker, and the VMM's own "guest boot time" log line when the guest wrote to the
boot-timer device) and the VMM's resident set after the boot, ends every VM and prints a
markdown table.

  examples/orchestrator.py [-n N] [--kernel K] [--initrd I] [--boot-args A] [--mem MIB]
                           [--marker TEXT] [--end HOW] [--embervm PATH] [--timeout S]

Default guest: the Linux test kernel (vmlinux from scripts/build-guest-kernel) with the test
initramfs (scripts/build-initramfs); its /init (tests/linux-guest/init.sh) prints BOOT-OK once
userspace is up, writes the boot-timer device (boottimer=1) and, with gtest=shell, then waits in
a shell on the console, which the orchestrator ends by typing `exit` (the guest reboots and the
VMM exits 0). With --kernel and no --initrd (e.g. the ticker test guest) the marker is
"ticker: ready" and the VMs are ended with SendCtrlAltDel.

Exit status: 0 if every VM booted and ended as asked, 1 otherwise, 2 on bad arguments.
Python 3 standard library only.
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The Linux tests' command line (tests/integration/linux-guest-test): the host options avoid
# slow or missing paths on the project's nested-KVM hosts and are harmless on bare metal.
# quiet: far fewer console bytes (each one is a VM exit); boottimer=1: /init writes the
# boot-timer device; gtest=shell: /init waits in a shell instead of rebooting at once.
HOST_OPTS = ("noxsave clearcpuid=cx16,popcnt,smap,erms,fsrm,rdtscp,114 noreplace-smp rodata=off "
             "tsc=reliable no_timer_check no-kvmapf")
LINUX_BOOT_ARGS = f"console=ttyS0 {HOST_OPTS} reboot=k panic=-1 oops=panic quiet boottimer=1 gtest=shell"
LINUX_MARKER = "BOOT-OK"            # init.sh: /proc is mounted, userspace runs
LINUX_SHELL_MARKER = "SHELL:"       # init.sh with gtest=shell: the console shell is starting
TICKER_MARKER = "ticker: ready"
VMM_BOOT_RE = re.compile(r"guest boot time: (\d+) us since VMM start")


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix stream socket (the Host header still says localhost)."""

    def __init__(self, path, timeout=10.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class ApiError(Exception):
    pass


def api(sock_path, method, path, body=None, timeout=10.0):
    """One request; returns (status, decoded JSON body or None). Raises ApiError on a 4xx/5xx."""
    conn = UnixHTTPConnection(sock_path, timeout)
    try:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    decoded = json.loads(raw) if raw else None
    if resp.status >= 400:
        message = decoded.get("fault_message") if isinstance(decoded, dict) else raw.decode(errors="replace")
        raise ApiError(f"{method} {path}: HTTP {resp.status}: {message}")
    return resp.status, decoded


class MicroVm:
    """One embervm process and what was measured about it."""

    def __init__(self, index, workdir, args):
        self.name = f"vm{index}"
        self.args = args
        self.sock = os.path.join(workdir, f"{self.name}.sock")
        self.console = os.path.join(workdir, f"{self.name}.console")
        self.log = os.path.join(workdir, f"{self.name}.log")
        self.proc = None
        self.boot_ms = None       # InstanceStart sent -> marker on the console
        self.vmm_boot_ms = None   # the VMM's boot-timer log line (since the VMM process started)
        self.rss_mib = None
        self.exit_status = None
        self.ended_by = None
        self.error = None
        self._console_pos = 0
        self._console_text = ""

    def spawn(self):
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [self.args.embervm, "--api-sock", self.sock, "--id", self.name, "--serial-out", self.console],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_for_socket(self, deadline):
        while time.monotonic() < deadline:
            if os.path.exists(self.sock):
                return
            if not self.running():
                raise RuntimeError(f"embervm exited with status {self.proc.returncode} before serving the API")
            time.sleep(0.01)
        raise RuntimeError(f"no API socket at {self.sock}")

    def configure_and_start(self):
        a = self.args
        boot_source = {"kernel_image_path": a.kernel}
        if a.initrd:
            boot_source["initrd_path"] = a.initrd
        if a.boot_args:
            boot_source["boot_args"] = a.boot_args
        api(self.sock, "PUT", "/boot-source", boot_source)
        api(self.sock, "PUT", "/machine-config", {"vcpu_count": a.vcpus, "mem_size_mib": a.mem})
        start = time.monotonic()
        api(self.sock, "PUT", "/actions", {"action_type": "InstanceStart"}, timeout=a.timeout)
        return start

    def read_console(self):
        """Whatever the console file holds so far (read incrementally)."""
        try:
            with open(self.console, "rb") as f:
                f.seek(self._console_pos)
                chunk = f.read()
        except FileNotFoundError:
            return self._console_text
        self._console_pos += len(chunk)
        self._console_text += chunk.decode(errors="replace")
        return self._console_text

    def wait_for_console(self, marker, deadline):
        """The monotonic time at which `marker` was first seen on the console (polled)."""
        while True:
            now = time.monotonic()
            if marker in self.read_console():
                return now
            if not self.running():
                raise RuntimeError(f"embervm exited with status {self.proc.returncode} before '{marker}' "
                                   "appeared on the console")
            if now >= deadline:
                raise RuntimeError(f"'{marker}' did not appear on the console within {self.args.timeout:g} s")
            time.sleep(0.01)

    def vmm_reported_boot_ms(self):
        try:
            with open(self.log, errors="replace") as f:
                m = VMM_BOOT_RE.search(f.read())
        except FileNotFoundError:
            return None
        return int(m.group(1)) / 1000.0 if m else None

    def read_rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return None

    def boot(self):
        """Configure, start and wait for the marker; records the measurements. Thread body."""
        a = self.args
        deadline = time.monotonic() + a.timeout
        self.wait_for_socket(deadline)
        start = self.configure_and_start()
        seen = self.wait_for_console(a.marker, start + a.timeout)
        self.boot_ms = (seen - start) * 1000.0
        self.rss_mib = self.read_rss_mib()
        # The boot-timer write comes before the marker in init.sh, but the log line may trail it.
        for _ in range(20):
            self.vmm_boot_ms = self.vmm_reported_boot_ms()
            if self.vmm_boot_ms is not None or "boottimer=1" not in (a.boot_args or ""):
                break
            time.sleep(0.05)

    def end(self, how, timeout):
        """Ends the VM: 'ctrl-alt-del' (API), 'console' (type `exit` into the guest's shell) or
        'sigterm'. Falls back to SIGTERM, then SIGKILL, if the VMM has not exited in time."""
        if not self.running():
            self.exit_status = self.proc.returncode if self.proc else None
            self.ended_by = "itself"
            return
        if self.boot_ms is None:
            how = "sigterm"  # it did not boot: no point asking the guest
        self.ended_by = how
        try:
            if how == "ctrl-alt-del":
                api(self.sock, "PUT", "/actions", {"action_type": "SendCtrlAltDel"})
            elif how == "console":
                self.wait_for_console(LINUX_SHELL_MARKER, time.monotonic() + timeout)
                self.proc.stdin.write(b"exit\n")
                self.proc.stdin.flush()
            else:
                self.proc.send_signal(signal.SIGTERM)
            self.exit_status = self.proc.wait(timeout)
        except (ApiError, OSError, RuntimeError, subprocess.TimeoutExpired) as e:
            self.error = self.error or f"ending by {how} failed: {e}"
            self.ended_by = "sigterm (fallback)"
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.exit_status = self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.exit_status = self.proc.wait()
                self.ended_by = "sigkill (fallback)"

    def kill(self):
        if self.running():
            self.proc.kill()
            self.proc.wait()
        if self.proc and self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass


def run_script(name):
    """Runs scripts/NAME (cached builds of the Linux test guest); its last stdout line, or None."""
    script = os.path.join(TOP, "scripts", name)
    if not os.access(script, os.X_OK):
        return None
    r = subprocess.run([script], stdout=subprocess.PIPE, text=True)
    lines = r.stdout.strip().splitlines()
    return lines[-1] if r.returncode == 0 and lines else None


def default_linux_guest():
    kernel_dir = os.environ.get("EMBERVM_TEST_KERNEL_DIR") or run_script("build-guest-kernel")
    initrd = os.environ.get("EMBERVM_TEST_INITRAMFS") or run_script("build-initramfs")
    kernel = os.path.join(kernel_dir, "vmlinux") if kernel_dir else None
    if not kernel or not os.path.isfile(kernel) or not initrd or not os.path.isfile(initrd):
        sys.exit("orchestrator: no --kernel given and the Linux test guest is not available: "
                 "scripts/build-guest-kernel and scripts/build-initramfs must succeed (they need "
                 "linux-source-6.1 and busybox-static; see scripts/install-deps), or set "
                 "EMBERVM_TEST_KERNEL_DIR and EMBERVM_TEST_INITRAMFS, or pass --kernel")
    return kernel, initrd


def parse_args(argv):
    paragraphs = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=paragraphs[0], epilog="\n\n".join(paragraphs[3:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=10, help="number of microVMs (default 10)")
    p.add_argument("--kernel", help="guest kernel (default: the Linux test kernel's vmlinux)")
    p.add_argument("--initrd", help="initrd (default with the default kernel: the test initramfs)")
    p.add_argument("--boot-args", help="kernel command line (default for the Linux test guest: the "
                   "Linux tests' arguments + quiet boottimer=1 gtest=shell; else none)")
    p.add_argument("--mem", type=int, default=128, help="guest memory in MiB (default 128)")
    p.add_argument("--vcpus", type=int, default=1, help="vCPUs per VM (default 1)")
    p.add_argument("--marker", help=f"console text that means 'booted' (default: '{LINUX_MARKER}' with an "
                   f"initrd, else '{TICKER_MARKER}')")
    p.add_argument("--end", choices=["auto", "ctrl-alt-del", "console", "sigterm"], default="auto",
                   help="how to end the VMs after the measurement: SendCtrlAltDel, `exit` typed into the "
                   "guest's console shell (gtest=shell), or SIGTERM (default auto: console with "
                   "gtest=shell in the boot args, sigterm for other Linux guests, else ctrl-alt-del)")
    p.add_argument("--embervm", default=os.path.join(TOP, "build", "embervm"),
                   help="the embervm binary (default build/embervm)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds each VM may take to boot, and to end (default 600: ten Linux guests "
                   "booting at once on a 2-core nested-KVM host take about 3 minutes)")
    p.add_argument("--keep", action="store_true", help="keep the consoles and logs (their directory is printed)")
    a = p.parse_args(argv)
    if a.n < 1:
        p.error("-n must be at least 1")
    if not (os.path.isfile(a.embervm) and os.access(a.embervm, os.X_OK)):
        p.error(f"--embervm: {a.embervm} is not an executable (build embervm, or give its path)")
    if a.kernel is None:
        if a.initrd is not None:
            p.error("--initrd needs --kernel")
        a.kernel, a.initrd = default_linux_guest()
        if a.boot_args is None:
            a.boot_args = LINUX_BOOT_ARGS
    for field in ("kernel", "initrd"):
        path = getattr(a, field)
        if path is not None:
            if not os.path.isfile(path):
                p.error(f"--{field}: {path} does not exist")
            setattr(a, field, os.path.abspath(path))
    linux = a.initrd is not None
    if a.marker is None:
        a.marker = LINUX_MARKER if linux else TICKER_MARKER
    if a.end == "auto":
        if "gtest=shell" in (a.boot_args or ""):
            a.end = "console"
        else:
            a.end = "sigterm" if linux else "ctrl-alt-del"
    return a


def describe_status(status):
    if status is None:
        return "-"
    if status < 0:  # killed by a signal it did not handle
        return f"signal {-status}"
    if status > 128 and status - 128 in signal.valid_signals():
        return f"{status} ({signal.Signals(status - 128).name})"
    return str(status)


def fmt_ms(v):
    return "-" if v is None else f"{v:.0f}"


def fmt_mib(v):
    return "-" if v is None else f"{v:.1f}"


def print_table(vms):
    print("| vm | pid | boot ms | VMM-reported boot ms | RSS MiB | exit status |")
    print("|---|---:|---:|---:|---:|---|")
    for vm in vms:
        status = describe_status(vm.exit_status)
        if vm.ended_by and ("fallback" in vm.ended_by or vm.ended_by == "itself"):
            status += f", ended {vm.ended_by}"
        print(f"| {vm.name} | {vm.proc.pid if vm.proc else '-'} | {fmt_ms(vm.boot_ms)} | "
              f"{fmt_ms(vm.vmm_boot_ms)} | {fmt_mib(vm.rss_mib)} | {status} |")
    columns = [[vm.boot_ms for vm in vms], [vm.vmm_boot_ms for vm in vms], [vm.rss_mib for vm in vms]]
    formats = [fmt_ms, fmt_ms, fmt_mib]
    for label, fn in (("min", min), ("median", statistics.median), ("max", max)):
        cells = []
        for values, f in zip(columns, formats):
            present = [v for v in values if v is not None]
            cells.append(f(fn(present)) if present else "-")
        print(f"| **{label}** | | {cells[0]} | {cells[1]} | {cells[2]} | |")


def main(argv):
    a = parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="embervm-orch.")
    vms = [MicroVm(i, workdir, a) for i in range(a.n)]
    expected_exit = 143 if a.end == "sigterm" else 0
    print(f"orchestrator: {a.n} microVMs, kernel {a.kernel}" + (f", initrd {a.initrd}" if a.initrd else ""))
    print(f"orchestrator: {a.vcpus} vCPU, {a.mem} MiB each; boot = InstanceStart -> '{a.marker}' on the "
          f"console; ended by {a.end}")
    if a.boot_args:
        print(f"orchestrator: boot args: {a.boot_args}")
    sys.stdout.flush()
    t0 = time.monotonic()
    failed = False
    try:
        for vm in vms:
            vm.spawn()
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.n) as pool:
            futures = {pool.submit(vm.boot): vm for vm in vms}
            for fut in concurrent.futures.as_completed(futures):
                vm = futures[fut]
                try:
                    fut.result()
                    print(f"  {vm.name}: booted in {vm.boot_ms:.0f} ms", flush=True)
                except Exception as e:  # noqa: BLE001 - any failure of one VM is reported, not fatal
                    vm.error = f"boot failed: {e}"
                    print(f"  {vm.name}: {vm.error}", flush=True)
        booted = time.monotonic()
        # End them all (in parallel too: a console exit means a reboot inside each guest).
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.n) as pool:
            list(pool.map(lambda vm: vm.end(a.end, a.timeout), vms))
        ended = time.monotonic()
    finally:
        for vm in vms:
            vm.kill()
    n_booted = sum(vm.boot_ms is not None for vm in vms)
    print(f"\n{n_booted}/{a.n} booted, the last {booted - t0:.1f} s after the first process started; all "
          f"ended after {ended - t0:.1f} s\nboot ms: PUT /actions InstanceStart -> '{a.marker}' on the console; "
          "VMM-reported: the VMM's boot-timer log line (the guest's write, timed from the VMM process's start)\n")
    print_table(vms)
    for vm in vms:
        if vm.boot_ms is None:
            failed = True
        elif vm.exit_status != expected_exit:
            failed = True
            vm.error = vm.error or f"exit status {vm.exit_status}, expected {expected_exit}"
        if vm.error:
            print(f"\n{vm.name}: {vm.error}")
            for label, path in (("console", vm.console), ("VMM log", vm.log)):
                try:
                    with open(path, errors="replace") as f:
                        tail = f.read().splitlines()[-10:]
                except FileNotFoundError:
                    tail = ["(none)"]
                print(f"  last lines of its {label}:")
                for line in tail:
                    print(f"    {line}")
    if a.keep:
        print(f"\nconsoles and logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
