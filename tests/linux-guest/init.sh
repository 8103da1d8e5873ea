#!/bin/busybox sh
# /init of the embervm Linux guest initramfs (scripts/build-initramfs packs it with a static
# busybox as /bin/busybox and the vsock test's /bin/vsock-agent). Based on /work/shared/guest-kernel/example-init.sh.
# The same tree also serves as an ext4 root file system on a virtio-blk drive (gtest=root: no
# initrd, the kernel mounts /dev/vda as / and runs this file with init=/init).
#
# Prints markers the tests and the demo look for:
#   INIT-START        first thing /init does
#   BOOT-TIMER-...    result of the boot-timer write (only with the kernel argument boottimer=1)
#   BOOT-OK           /proc mounted, with the guest uptime
#   nproc=N           online CPUs
#   CPU-TOPOLOGY cpuN package=P core=C   one line per CPU, from /sys (what the kernel made of CPUID)
#   GUEST-DONE        everything ran; followed by `reboot -f` (i8042 reset: the VMM exits 0)
#
# Kernel arguments it understands (unknown `name=value` kernel arguments reach /init as
# environment variables, so these are read without mounting /proc first):
#   boottimer=1       write 123 to the VMM's boot-timer MMIO byte at 0xd0000000 (needs /dev/mem,
#                     i.e. a kernel with CONFIG_DEVMEM=y); the VMM logs the time since it started
#   gtest=quick       stop right after BOOT-OK
#   gtest=diag|rw|durable|root|net|balloon|console|ratelimit-blk|ratelimit-net|vsock|virtiofs|virtiofs-kill|
#         snapshot   extra checks (see below)
#   gtest=shell       interactive busybox shell on the console; `exit` reboots (ends the VMM)
#
# No `busybox --install`: symlink syscalls are slow on the project's nested-KVM hosts, and
# Debian's busybox-static runs applets by name from its shell anyway (ls, cat, ... just work).
# Every command below is a shell builtin or an applet of the same busybox, so this init does
# very few fork/exec (each costs noticeably on those hosts).
echo "INIT-START"
B=/bin/busybox
export PATH=/bin
# From an initramfs /dev holds only the built-in console node; from a disk root the kernel has
# already mounted devtmpfs on /dev (CONFIG_DEVTMPFS_MOUNT) and a second mount would fail (EBUSY).
[ -c /dev/null ] || $B mount -t devtmpfs dev /dev
if [ "$boottimer" = 1 ]; then
  if [ ! -c /dev/mem ]; then
    echo "BOOT-TIMER-FAILED: no /dev/mem in this guest kernel (needs CONFIG_DEVMEM=y)"
  elif $B devmem 0xd0000000 8 123; then
    echo "BOOT-TIMER-WRITTEN"
  else
    echo "BOOT-TIMER-FAILED: devmem 0xd0000000 8 123 failed"
  fi
fi
$B mount -t proc proc /proc
read up idle < /proc/uptime
echo "BOOT-OK uptime=$up"
t() { read up idle < /proc/uptime; echo "[t=$up] $*"; }
$B mount -t sysfs sys /sys
read -r CMDLINE < /proc/cmdline
t "mounted proc/sys/dev"
case "$CMDLINE" in *gtest=quick*) t "GUEST-DONE"; $B reboot -f ;; esac
n=0; while read -r l; do case "$l" in processor*) n=$((n+1));; esac; done < /proc/cpuinfo
echo "nproc=$n"
for c in /sys/devices/system/cpu/cpu[0-9]*; do
  [ -r "$c/topology/core_id" ] || continue
  read -r pkg < "$c/topology/physical_package_id"; read -r core < "$c/topology/core_id"
  echo "CPU-TOPOLOGY ${c##*/} package=$pkg core=$core"
done
read -r osrelease < /proc/sys/kernel/osrelease
echo "kernel release=$osrelease"
for d in /sys/bus/virtio/devices/*; do [ -e "$d" ] && { read -r id < $d/device; echo "  virtio ${d##*/} device-id=$id driver=$($B readlink $d/driver)"; }; done
echo "partitions:"; while read -r l; do echo "  $l"; done < /proc/partitions
echo "net: $($B ls /sys/class/net)"
case "$CMDLINE" in *gtest=diag*)
  while read -r l; do case "$l" in flags*) echo "cpu $l"; break;; esac; done < /proc/cpuinfo
  while read -r l; do echo "  $l"; done < /proc/interrupts
  while read -r l; do case "$l" in MemTotal*|MemFree*) echo "  $l";; esac; done < /proc/meminfo ;;
