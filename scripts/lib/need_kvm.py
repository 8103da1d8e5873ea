"""need_kvm(top): for the Python benchmark scripts, what scripts/lib/kvm-pvm.sh's
embervm_need_kvm is for the shell ones: re-runs the calling script inside scripts/with-kvm when
this host has no usable /dev/kvm (both VMMs then run side by side in its nested-KVM VM, so the
ratios stay meaningful); returns when KVM is usable here."""
import os
import subprocess
import sys


def need_kvm(top):
    if os.environ.get("EMBERVM_WITH_KVM") == "vm":
        return
    with_kvm = os.path.join(top, "scripts", "with-kvm")
    which = subprocess.run([with_kvm, "--which"], stdout=subprocess.PIPE, text=True)
    if which.returncode != 0:
        sys.exit(1)
    if not which.stdout.startswith("host"):
        sys.stdout.flush()
        os.execv(with_kvm, [with_kvm, "--", os.path.abspath(sys.argv[0])] + sys.argv[1:])
