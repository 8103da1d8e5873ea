"""The instructions embervm executes from its exec to its first KVM_RUN, counted by callgrind.

embervm marks that moment with a client request (vmm/sys/startup_probe.h): callgrind dumps the
profile so far as part 1 of its output ("<out>.1", described "first KVM_RUN") and stops counting.
scripts/bench-startup and scripts/bench-launch both read the count from there. The VMM must have
been built with valgrind's header (scripts/install-deps --bench): without it there is no part 1.
"""
import os
import re
import shutil


class NoProfile(Exception):
    """The run wrote no start-up profile, or not the one dumped at the first KVM_RUN."""


def available():
    """Whether valgrind is installed."""
    return shutil.which("valgrind") is not None


# embervm's flags for a run under callgrind: valgrind cannot run a program's seccomp filters
# (it does not know seccomp(2), and a filtered thread could not write the profile), so the count
# leaves out the filters' set-up (about 0.5 M instructions per thread kind, see README).
VMM_ARGS = ["--no-seccomp"]


def prefix(out):
    """The command prefix that runs a VMM under callgrind, writing its profiles to `out`(.N)."""
    return ["valgrind", "--tool=callgrind", "--quiet", "--vgdb=no", f"--callgrind-out-file={out}"]


def part(out):
    """The path of the start-up profile a run with prefix(out) writes."""
    return out + ".1"


def instructions(out):
    """The instruction count of the start-up profile of a run with prefix(out); NoProfile if it has none."""
    path = part(out)
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise NoProfile(f"callgrind wrote no start-up profile {path} (embervm built without valgrind's "
                        f"header, or no client request at the first KVM_RUN?)")
    total = re.search(r"^totals: (\d+)", text, re.M) or re.search(r"^summary: (\d+)", text, re.M)
    if "first KVM_RUN" not in text or not total:
        raise NoProfile(f"{path} is not the profile dumped at the first KVM_RUN")
    return int(total.group(1))


def total_instructions(out):
    """The instruction count of a whole run with prefix(out) (the profile written at its exit)."""
    try:
        with open(out) as f:
            text = f.read()
    except OSError:
        raise NoProfile(f"callgrind wrote no profile {out}")
    total = re.search(r"^totals: (\d+)", text, re.M) or re.search(r"^summary: (\d+)", text, re.M)
    if not total:
        raise NoProfile(f"{out} has no instruction total")
    return int(total.group(1))


def remove(out):
    """Removes the profiles of a run with prefix(out)."""
    for name in (out, part(out)):
        if os.path.exists(name):
            os.unlink(name)
