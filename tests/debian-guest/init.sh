#!/bin/busybox sh
# /init of the Debian-kernel test initramfs (scripts/build-debian-initramfs packs it with a
# static busybox and the virtio modules of Debian's stock cloud kernel, listed in /modules.list
# in load order). The kernel finds the virtio-mmio devices only through ACPI (its virtio_mmio
# has no virtio_mmio.device= support): /init loads the modules, checks what appeared and ends
# the VM through ACPI.
#
# Prints markers tests/integration/debian-guest-test looks for:
#   DEBIAN-INIT-START                  first thing /init does
#   INSMOD-OK n=N | INSMOD-FAILED X    the modules
#   ACPI-TABLES <names>                /sys/firmware/acpi/tables
#   CPU-TOPOLOGY cpuN package=P core=C one line per CPU, from /sys (what the kernel made of CPUID)
#   VIRTIO <dev> id=<device id> driver=<driver> via=<platform device>   one line per device
#   VIRTIO-COUNT n=N                   devices on the virtio bus
#   MSI-IRQS n=N                       interrupts of /proc/interrupts on PCI-MSI (MSI-X of
#                                      virtio-pci functions), each line also printed as MSI-IRQ ...
#   VDA-TOKEN <first line of /dev/vda> the drive is readable (the test writes a token there)
#   GUEST-DONE                         followed by `poweroff -f` (gtest=poweroff, the default)
#                                      or `reboot -f` (gtest=reboot)
B=/bin/busybox
export PATH=/bin
echo "DEBIAN-INIT-START"
$B mount -t devtmpfs dev /dev
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
n=0
while read -r m; do
  if $B insmod "/lib/modules/$m"; then n=$((n + 1)); else echo "INSMOD-FAILED $m"; fi
done < /modules.list
echo "INSMOD-OK n=$n"
echo "ACPI-TABLES $($B ls /sys/firmware/acpi/tables 2>/dev/null | $B tr '\n' ' ')"
for c in /sys/devices/system/cpu/cpu[0-9]*; do
  [ -r "$c/topology/core_id" ] || continue
  read -r pkg < "$c/topology/physical_package_id"; read -r core < "$c/topology/core_id"
  echo "CPU-TOPOLOGY ${c##*/} package=$pkg core=$core"
done
# virtio_blk creates vda as it probes; its partition scan may lag: wait up to 10 s.
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do $B usleep 100000; i=$((i + 1)); done
count=0
for d in /sys/bus/virtio/devices/*; do
  [ -e "$d" ] || continue
  count=$((count + 1))
  read -r id < "$d/device"
  parent=$($B readlink -f "$d/..")
  echo "VIRTIO ${d##*/} id=$id driver=$($B basename "$($B readlink "$d/driver")") via=${parent##*/}"
done
echo "VIRTIO-COUNT n=$count"
msi=0
while read -r l; do
  case "$l" in *PCI-MSI*) msi=$((msi + 1)); echo "MSI-IRQ $l" ;; esac
done < /proc/interrupts
echo "MSI-IRQS n=$msi"
if [ -b /dev/vda ]; then
  echo "VDA-TOKEN $($B head -n 1 /dev/vda)"
else
  echo "VDA-MISSING"
fi
echo "GUEST-DONE"
case "$gtest" in
  reboot) $B reboot -f ;;
  *) $B poweroff -f ;;
esac
echo "GUEST-STILL-RUNNING"
exec $B sleep 3600
