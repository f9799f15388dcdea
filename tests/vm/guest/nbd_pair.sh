#!/bin/sh
# Guest script: a replicated resource with the NBD frontend, mounted through the kernel's nbd
# driver (issue #5 items 3 and 5). `replctl nbd-attach` does the NBD handshake on the daemon's
# socket and hands it to the kernel over netlink: the Primary's /dev/nbdN gets ext4, files and
# fsync; a Secondary refuses the attach and says why; the Primary's daemon is killed (-9) under
# fio with verify, restarted and promoted, and `nbd-attach --persist` reconnects the device: fio's
# verify passes; then alpha stops, beta is promoted, and its own /dev/nbdN holds every fsync'd
# file, byte for byte.
set -eu
name=nbd_pair
. /opt/repld/pair_lib.sh

mkdir -p /etc/repld /run/repld /var/lib/repld /mnt/r0
cat >"$cfg" <<EOT
[resource]
name = "r0"
protocol = "C"
[net]
secret = "vm-test"
[node.alpha]
disk = "/var/lib/repld/alpha.img"
address = "127.0.0.1:7788"
control_socket = "/run/repld/alpha.ctl"
nbd_socket = "/run/repld/alpha.sock"
[node.beta]
disk = "/var/lib/repld/beta.img"
address = "127.0.0.1:7789"
control_socket = "/run/repld/beta.ctl"
nbd_socket = "/run/repld/beta.sock"
EOT
for n in alpha beta; do
  /usr/bin/truncate -s 128M /var/lib/repld/$n.img
  ctl $n create-md --force >/dev/null
  start $n
done
wait_for alpha '"connection": "Connected"' 30
ctl alpha primary --force >/dev/null || fail "primary --force"
wait_for alpha '"out_of_sync_bytes": 0' 60
wait_for alpha '"disk": "UpToDate"' 10

step "a Secondary refuses the attach and says how to promote"
ctl beta nbd-attach 2>/tmp/err && fail "nbd-attach on the Secondary succeeded"
grep -q "Secondary on node beta" /tmp/err || fail "no reason given: $(cat /tmp/err)"

step "alpha's export on /dev/nbdN (--persist): ext4, files with fsync"
ctl alpha nbd-attach --connections 2 --persist >/tmp/dev 2>/tmp/persist.log &
persist=$!
i=0; while [ ! -s /tmp/dev ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
dev=$(cat /tmp/dev)
[ -b "$dev" ] || fail "nbd-attach printed '$dev', not a block device"
[ "$(/usr/sbin/blockdev --getsize64 "$dev")" = "$(ctl alpha status --json | sed -n 's/.*"size_bytes": \([0-9]*\).*/\1/p')" ] ||
  fail "size of $dev differs from the resource's"
/usr/sbin/mkfs.ext4 -q -F "$dev"
/usr/bin/mount -t ext4 "$dev" /mnt/r0
for f in 1 2 3; do
  /usr/bin/dd if=/dev/urandom of=/mnt/r0/file$f bs=1M count=4 conv=fsync status=none
done
(cd /mnt/r0 && /usr/bin/sha256sum file1 file2 file3) >/tmp/sums

step "kill -9 alpha's daemon under fio load; restart and promote it: the device reconnects"
/usr/bin/fio --name=load --filename=/mnt/r0/fio --size=16M --bs=4k --rw=randwrite \
  --ioengine=io_uring --iodepth=8 --rate_iops=1000 --verify=crc32c --do_verify=1 \
  --output=/tmp/fio.out >/dev/null 2>&1 &
fio_pid=$!
sleep 1.5
kill -0 "$fio_pid" 2>/dev/null || fail "fio ended before the kill: nothing to test"
kill -9 "$pid_alpha"
wait "$pid_alpha" 2>/dev/null || true
start alpha
wait_for alpha '"disk": "UpToDate"' 30
ctl alpha primary >/dev/null || fail "promote alpha again"
wait "$fio_pid" || { cat /tmp/fio.out /tmp/persist.log; fail "fio (write and verify) across the restart"; }
grep -q "err= 0" /tmp/fio.out || { cat /tmp/fio.out; fail "fio reported errors"; }
grep -q "reconnected" /tmp/persist.log || { cat /tmp/persist.log; fail "no reconnect"; }
(cd /mnt/r0 && /usr/bin/sha256sum -c /tmp/sums >/dev/null) || fail "files differ on alpha"
wait_for alpha '"out_of_sync_bytes": 0' 60
/usr/bin/umount /mnt/r0
replctl nbd-detach "$dev" || fail "nbd-detach"
wait "$persist" || fail "the --persist process did not end after the detach"

step "alpha stops; beta is promoted and its /dev/nbdN has every fsync'd file"
kill "$pid_alpha"
wait "$pid_alpha" || fail "alpha's daemon did not stop cleanly (exit status $?)"
ctl beta primary >/dev/null || fail "promote beta"
dev=$(ctl beta nbd-attach) || fail "nbd-attach on beta"
/usr/bin/mount -t ext4 "$dev" /mnt/r0
(cd /mnt/r0 && /usr/bin/sha256sum -c /tmp/sums) || fail "beta's files differ"
/usr/bin/umount /mnt/r0
out=$(/usr/sbin/e2fsck -fn "$dev" 2>&1) || fail "e2fsck on beta: $out"
replctl nbd-detach "$dev" || fail "nbd-detach on beta"
kill "$pid_beta"; wait "$pid_beta" || fail "beta's daemon did not stop cleanly"
step "OK"
