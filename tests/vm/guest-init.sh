#!/bin/sh
# /init of the test VM (PID 1, busybox sh): mounts the API filesystems, loads the kernel modules
# the tests need, runs the guest script and reports its exit status on the serial console as
# "REPLD-VM-EXIT <rc>" for run-vm.sh, then powers off. A panic (e.g. this script dying) reboots,
# and qemu runs with -no-reboot, so a broken guest ends qemu too.
export PATH=/opt/repld/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb
export REPLD_BIN=/opt/repld/bin/repld REPLCTL_BIN=/opt/repld/bin/replctl

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
echo "REPLD-VM-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"

hostname repld-vm
ip link set lo up
# The kernel asks /sbin/modprobe for modules it wants on the fly (e.g. crypto-crc32c).
echo /sbin/modprobe >/proc/sys/kernel/modprobe

# "name args" lines written by build-initramfs.sh; modprobe finds the dependencies in the
# modules.dep built for the initramfs.
while read -r name args; do
  # $args unquoted on purpose: one word per module parameter.
  # shellcheck disable=SC2086
  modprobe "$name" $args || echo "REPLD-VM-WARN modprobe $name failed"
done </etc/repld-vm/modules
echo "REPLD-VM-READY uptime=$(cut -d' ' -f1 /proc/uptime)"

cd /tmp || true
if [ -f /guest/test.sh ]; then
  sh /guest/test.sh
  rc=$?
else
  echo "REPLD-VM-WARN no /guest/test.sh"
  rc=127
fi
sync
echo "REPLD-VM-EXIT $rc"
poweroff -f
