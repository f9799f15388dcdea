#!/bin/sh
# Guest script (busybox sh, run by the VM's /init as root): the VM harness itself works. The
# kernel drivers the project needs are there, the project's binaries run, and a real ext4 on a
# loop device keeps what is written to it. Real tools are called by full path: a bare "dd" or
# "losetup" would be busybox's applet.
set -eu

step() { echo "smoke: $*"; }
fail() { echo "smoke: FAIL: $*"; exit 1; }

step "kernel $(uname -r)"
[ -c /dev/ublk-control ] || fail "no /dev/ublk-control after loading ublk_drv"
{ [ -b /dev/nbd0 ] && [ -b /dev/nbd3 ]; } || fail "no /dev/nbd0../dev/nbd3 after loading nbd"
[ ! -e /dev/nbd4 ] || fail "/dev/nbd4 exists: nbds_max=4 was not applied"

step "project binaries"
repld --version
replctl --version
[ "$(command -v repld)" = "$REPLD_BIN" ] || fail "repld on PATH is $(command -v repld), not $REPLD_BIN"

step "ext4 on a 64 MiB loop device over a tmpfs file"
/usr/bin/truncate -s 64M /tmp/disk.img
dev=$(/usr/sbin/losetup -f --show /tmp/disk.img)
/usr/sbin/mkfs.ext4 -q -F "$dev"
mkdir -p /mnt/smoke
/usr/bin/mount -t ext4 "$dev" /mnt/smoke
/usr/bin/dd if=/dev/urandom of=/tmp/data bs=1M count=8 status=none
/usr/bin/dd if=/tmp/data of=/mnt/smoke/data bs=1M conv=fsync status=none
# Unmounting drops the filesystem's page cache: the read below comes from the disk.
/usr/bin/umount /mnt/smoke
/usr/bin/mount -t ext4 "$dev" /mnt/smoke
/usr/bin/cmp /tmp/data /mnt/smoke/data || fail "the file read back differs"
[ "$(/usr/bin/sha256sum </tmp/data)" = "$(/usr/bin/sha256sum </mnt/smoke/data)" ] || fail "sha256 differs"

step "fio (io_uring) with verify on the same filesystem"
/usr/bin/fio --name=smoke --filename=/mnt/smoke/fio --size=2M --bs=4k --rw=randwrite \
  --ioengine=io_uring --iodepth=4 --verify=crc32c --output-format=terse >/dev/null ||
  fail "fio"

/usr/bin/umount /mnt/smoke
out=$(/usr/sbin/e2fsck -fn "$dev" 2>&1) || fail "e2fsck found errors: $out"
/usr/sbin/losetup -d "$dev"
step "OK"
