#!/bin/sh
# Guest script for bench/vm_frontends.py (issue #5 item 6): the same backing file (RAM) served
# as /dev/ublkb0 by repld (frontend = "ublk"), as /dev/nbd0 by repld (frontend = "nbd", attached
# with replctl nbd-attach), and as a kernel loop device with direct I/O; fio on each, in one
# run, workloads interleaved per round. Prints one "BENCH ROUND TARGET WORKLOAD {fio json}" line
# per run. Under TCG only the ratios mean anything.
set -eu
# bench/vm_frontends.py passes BENCH_RUNTIME and BENCH_ROUNDS in this file.
if [ -f /etc/bench.env ]; then . /etc/bench.env; fi
runtime=${BENCH_RUNTIME:-5}
rounds=${BENCH_ROUNDS:-2}
fail() { echo "bench: FAIL: $*"; cat /tmp/*.log 2>/dev/null | tail -20; exit 1; }
mkdir -p /run/repld /var/lib/b
/usr/bin/truncate -s 512M /var/lib/b/disk.img
/usr/bin/dd if=/dev/zero of=/var/lib/b/disk.img bs=1M count=512 conv=notrunc status=none
for fe in ublk nbd; do
  cat >/etc/b-$fe.toml <<EOT
[resource]
name = "b$fe"
frontend = "$fe"
[ublk]
device_id = 0
[nbd]
socket = "/run/repld/b.sock"
[node.solo]
disk = "/var/lib/b/disk.img"
control_socket = "/run/repld/b.ctl"
EOT
done

# fio_run ROUND TARGET DEVICE WORKLOAD
fio_run() {
  case $4 in
    4k-randread) args="--rw=randread --bs=4k --iodepth=32" ;;
    4k-randwrite) args="--rw=randwrite --bs=4k --iodepth=32" ;;
    1M-read) args="--rw=read --bs=1M --iodepth=8" ;;
    1M-write) args="--rw=write --bs=1M --iodepth=8" ;;
  esac
  # shellcheck disable=SC2086
  /usr/bin/fio --name=b --filename="$3" --direct=1 --ioengine=io_uring $args --size=512M \
    --time_based --runtime="$runtime" --ramp_time=1 --randrepeat=0 --norandommap \
    --output-format=json --output=/tmp/fio.json >/dev/null 2>&1 || fail "fio on $2 $4"
  echo "BENCH $1 $2 $4 $(tr -d '\n' </tmp/fio.json)"
}

# serve TARGET: starts what exposes the file; prints the device
serve() {
  case $1 in
    ublk)
      repld -c /etc/b-ublk.toml -n solo --log-level warn >/tmp/ublk.log 2>&1 &
      echo $! >/tmp/pid
      i=0; while [ ! -b /dev/ublkb0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
      echo /dev/ublkb0 ;;
    nbd)
      repld -c /etc/b-nbd.toml -n solo --log-level warn >/tmp/nbd.log 2>&1 &
      echo $! >/tmp/pid
      i=0; while [ ! -S /run/repld/b.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
      replctl nbd-attach bnbd -c /etc/b-nbd.toml -n solo --index 0 ;;
    loop) /usr/sbin/losetup -f --show --direct-io=on /var/lib/b/disk.img ;;
  esac
}

unserve() {
  case $1 in
    ublk) kill "$(cat /tmp/pid)"; wait "$(cat /tmp/pid)" 2>/dev/null || true ;;
    nbd) replctl nbd-detach "$2"; kill "$(cat /tmp/pid)"; wait "$(cat /tmp/pid)" 2>/dev/null || true ;;
    loop) /usr/sbin/losetup -d "$2" ;;
  esac
}

r=1
while [ $r -le "$rounds" ]; do
  for w in 4k-randread 4k-randwrite 1M-read 1M-write; do
    for t in ublk nbd loop; do
      dev=$(serve $t) || fail "serve $t"
      [ -b "$dev" ] || fail "$t: no device ($dev)"
      fio_run $r $t "$dev" $w
      unserve $t "$dev"
    done
  done
  r=$((r + 1))
done
echo "bench: done"
