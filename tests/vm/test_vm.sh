#!/usr/bin/env bash
# ctest "vm.NAME": boots the VM on guest/NAME.sh (smoke: the harness itself; ublk_standalone,
# ublk_pair: the ublk frontend; nbd_pair: the kernel nbd driver on the NBD frontend). Fetches the kernel and builds the base initramfs (both cached
# after the first run), then runs the guest script with the binaries ctest names in REPLD_BIN /
# REPLCTL_BIN. Prints how long each phase took.
# Usage: tests/vm/test_vm.sh NAME
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
name=${1:?usage: test_vm.sh NAME (a script in tests/vm/guest/)}
guest=$here/guest/$name.sh
[[ -f $guest ]] || { echo "no guest script $guest" >&2; exit 2; }
: "${REPLD_BIN:?set REPLD_BIN to the repld binary}" "${REPLCTL_BIN:?set REPLCTL_BIN to the replctl binary}"
bin_dir=$(dirname "$REPLD_BIN")
[[ $(dirname "$REPLCTL_BIN") == "$bin_dir" ]] || { echo "repld and replctl must share a directory" >&2; exit 1; }
for tool in qemu-system-x86_64 busybox cpio depmod; do
  # 77: ctest's SKIP_RETURN_CODE for this test; scripts/install-deps.sh installs them.
  command -v "$tool" >/dev/null || { echo "SKIP: $tool missing (run scripts/install-deps.sh)"; exit 77; }
done

now() { echo $((${EPOCHREALTIME/./} / 1000)); }
t0=$(now)
kernel_dir=$("$here/fetch-kernel.sh")
t1=$(now)
"$here/build-initramfs.sh" "$kernel_dir" >/dev/null
t2=$(now)
rc=0
"$here/run-vm.sh" "$guest" --bin-dir "$bin_dir" --timeout 300 --verbose \
  --file "$here/guest/pair_lib.sh:/opt/repld/pair_lib.sh" || rc=$?
t3=$(now)
echo "vm.$name: fetch-kernel $((t1 - t0)) ms, build-initramfs $((t2 - t1)) ms, run-vm $((t3 - t2)) ms; rc $rc"
exit "$rc"
