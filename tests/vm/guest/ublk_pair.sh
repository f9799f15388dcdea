#!/bin/sh
# Guest script: a replicated resource with the ublk frontend on a real kernel (issue #5 item 5).
# Two repld on loopback in one VM (nodes alpha and beta; one kernel, so each node has its own
# ublk device id). The Primary's /dev/ublkb0 gets ext4, files and fsync; the Primary's daemon
# is killed (-9) under fio load and restarted: the mount carries on and fio's verify passes.
# Then alpha stops, beta is promoted, and its /dev/ublkb1 holds every fsync'd file, byte for
# byte. Real tools by full path: busybox sh prefers its own applets.
set -eu
name=ublk_pair
. /opt/repld/pair_lib.sh
in_sync() {
  wait_for alpha '"replication": "Established"' 60
  wait_for alpha '"out_of_sync_bytes": 0' 60
}

mkdir -p /etc/repld /run/repld /var/lib/repld /mnt/r0
cat >"$cfg" <<EOT
[resource]
name = "r0"
protocol = "C"
frontend = "ublk"
[net]
secret = "vm-test"
ping_timeout = "2s"
[node.alpha]
disk = "/var/lib/repld/alpha.img"
address = "127.0.0.1:7788"
control_socket = "/run/repld/alpha.ctl"
ublk_device_id = 0
[node.beta]
disk = "/var/lib/repld/beta.img"
address = "127.0.0.1:7789"
control_socket = "/run/repld/beta.ctl"
ublk_device_id = 1
EOT
for n in alpha beta; do
  /usr/bin/truncate -s 256M /var/lib/repld/$n.img
  ctl $n create-md --force >/dev/null
  start $n
done
wait_for alpha '"connection": "Connected"' 30
[ ! -e /dev/ublkb0 ] && [ ! -e /dev/ublkb1 ] || fail "a Secondary has a ublk device"

step "alpha Primary: /dev/ublkb0 appears, the initial sync runs"
ctl alpha primary --force >/dev/null || fail "primary --force"
[ -b /dev/ublkb0 ] || fail "no /dev/ublkb0 once alpha is Primary"
status alpha | grep -q '"device": "/dev/ublkb0"' || fail "status does not name /dev/ublkb0"
in_sync
[ ! -e /dev/ublkb1 ] || fail "the Secondary beta has /dev/ublkb1"

step "ext4 on /dev/ublkb0, files written with fsync"
/usr/sbin/mkfs.ext4 -q -F /dev/ublkb0
/usr/bin/mount -t ext4 /dev/ublkb0 /mnt/r0
for f in 1 2 3; do
  /usr/bin/dd if=/dev/urandom of=/mnt/r0/file$f bs=1M count=4 conv=fsync status=none
done
(cd /mnt/r0 && /usr/bin/sha256sum file1 file2 file3) >/tmp/sums
ctl alpha secondary 2>/tmp/err && fail "secondary succeeded with /dev/ublkb0 mounted"
grep -q "in use" /tmp/err || fail "secondary refused without saying why: $(cat /tmp/err)"

step "kill -9 alpha's daemon under fio load, restart it"
/usr/bin/fio --name=load --filename=/mnt/r0/fio --size=24M --bs=4k --rw=randwrite \
  --ioengine=io_uring --iodepth=8 --rate_iops=1500 --verify=crc32c --do_verify=1 \
  --output=/tmp/fio.out >/dev/null 2>&1 &
fio_pid=$!
sleep 1.5
kill -0 "$fio_pid" 2>/dev/null || fail "fio ended before the kill: nothing to test"
kill -9 "$pid_alpha"
wait "$pid_alpha" 2>/dev/null || true
sleep 1
start alpha
wait "$fio_pid" || { cat /tmp/fio.out; fail "fio (write and verify) across the restart"; }
grep -q "err= 0" /tmp/fio.out || { cat /tmp/fio.out; fail "fio reported errors"; }
grep -q "taking over /dev/ublkb0" /tmp/alpha.log || fail "the restarted daemon did not take the device over"
/usr/bin/dd if=/dev/urandom of=/mnt/r0/file4 bs=1M count=2 conv=fsync status=none
(cd /mnt/r0 && /usr/bin/sha256sum file4) >>/tmp/sums
(cd /mnt/r0 && /usr/bin/sha256sum -c /tmp/sums >/dev/null) || fail "files differ on alpha"
in_sync

step "SIGTERM to alpha's daemon with the device mounted (systemctl restart): taken over again"
kill "$pid_alpha"
wait "$pid_alpha" || fail "alpha's daemon, stopped with the device in use: exit status $?"
[ -b /dev/ublkb0 ] || fail "/dev/ublkb0 went away although it is mounted"
start alpha
/usr/bin/dd if=/dev/urandom of=/mnt/r0/file5 bs=1M count=2 conv=fsync status=none ||
  fail "write across the restart"
[ "$(grep -c "taking over /dev/ublkb0" /tmp/alpha.log)" = 2 ] || fail "no second takeover"
(cd /mnt/r0 && /usr/bin/sha256sum file5) >>/tmp/sums
in_sync

step "alpha stops; beta is promoted and has every fsync'd file"
/usr/bin/umount /mnt/r0
kill "$pid_alpha"
wait "$pid_alpha" || fail "alpha's daemon did not stop cleanly (exit status $?)"
[ ! -e /dev/ublkb0 ] || fail "/dev/ublkb0 still there after alpha's daemon stopped"
ctl beta primary >/dev/null || fail "promote beta"
[ -b /dev/ublkb1 ] || fail "no /dev/ublkb1 once beta is Primary"
/usr/bin/mount -t ext4 /dev/ublkb1 /mnt/r0
(cd /mnt/r0 && /usr/bin/sha256sum -c /tmp/sums) || fail "beta's files differ"
/usr/bin/umount /mnt/r0
out=$(/usr/sbin/e2fsck -fn /dev/ublkb1 2>&1) || fail "e2fsck on beta: $out"
ctl beta secondary >/dev/null || fail "demote beta"
[ ! -e /dev/ublkb1 ] || fail "/dev/ublkb1 still there after beta's demotion"
kill "$pid_beta"; wait "$pid_beta" || fail "beta's daemon did not stop cleanly"
step "OK"
