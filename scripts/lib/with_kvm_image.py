"""scripts/with-kvm's cached VM image: Debian's kernel package, unpacked, and a busybox initramfs
that loads the VM's modules (the VM's /init is with-kvm-init beside this file)."""

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

PROG = "with-kvm"


class Failure(Exception):
    """An error of with-kvm itself: printed as one line, exit status 125."""


def say(msg):
    sys.stderr.write(f"{PROG}: {msg}\n")
    sys.stderr.flush()



def run_quiet(cmd, what, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        last = (r.stdout.strip().splitlines() or ["(no output)"])[-1]
        raise Failure(f"{what} failed (status {r.returncode}): {last}")
    return r.stdout


def kernel_package(root):
    """The linux-image-*-amd64 package to use: $EMBERVM_WITH_KVM_KERNEL_PACKAGE, else one already
    in the cache, else the one Debian's linux-image-amd64 depends on."""
    pkg = os.environ.get("EMBERVM_WITH_KVM_KERNEL_PACKAGE")
    if pkg:
        if not pkg.startswith("linux-image-"):
            raise Failure(f"EMBERVM_WITH_KVM_KERNEL_PACKAGE='{pkg}' is not a linux-image-* package")
        return pkg
    cached = sorted(glob.glob(os.path.join(root, "linux-image-*", "package.deb")))
    if cached:
        return os.path.basename(os.path.dirname(cached[-1]))
    if not shutil.which("apt-cache"):
        raise Failure("apt-cache not found: with-kvm takes the VM's kernel from Debian's packages "
                      "(or set EMBERVM_WITH_KVM_KERNEL_PACKAGE and put the .deb in the cache)")
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-") and line.endswith("-amd64"):
            return line.split()[1]
    raise Failure("cannot resolve Debian's linux-image-amd64 to a kernel package "
                  "(run apt-get update, or set EMBERVM_WITH_KVM_KERNEL_PACKAGE)")


def fetch_kernel_deb(root, pkg):
    """The cached .deb of pkg, downloaded with apt-get download if missing."""
    d = os.path.join(root, pkg)
    deb = os.path.join(d, "package.deb")
    if os.path.isfile(deb) and os.path.getsize(deb) > 0:
        return deb
    if not shutil.which("apt-get"):
        raise Failure(f"apt-get not found: cannot download {pkg} for the VM's kernel")
    os.makedirs(d, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=d) as work:
        os.chmod(work, 0o755)  # apt-get download runs as _apt where it can
        say(f"downloading {pkg} (Debian's kernel for the VM; once, then cached in {d})")
        run_quiet(["apt-get", "download", "-q", pkg], f"apt-get download {pkg}", cwd=work)
        debs = glob.glob(os.path.join(work, "*.deb"))
        if len(debs) != 1:
            raise Failure(f"apt-get download {pkg} produced no .deb")
        os.replace(debs[0], deb)
    return deb


def cpio_newc(entries):
    """An uncompressed newc cpio archive of (name, mode, data-or-link-target) entries."""
    out = bytearray()
    ino = 1

    def add(name, mode, data, nlink=1, rdev=(0, 0)):
        nonlocal ino
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0))
        out.extend(hdr.encode() + nb)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))
        ino += 1

    for name, mode, data in entries:
        if mode & 0o170000 == 0o020000:  # a character device: data is (major, minor)
            add(name, mode, b"", 1, data)
        else:
            add(name, mode, data if isinstance(data, bytes) else data.encode(), 2 if mode & 0o40000 else 1)
    add("TRAILER!!!", 0, b"")
    return bytes(out)


# The VM's /init (a busybox shell script), in its own file beside this one.
INIT_SCRIPT = open(os.path.join(os.path.dirname(os.path.realpath(__file__)), "with-kvm-init")).read()


def build_initramfs(root, pkg, deb, modules):
    """The initramfs for pkg's kernel (cached by its content's inputs); returns (vmlinuz, cpio, version)."""
    busybox = "/bin/busybox"
    if not os.path.isfile(busybox):
        raise Failure("/bin/busybox missing: the VM's initramfs needs busybox-static (apt-get install busybox-static)")
    if not shutil.which("depmod") or not shutil.which("modprobe"):
        raise Failure("depmod/modprobe missing: with-kvm needs kmod (apt-get install kmod)")
    with open(busybox, "rb") as f:
        busybox_bin = f.read()
    key = hashlib.sha256(busybox_bin + INIT_SCRIPT.encode() + " ".join(modules).encode()
                         + deb.encode() + str(os.path.getsize(deb)).encode()).hexdigest()[:16]
    d = os.path.dirname(deb)
    cpio = os.path.join(d, f"initramfs-{key}.cpio")
    vmlinuz = os.path.join(d, "vmlinuz")
    version_file = os.path.join(d, "version")
    if os.path.isfile(cpio) and os.path.isfile(vmlinuz) and os.path.isfile(version_file):
        with open(version_file) as f:
            return vmlinuz, cpio, f.read().strip()
    with tempfile.TemporaryDirectory(dir=d) as work:
        tree = os.path.join(work, "root")
        run_quiet(["dpkg-deb", "-x", deb, tree], f"dpkg-deb -x {deb}")
        versions = os.listdir(os.path.join(tree, "lib", "modules"))
        if len(versions) != 1:
            raise Failure(f"{pkg} does not hold exactly one kernel's modules")
        version = versions[0]
        kernel = os.path.join(tree, "boot", f"vmlinuz-{version}")
        if not os.path.isfile(kernel):
            raise Failure(f"{pkg} has no /boot/vmlinuz-{version}")
        run_quiet(["depmod", "-b", tree, version], "depmod")
        order, files = [], []
        for m in modules:
            out = run_quiet(["modprobe", "-d", tree, "-S", version, "--show-depends", m],
                            f"modprobe --show-depends {m} for {version} (does this kernel have it?)")
            for line in out.splitlines():
                parts = line.split()
                if parts[:1] == ["insmod"]:
                    path = parts[1]
                    name = os.path.basename(path)
                    if name not in order:
                        order.append(name)
                        files.append(path)
        if not any(n.startswith("kvm-amd") for n in order):
            raise Failure(f"{pkg} has no kvm_amd module: the VM needs it for nested KVM")
        entries = [("bin", 0o40755, b""), ("lib", 0o40755, b""), ("lib/modules", 0o40755, b""),
                   ("dev", 0o40755, b""), ("proc", 0o40755, b""), ("sys", 0o40755, b""),
                   ("dev/console", 0o20600, (5, 1)),
                   ("bin/busybox", 0o100755, busybox_bin), ("init", 0o100755, INIT_SCRIPT),
                   ("modules.order", 0o100644, "\n".join(order) + "\n")]
        for applet in ("sh", "mount", "insmod", "mkdir", "cat", "cp", "ln", "echo", "grep", "sleep",
                       "usleep", "setsid", "chroot", "reboot", "kill", "sync", "ip", "hostname",
                       "stty", "cut", "dmesg"):
            entries.append((f"bin/{applet}", 0o120777, "busybox"))
        for path in files:
            with open(path, "rb") as f:
                entries.append((f"lib/modules/{os.path.basename(path)}", 0o100644, f.read()))
        data = cpio_newc(entries)
        tmp = cpio + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        shutil.copyfile(kernel, vmlinuz + ".tmp")
        os.replace(vmlinuz + ".tmp", vmlinuz)
        with open(version_file, "w") as f:
            f.write(version + "\n")
        for old in glob.glob(os.path.join(d, "initramfs-*.cpio")):
            os.unlink(old)
        os.replace(tmp, cpio)
    return vmlinuz, cpio, version
