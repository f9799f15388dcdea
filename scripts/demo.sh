#!/usr/bin/env bash
# The main job on an embedded default: one resource on a file-backed disk in a temporary folder,
# served by repld over NBD, written and read back by real NBD clients. Every step is printed.
# (Replication joins this story in [2/5]: then two nodes on this machine.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh default >/dev/null
bin=$PWD/build/default/bin

work=$(mktemp -d /var/tmp/repld-demo.XXXXXX)
pid=""
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "1. A 512 MiB backing disk (a sparse file) and the resource's configuration"
run truncate -s 512M "$work/disk-alpha.img"
cat >"$work/demo.toml" <<TOML
[resource]
name = "demo"

[nbd]
socket = "$work/demo.sock"

[node.alpha]
disk = "$work/disk-alpha.img"
TOML
cat "$work/demo.toml"
run "$bin/replctl" check-config "$work/demo.toml" --node alpha

step "2. Start repld for node alpha (log below, prefixed with 'repld |')"
printf '$ %s\n' "repld --config $work/demo.toml --node alpha &"
"$bin/repld" --config "$work/demo.toml" --node alpha 2> >(sed 's/^/repld | /' >&2) &
pid=$!
for _ in $(seq 100); do [[ -S $work/demo.sock ]] && break; sleep 0.1; done
sleep 0.2
uri="nbd+unix:///demo?socket=$work/demo.sock"

step "3. What a client sees"
run nbdinfo "$uri"

step "4. Write 64 MiB of random data through NBD, read it back, compare byte for byte"
printf '$ head -c 64M /dev/urandom > data.bin\n'
head -c 64M /dev/urandom >"$work/data.bin"
run nbdcopy "$work/data.bin" "$uri"
run nbdcopy "$uri" "$work/readback.bin"
run cmp -n $((64 << 20)) "$work/data.bin" "$work/readback.bin"
echo "identical: what was written is what is read"
run cmp -n $((64 << 20)) "$work/data.bin" "$work/disk-alpha.img"
echo "identical: the data is on the backing disk itself"

step "5. A random-write workload with verification (fio, 4 KiB, 32 in flight)"
run fio --name=demo --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k --iodepth=32 \
  --size=128M --offset=128M --verify=crc32c --verify_state_save=0 --output-format=terse --terse-version=3 >/dev/null
echo "fio wrote 128 MiB in 4 KiB blocks and verified every block (crc32c): no errors"

step "6. Stop repld with SIGTERM: requests in flight finish, the disk is synced"
run kill -TERM "$pid"
wait "$pid"
echo "repld exited with status $?"
pid=""
printf '\nDone. Everything lived in %s and is removed now.\n' "$work"