esac
case "$CMDLINE" in *gtest=rw*)
  if [ -b /dev/vda ] && $B mount -t ext4 /dev/vda /mnt; then
    t "mounted vda"
    read up idle < /proc/uptime; echo "guest-wrote uptime=$up" > /mnt/hello.txt
    $B sync; t "synced"; $B ls -l /mnt; $B umount /mnt && t "UMOUNT-OK"
  else echo "MOUNT-FAILED"; fi ;;
esac
case "$CMDLINE" in *gtest=root*)
  # Booted without an initrd: / must be the ext4 file system on vda (mounted by the kernel;
  # /proc/mounts calls it /dev/root). Write a file, sync, then remount / read-only (the
  # journal is checkpointed and the file system marked clean, as a real shutdown would) so
  # that the host's debugfs sees the file and e2fsck finds nothing to fix after `reboot -f`.
  rootmnt=; while read -r dev mnt fs opts rest; do [ "$mnt" = / ] && rootmnt="$dev $fs $opts"; done < /proc/mounts
  case "$rootmnt" in
    *" ext4 rw"*)
      echo "ROOT-EXT4-OK: / is $rootmnt"
      read up idle < /proc/uptime; echo "guest-wrote-root uptime=$up" > /hello.txt
      $B sync; t "synced"
      $B mount -o remount,ro / && t "ROOT-REMOUNT-RO" ;;
    *) echo "ROOT-EXT4-FAILED: / is '$rootmnt' (expected a read-write ext4 /dev/root)" ;;
  esac ;;
esac
case "$CMDLINE" in *gtest=durable*)
  # A token at sector 8 of the raw disk, made durable with fsync (a virtio-blk FLUSH); the test
  # kills the VMM with SIGKILL as soon as it sees DURABLE-SYNCED and looks for the token.
  printf 'DURABLE %s' "$token" | $B dd of=/dev/vda bs=512 seek=8 conv=fsync,notrunc 2>/dev/null &&
    echo "DURABLE-SYNCED" || echo "DURABLE-FAILED"
  $B sleep 600 ;;
esac
case "$CMDLINE" in *gtest=net*)
  # eth0 from the kernel's virtio_net driver, addressed by hand (no DHCP on the host side):
  # ICMP both ways with ping, then a TCP exchange with the host's echo server (net_host=,
  # net_port= kernel arguments; the test runs the server in the TAP's network namespace).
  if [ -e /sys/class/net/eth0 ]; then
    read -r mac < /sys/class/net/eth0/address; read -r mtu < /sys/class/net/eth0/mtu
    echo "NET-ETH0 mac=$mac mtu=$mtu"
    $B ip link set eth0 up && $B ip addr add "$net_guest/24" dev eth0 && t "NET-UP $net_guest"
    $B ping -c 3 -W 5 "$net_host" && t "NET-PING-OK"
    # Up to 3 attempts: on a loaded nested host a connect can take longer than one timeout
    # (each attempt is logged, so a retry is visible in the test log).
    for try in 1 2 3; do
      reply=$(echo "hello-from-guest $net_token" | $B nc -w 20 "$net_host" "$net_port")
      [ -n "$reply" ] && break
      t "NET-TCP-ATTEMPT $try failed"
    done
    echo "NET-TCP-REPLY: $reply"
    case "$CMDLINE" in *net_bulk_port=*)
      # 4 MiB to the host's bulk server and back (both directions of the queues with large
      # frames); the MD5 of what came back must be that of what went.
      $B mkdir -p /tmp; $B dd if=/dev/urandom of=/tmp/bulk bs=65536 count=64 2>/dev/null
      size=$($B stat -c %s /tmp/bulk)
      { echo "SIZE $size"; $B cat /tmp/bulk; } | $B nc -w 30 "$net_host" "$net_bulk_port" > /tmp/bulk.back
      sent=$($B md5sum < /tmp/bulk); back=$($B md5sum < /tmp/bulk.back)
      echo "NET-BULK sent ${sent%% *} got ${back%% *} ($($B stat -c %s /tmp/bulk.back) bytes)"
      [ "$sent" = "$back" ] && t "NET-BULK-OK $size bytes" ;;
    esac
  else echo "NET-NO-ETH0"; fi ;;
