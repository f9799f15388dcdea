#!/usr/bin/env bash
# Boots the test VM (Debian's 6.12 kernel under qemu TCG) and runs one guest script in it as
# root, with the project's binaries on PATH; exits with the script's exit status.
#
# Usage: tests/vm/run-vm.sh GUEST_SCRIPT [--bin-dir DIR] [--mem MiB] [--smp N] [--timeout S]
#                           [--file HOST:GUEST]... [--qemu-arg ARG]... [--log FILE] [--verbose]
#   --bin-dir   where repld and replctl are (default: build/default/bin)
#   --smp       guest CPUs (default 1: tests may run two guests on the 2 host cores)
#   --file      one more file for the guest (e.g. a config), at the absolute path GUEST
#   --qemu-arg  one more qemu argument (e.g. a -netdev for a second guest)
#   --log       keep the serial console there (default: a temporary file, kept on failure)
#   --verbose   stream the serial console to stdout too (or REPLD_VM_VERBOSE=1)
# Exit: the guest script's status; 124 when the timeout killed the VM; 125 when the VM ended
# without reporting one (boot failure, kernel panic, qemu error).
# Env: REPLD_VM_CACHE (see fetch-kernel.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vm/lib.sh
source "$here/lib.sh"
repo=$(cd "$here/../.." && pwd)
log() { echo "run-vm: $*" >&2; }
usage() { awk 'NR > 2 && !/^#/ { exit } NR > 3 { sub(/^# ?/, ""); print }' "$0" >&2; exit 2; }

script='' bin_dir=$repo/build/default/bin mem=2048 smp=1 timeout=300 log_file='' keep_log=0
verbose=${REPLD_VM_VERBOSE:-0}
extra_files=() qemu_extra=()
while (($#)); do
  case $1 in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --file) extra_files+=("$2"); shift 2 ;;
    --qemu-arg) qemu_extra+=("$2"); shift 2 ;;
    --log) log_file=$2; keep_log=1; shift 2 ;;
    --verbose|-v) verbose=1; shift ;;
    -h|--help) usage ;;
    -*) log "unknown option $1"; usage ;;
    *) [[ -z $script ]] || usage; script=$1; shift ;;
  esac
done
[[ -n $script && -f $script ]] || { log "no guest script ${script:-given}"; usage; }
for b in repld replctl; do
  [[ -x $bin_dir/$b ]] || { log "$bin_dir/$b missing (build first: scripts/build.sh)"; exit 125; }
done

kernel_dir=$("$here/fetch-kernel.sh")
base=$("$here/build-initramfs.sh" "$kernel_dir")

# Everything of this run lives in $work; the trap removes it and stops the VM, whatever ends
# the script (the guest's rc, a timeout, ctest's SIGTERM).
work=$(mktemp -d "${TMPDIR:-/tmp}/repld-vm.XXXXXX")
qemu_pid='' tail_pid=''
cleanup() {
  # Only the processes started here, by their PIDs.
  [[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  [[ -n $tail_pid ]] && kill "$tail_pid" 2>/dev/null
  rm -rf "$work"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# --- the per-run archive: project binaries (debug info stripped: repld is ~57 MB with it and
# the guest only runs it), the libraries the base lacks, the guest script, extra files.
stage=$work/stage
vm_stage_skeleton "$stage"
mkdir -p "$stage/opt/repld/bin" "$stage/guest"
declare -A in_base=()
while read -r f; do in_base[/${f#./}]=1; done <"$base.files"
for b in repld replctl; do
  strip --strip-debug -o "$stage/opt/repld/bin/$b" "$bin_dir/$b"
  while read -r lib; do
    # The base stages files at their resolved /usr path; look a library up there.
    [[ -n ${in_base[$lib]:-} || -n ${in_base[/usr$lib]:-} ]] || vm_stage_file "$lib" "$stage"
  done < <(vm_elf_deps "$bin_dir/$b")
done
install -m 0755 "$script" "$stage/guest/test.sh"
for spec in "${extra_files[@]}"; do
  [[ $spec == *:/* ]] || { log "--file $spec: want HOST:/ABSOLUTE/GUEST/PATH"; exit 2; }
  vm_stage_file "${spec%%:*}" "$stage" "${spec#*:}"
done
# Linux unpacks concatenated archives one after the other into the same rootfs.
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$work/run.cpio"
cat "$base" "$work/run.cpio" >"$work/initrd"

# --- boot ----------------------------------------------------------------------------------
# The uncompressed vmlinux boots through its PVH entry, a second faster than the bzImage.
kernel=$kernel_dir/vmlinux
[[ -f $kernel ]] || kernel=$kernel_dir/vmlinuz
# TCG only: KVM here fails for ordinary guests. -nic none: no default e1000 + slirp network.
# panic=-1 with -no-reboot: a guest panic ends qemu at once instead of hanging to the timeout.
qemu=(qemu-system-x86_64 -accel tcg -smp "$smp" -m "$mem" -nographic -no-reboot -nic none
  -kernel "$kernel" -initrd "$work/initrd"
  -append "console=ttyS0 panic=-1 quiet"
  "${qemu_extra[@]}")
if [[ -z $log_file ]]; then
  log_file=$(mktemp "${TMPDIR:-/tmp}/repld-vm-$(basename "$script" .sh).XXXXXX.log")
fi
start=${EPOCHREALTIME/./}
"${qemu[@]}" </dev/null >"$log_file" 2>&1 &
qemu_pid=$!
if ((verbose)); then
  tail -n +1 -s 0.2 -f --pid="$qemu_pid" "$log_file" &
  tail_pid=$!
fi

# Wait for qemu to end (the guest powers off after the script) or the timeout; note when init
# starts, for the boot time.
ms() { echo $(((${EPOCHREALTIME/./} - start) / 1000)); }
init_ms=
while kill -0 "$qemu_pid" 2>/dev/null; do
  # Not anchored: SeaBIOS leaves terminal escapes at the start of the console's line.
  if [[ -z $init_ms ]] && grep -aq 'REPLD-VM-INIT' "$log_file"; then init_ms=$(ms); fi
  if (($(ms) > timeout * 1000)); then
    log "TIMEOUT after ${timeout} s: killing qemu (pid $qemu_pid); console in $log_file"
    keep_log=1
    tail -n 30 "$log_file" >&2
    exit 124
  fi
  sleep 0.2
done
qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
qemu_pid=
total_ms=$(ms)
if [[ -n $tail_pid ]]; then wait "$tail_pid" || true; tail_pid=; fi

marker=$(grep -a -o 'REPLD-VM-EXIT [0-9]*' "$log_file" | tail -n1 || true)
uptime=$(grep -a -o 'REPLD-VM-INIT uptime=[0-9.]*' "$log_file" | cut -d= -f2 || true)
if [[ -z $marker ]]; then
  keep_log=1
  log "the VM ended (qemu rc $qemu_rc) without an exit status from the guest: boot failure or panic; console in $log_file"
  tail -n 30 "$log_file" >&2
  exit 125
fi
rc=${marker#REPLD-VM-EXIT }
log "guest rc $rc; init after ${init_ms:-?} ms (guest uptime ${uptime:-?} s), VM ran $total_ms ms"
((rc == 0)) || { keep_log=1; ((verbose)) || tail -n 30 "$log_file" >&2; log "console in $log_file"; }
((keep_log)) || rm -f "$log_file"
exit "$rc"
