#!/bin/sh
# Guest script: the ublk frontend of a resource served alone (one node) on a real kernel. The
# daemon creates /dev/ublkb0; ext4 on it; kill -9 of the daemon with the file system mounted and a
# write in flight; the restarted daemon takes the device over (UBLK_F_USER_RECOVERY): the write
# completes, the data is intact, e2fsck is clean; a clean stop of an unused device deletes it.
set -eu
step() { echo "ublk_standalone: $*"; }
fail() { echo "ublk_standalone: FAIL: $*"; cat /tmp/repld.log; exit 1; }
mkdir -p /run/repld /var/lib/r
/usr/bin/truncate -s 256M /var/lib/r/solo.img
cat > /etc/solo.toml <<EOT
[resource]
name = "solo"
frontend = "ublk"
[ublk]
device_id = 0
[node.solo]
disk = "/var/lib/r/solo.img"
control_socket = "/run/repld/solo.ctl"
EOT
repld -c /etc/solo.toml -n solo > /tmp/repld.log 2>&1 &
pid=$!
i=0; while [ ! -b /dev/ublkb0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/ublkb0 ] || fail "no /dev/ublkb0"
[ "$(/usr/sbin/blockdev --getsize64 /dev/ublkb0)" = 268435456 ] || fail "size"
replctl status solo -c /etc/solo.toml -n solo --json | grep -q '"device": "/dev/ublkb0"' || fail "status"
step "write-zeroes and discard reach the daemon"
/usr/bin/dd if=/dev/urandom of=/dev/ublkb0 bs=1M count=8 oflag=direct status=none
/usr/sbin/blkdiscard -z -o 0 -l 4194304 /dev/ublkb0 || fail "write-zeroes (blkdiscard -z)"
/usr/bin/cmp -n 4194304 /dev/zero /dev/ublkb0 || fail "zeroed range does not read back as zeroes"
/usr/sbin/blkdiscard -o 4194304 -l 4194304 /dev/ublkb0 || fail "discard (blkdiscard)"
/usr/bin/cmp -n 4194304 /dev/zero /var/lib/r/solo.img || fail "write-zeroes did not reach the backing file"
/usr/sbin/mkfs.ext4 -q -F /dev/ublkb0
mkdir -p /mnt/u; /usr/bin/mount -t ext4 /dev/ublkb0 /mnt/u
/usr/bin/dd if=/dev/urandom of=/tmp/data bs=1M count=16 status=none
/usr/bin/dd if=/tmp/data of=/mnt/u/data bs=1M conv=fsync status=none
step "kill -9 with the fs mounted"
kill -9 $pid; sleep 0.5
/usr/bin/dd if=/tmp/data of=/mnt/u/data2 bs=1M count=4 status=none &
ddpid=$!
repld -c /etc/solo.toml -n solo >> /tmp/repld.log 2>&1 &
pid=$!
wait $ddpid || fail "dd during restart"
sync
grep -q "taken over from the previous daemon" /tmp/repld.log || fail "no takeover"
/usr/bin/umount /mnt/u
/usr/bin/mount -t ext4 /dev/ublkb0 /mnt/u
/usr/bin/cmp /tmp/data /mnt/u/data || fail "data differs"

step "a second resource with the same device id leaves the live device alone"
/usr/bin/truncate -s 64M /var/lib/r/other.img
sed -e 's/"solo"/"other"/' -e 's|solo.img|other.img|' -e 's|solo.ctl|other.ctl|' /etc/solo.toml >/etc/other.toml
repld -c /etc/other.toml -n solo >/tmp/other.log 2>&1 &
other=$!
i=0; while ! grep -q "is live, served by process $pid" /tmp/other.log && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
grep -q "is live, served by process $pid" /tmp/other.log || { cat /tmp/other.log; fail "no refusal"; }
kill $other; wait $other || true
/usr/bin/dd if=/tmp/data of=/mnt/u/data3 bs=1M count=2 conv=fsync status=none || fail "device broken by the second daemon"

step "SIGTERM with the file system mounted (systemctl restart): the next daemon takes over"
kill $pid; wait $pid || fail "stop with the device in use: exit status $?"
[ -b /dev/ublkb0 ] || fail "the device went away although it is mounted"
/usr/bin/dd if=/tmp/data of=/mnt/u/data4 bs=1M count=4 status=none &
ddpid=$!
repld -c /etc/solo.toml -n solo >> /tmp/repld.log 2>&1 &
pid=$!
wait $ddpid || fail "dd across the restart"
/usr/bin/sync
[ "$(grep -c "taken over from the previous daemon" /tmp/repld.log)" = 2 ] || fail "no second takeover"
/usr/bin/umount /mnt/u
/usr/bin/mount -t ext4 /dev/ublkb0 /mnt/u
/usr/bin/cmp /tmp/data /mnt/u/data || fail "data differs after the restart"
/usr/bin/cmp -n 4194304 /tmp/data /mnt/u/data4 || fail "data4 differs after the restart"
/usr/bin/umount /mnt/u
/usr/sbin/e2fsck -fn /dev/ublkb0 || fail "e2fsck rc $?"
kill $pid; wait $pid || fail "clean stop: exit status $?"
[ ! -e /dev/ublkb0 ] || fail "device still there after a clean stop"
step OK