esac
case "$CMDLINE" in *gtest=balloon*)
  # The kernel's virtio_balloon driver inflates towards the VMM's target from its probe on
  # (often before /init runs); without DEFLATE_ON_OOM every inflated page leaves MemTotal. Wait
  # until MemTotal has stopped falling for 3 s; the test checks the VMM's log for the driver's
  # `actual` reaching the target.
  mt() { while read -r k v u; do [ "$k" = MemTotal: ] && echo "$v"; done < /proc/meminfo; }
  first=$(mt); last=$first; same=0; i=0
  echo "BALLOON-START MemTotal=${first} kB target=${balloon_mib} MiB"
  while [ $same -lt 3 ] && [ $i -lt 120 ]; do
    $B sleep 1; i=$((i+1)); now=$(mt)
    if [ "$now" = "$last" ]; then same=$((same+1)); else same=0; last=$now; fi
  done
  t "BALLOON-SETTLED MemTotal ${first} -> ${last} kB" ;;
esac
case "$CMDLINE" in *gtest=console*)
  # virtio-console (console=hvc0: /init's own output goes there too): a line written straight
  # to /dev/hvc0, then a line the test writes to embervm's stdin read back from /dev/hvc0 and
  # echoed with a marker (the tty echoes the input itself as well, hence the marker).
  if [ -c /dev/hvc0 ]; then
    echo "CONSOLE-HVC0-WRITE $console_token" > /dev/hvc0
    echo "CONSOLE-READING"
    if read -r -t 120 line < /dev/hvc0; then echo "CONSOLE-ECHO: $line"; else echo "CONSOLE-READ-FAILED"; fi
  else echo "CONSOLE-NO-HVC0"; fi ;;
esac
case "$CMDLINE" in *gtest=ratelimit-*)
  # Rate limiters (tests/integration/linux-ratelimit-test judges): raw RL-* figures, times from
  # /proc/uptime. blk: direct reads (one request per dd block) of the limited vda and the
  # unlimited vdb; net: TCP to and from the host's sink/source (rl_host, ports 7101-7103).
  # RL-WAIT: the test PATCHes a limiter through the API, then writes a line to the console.
  rd() { read s i < /proc/uptime; r=$($B dd if=$1 of=/dev/null bs=$2 count=$3 iflag=direct 2>&1)
    read e i < /proc/uptime; echo "RL-$4 bs=$2 count=$3 start=$s end=$e dd:" $r; }
  tx() { read s i < /proc/uptime; $B dd if=/dev/zero bs=65536 count=$2 2>/dev/null | $B nc "$rl_host" $1
    read e i < /proc/uptime; echo "RL-$3 start=$s end=$e"; }
  wt() { echo "RL-WAIT $1"; read -r l; echo "RL-GO $l"; }
  case "$CMDLINE" in
    *gtest=ratelimit-blk*) rd /dev/vda 65536 64 BW; wt ops; rd /dev/vda 4096 82 OPS
      rd /dev/vdb 65536 256 ALONE; rd /dev/vda 4096 200 BG & $B sleep 1; rd /dev/vdb 65536 256 BESIDE; wait ;;
    *) $B ip link set eth0 up && $B ip addr add "$rl_guest/24" dev eth0 && $B ping -c 1 -W 5 "$rl_host" >/dev/null
      tx 7101 "$rl_tx" TX; read s i < /proc/uptime; $B nc "$rl_host" 7102 </dev/null >/dev/null
      read e i < /proc/uptime; echo "RL-RX start=$s end=$e"; wt tx; tx 7103 "$rl_tx2" TX2 ;;
  esac ;;
esac
case "$CMDLINE" in *gtest=vsock*)
  # virtio-vsock with /bin/vsock-agent (tests/linux-guest/vsock-agent.c): guest to host (the
  # host echoes on port 5000), 1 then 100 connections at once; host to guest, the agent listens
  # on 6000 (1 connection) then 6001 (100) and answers each with a checksum; one more connection
  # to the host at the end shows the device still works after all that.
  A=/bin/vsock-agent
  $A connect 5000 1 200000 && $A connect 5000 100 4096 && $A listen 6000 1 && $A listen 6001 100 &&
    $A connect 5000 1 1000 && t "VSOCK-ALL-OK" ;;
