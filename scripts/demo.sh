#!/usr/bin/env bash
# The main job on an embedded default: a replicated resource on this machine. Two repld daemons
# (nodes alpha and beta, one config file, the peer link on 127.0.0.1) each with a file-backed
# disk in a temporary folder; alpha becomes Primary and serves the resource over NBD, real NBD
# clients write and read through it, beta holds a byte-identical copy, and when alpha dies beta
# takes over with every acknowledged write. Every step is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh default >/dev/null
bin=$PWD/build/default/bin

work=$(mktemp -d /var/tmp/repld-demo.XXXXXX)
declare -A pid=()
cleanup() {
  for n in "${!pid[@]}"; do
    if kill -0 "${pid[$n]}" 2>/dev/null; then kill -TERM "${pid[$n]}"; wait "${pid[$n]}" || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() {  # start NODE: repld in the background, its log prefixed with the node's name
  printf '$ %s\n' "repld --config demo.toml --node $1 &"
  "$bin/repld" --config "$work/demo.toml" --node "$1" 2> >(sed "s/^/  $1 | /" >&2) &
  pid[$1]=$!
  for _ in $(seq 100); do [[ -S $work/$1.ctl ]] && break; sleep 0.1; done
}
ctl() { run "$bin/replctl" "$@" demo -c "$work/demo.toml"; }
wait_for() {  # wait_for NODE PYTHON-CONDITION-ON-s WHAT
  for _ in $(seq 600); do
    if "$bin/replctl" status demo --json -c "$work/demo.toml" -n "$1" 2>/dev/null |
      python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($2) else 1)"; then
      return 0
    fi
    sleep 0.1
  done
  echo "timed out waiting for $3" >&2
  return 1
}

step "1. Two 512 MiB backing disks (sparse files) and the resource's configuration (both nodes)"
run truncate -s 512M "$work/alpha.img" "$work/beta.img"
cat >"$work/demo.toml" <<TOML
[resource]
name = "demo"
protocol = "C"              # a write is done when it is on both disks

[net]
secret = "demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[node.alpha]
disk = "$work/alpha.img"
address = "127.0.0.1:$(free_port)"
nbd_socket = "$work/alpha.sock"
control_socket = "$work/alpha.ctl"

[node.beta]
disk = "$work/beta.img"
address = "127.0.0.1:$(free_port)"
nbd_socket = "$work/beta.sock"
control_socket = "$work/beta.ctl"
TOML
cat "$work/demo.toml"
run "$bin/replctl" check-config "$work/demo.toml" --node alpha

step "2. Metadata on both disks (the end of each file: superblock, activity log, bitmap)"
ctl create-md -n alpha
ctl create-md -n beta

step "3. Start both daemons (their logs below, prefixed with the node's name); they connect"
start alpha
start beta
wait_for alpha 's["connection"] == "Connected"' "the connection"
ctl status -n alpha

step "4. Both are Secondary: neither serves the data yet"
uri_alpha="nbd+unix:///demo?socket=$work/alpha.sock"
uri_beta="nbd+unix:///demo?socket=$work/beta.sock"
run nbdinfo "$uri_alpha" || echo "refused, as it should be (the message is in alpha's log above)"

step "5. Make alpha Primary; its data counts (--force: a fresh pair), beta gets a full sync"
ctl primary --force -n alpha
wait_for alpha 's["replication"] == "Established" and s["out_of_sync_bytes"] == 0 and s["peer"]["disk"] == "UpToDate"' "the initial sync"
ctl status -n alpha
run nbdinfo "$uri_alpha"

step "6. Write 64 MiB of random data through alpha's NBD export, read it back"
printf '$ head -c 64M /dev/urandom > data.bin\n'
head -c 64M /dev/urandom >"$work/data.bin"
run nbdcopy --flush "$work/data.bin" "$uri_alpha"
run nbdcopy "$uri_alpha" "$work/readback.bin"
run cmp -n $((64 << 20)) "$work/data.bin" "$work/readback.bin"
echo "identical: what was written is what is read"

step "7. A random-write workload with verification (fio, 4 KiB, 32 in flight)"
run fio --name=demo --ioengine=nbd --uri="$uri_alpha" --rw=randwrite --bs=4k --iodepth=32 \
  --size=128M --offset=128M --verify=crc32c --verify_state_save=0 --output-format=terse --terse-version=3 >/dev/null
echo "fio wrote 128 MiB in 4 KiB blocks and verified every block (crc32c): no errors"
ctl status -n alpha

step "8. Both disks hold the same bytes (protocol C: every acknowledged write is on both)"
size=$("$bin/replctl" status demo --json -c "$work/demo.toml" -n alpha | python3 -c 'import json,sys; print(json.load(sys.stdin)["size_bytes"])')
run cmp -n "$size" "$work/alpha.img" "$work/beta.img"
echo "identical: all $size bytes of the data area"

step "9. The Primary dies (kill -9): beta keeps every acknowledged write and takes over"
run kill -KILL "${pid[alpha]}"
wait "${pid[alpha]}" 2>/dev/null || true
unset 'pid[alpha]'
wait_for beta 's["connection"] != "Connected"' "beta to notice"
ctl status -n beta
ctl primary -n beta
run nbdcopy "$uri_beta" "$work/from-beta.bin"
run cmp -n $((64 << 20)) "$work/data.bin" "$work/from-beta.bin"
echo "identical: beta serves the data alpha acknowledged"

step "10. Stop beta with SIGTERM: requests in flight finish, the disk is synced"
run kill -TERM "${pid[beta]}"
wait "${pid[beta]}"
echo "repld exited with status $?"
unset 'pid[beta]'
printf '\nDone. Everything lived in %s and is removed now.\n' "$work"
