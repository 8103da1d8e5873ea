# Sourced by scripts: is this host's /dev/kvm the old nested kvm_pvm (see ../shared/PLATFORM.md)?
# There, every guest kernel-mode instruction runs through KVM's instruction emulator, and Linux
# guests need a kernel patch (tests/linux-guest/patches/kvm-pvm/) and kernel arguments that avoid
# what that emulator lacks. Bare-metal KVM and nested KVM (scripts/with-kvm) need neither.
# EMBERVM_KVM_PVM=1 or 0 overrides the detection.
embervm_kvm_is_pvm() {
  case "${EMBERVM_KVM_PVM:-auto}" in
    1) return 0 ;;
    0) return 1 ;;
  esac
  [ -c /dev/kvm ] && [ -d /sys/module/kvm_pvm ] && [ ! -d /sys/module/kvm_amd ] && [ ! -d /sys/module/kvm_intel ]
}

# Kernel arguments the minimal Linux guest needs on a kvm_pvm host (none elsewhere).
embervm_kvm_pvm_cmdline() {
  if embervm_kvm_is_pvm; then
    echo "noxsave clearcpuid=cx16,popcnt,smap,erms,fsrm,rdtscp,114 noreplace-smp rodata=off tsc=reliable no_timer_check no-kvmapf"
  fi
}

# Re-runs the calling script inside scripts/with-kvm when this host has no usable /dev/kvm
# (and we are not already inside its VM); returns when KVM is usable here. Call it after the
# host-side work (build, kernel, images) so that only what needs KVM runs in the VM:
#   embervm_need_kvm "$0" "$@"
embervm_need_kvm() {
  local script=$1; shift
  local top_dir
  top_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  [ "${EMBERVM_WITH_KVM:-}" = vm ] && return 0
  local kvm
  kvm=$("$top_dir/scripts/with-kvm" --which) || exit 1
  case "$kvm" in
    host*) return 0 ;;
  esac
  exec "$top_dir/scripts/with-kvm" -- "$script" "$@"
}