esac
case "$CMDLINE" in *gtest=snapshot*)
  # For the snapshot test (tests/guests/run-snapshot-test --linux): "SNAP N" to sector N of the
  # raw drive, made durable (fsync: a virtio-blk FLUSH) before the console shows "count N", in a
  # loop until the VMM ends; snapshots and restores happen anywhere in it.
  # snap_net=ADDR (linux-snapshot-net): eth0 gets ADDR/24 and a TCP echo server on port 7000
  # (busybox nc, one child per connection) before the loop; the host pings and talks to it
  # before the snapshot and after the restore.
  # snap_vsock=1 (linux-snapshot-vsock): /bin/vsock-agent holds a connection to the host's port
  # 5000 across the snapshot; once the restored device's transport reset has ended it
  # (VSOCK-HOLD-RESET), a new connection to the host (port 5000) and one from the host (port
  # 6000) carry data, then VSOCK-SNAP-OK.
  if [ -n "$snap_net" ]; then
    $B ip link set eth0 up && $B ip addr add "$snap_net/24" dev eth0 && t "SNAP-NET-UP $snap_net"
    $B nc -ll -p 7000 -e $B cat &
  fi
  if [ "$snap_vsock" = 1 ]; then
    A=/bin/vsock-agent
    { $A hold 5000 && $A connect 5000 1 1000 && $A listen 6000 1 && t "VSOCK-SNAP-OK"; } &
  fi
  i=0
  while printf 'SNAP %s' "$i" | $B dd of=/dev/vda bs=512 seek=$i conv=fsync,notrunc 2>/dev/null; do
    echo "count $i"
    i=$((i+1))
  done
  echo "SNAPSHOT-WRITE-FAILED at $i" ;;
esac
case "$CMDLINE" in *gtest=virtiofs*)
  # virtio-fs (vfs_tag=TAG): mount the host directory, read the host's file, write 4 MiB with its
  # MD5 and a directory, sync, unmount. virtiofs-kill: after mounting, the host kills its
  # virtiofsd when it sees VIRTIOFS-KILL-ME; 5 s later a read must not succeed (the request
  # gets no answer: after 10 s the guest stops waiting for it and ends).
  for a in $CMDLINE; do case "$a" in vfs_tag=*) vt=${a#vfs_tag=} ;; esac; done
  if $B mount -t virtiofs "$vt" /mnt; then
    t "VIRTIOFS-MOUNTED $vt"
    read -r got < /mnt/from-host.txt; echo "VIRTIOFS-HOST-FILE $got"
    case "$CMDLINE" in
      *gtest=virtiofs-kill*)
        echo "VIRTIOFS-KILL-ME"; $B sleep 5
        # The daemon is gone: one more read, in the background (it may wait for ever).
        ( if read -r x < /mnt/from-host.txt; then echo "VIRTIOFS-READ-AFTER-KILL-OK"; else echo "VIRTIOFS-READ-FAILED"; fi
          echo > /vfs-read-done ) &
        i=0; while [ $i -lt 50 ] && [ ! -e /vfs-read-done ]; do $B sleep 0.2; i=$((i+1)); done
        [ -e /vfs-read-done ] || echo "VIRTIOFS-READ-STUCK" ;;
      *)
        $B dd if=/dev/urandom of=/mnt/guest.bin bs=1M count=4 2>/dev/null
        sum=$($B md5sum /mnt/guest.bin); echo "VIRTIOFS-WROTE ${sum%% *}"
        $B mkdir /mnt/guest-dir && echo "guest-dir-ok" > /mnt/guest-dir/note.txt
        $B sync; $B umount /mnt && t "VIRTIOFS-UMOUNT-OK" ;;
    esac
  else echo "VIRTIOFS-MOUNT-FAILED"; fi ;;
esac
case "$CMDLINE" in *gtest=shell*)
  echo "SHELL: busybox sh on the console (applets run by name: ls, cat, dmesg, ...); 'exit' reboots the guest and ends the VMM"
  # cttyhack opens the real console device (ttyS0) so that the shell gets job control / Ctrl-C.
  HOME=/ $B setsid $B cttyhack $B sh -l
  ;;
esac
t "GUEST-DONE"
$B reboot -f
