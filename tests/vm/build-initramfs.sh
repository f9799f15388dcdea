#!/usr/bin/env bash
# Builds the base initramfs of the test VM, shared by every run: busybox, the kernel modules the
# tests load (with their dependencies), real tools busybox lacks or only half has (fio,
# mkfs.ext4, losetup, dd...) with their shared libraries, and /init (guest-init.sh). run-vm.sh
# appends a small per-run archive with the project's binaries and the guest script.
#
# Usage: tests/vm/build-initramfs.sh [KERNEL_DIR]     prints the path of the base archive
# Env:   REPLD_VM_CACHE  cache directory (default /var/cache/repld-vm)
#
# The archive is rebuilt only when an input changes: its name carries a hash of the kernel
# package, the module list, the tools copied in (path, size, mtime), dpkg's status file (for
# their libraries) and these scripts.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vm/lib.sh
source "$here/lib.sh"
cache=${REPLD_VM_CACHE:-/var/cache/repld-vm}
kernel_dir=${1:-$("$here/fetch-kernel.sh")}
kver=$(cat "$kernel_dir/kernel-version")
log() { echo "build-initramfs: $*" >&2; }

# Modules loaded at boot, with their parameters (modprobe adds the dependencies). crc32c_generic:
# ext4 and jbd2 checksum metadata through the crypto API's crc32c (mkfs.ext4 turns
# metadata_csum on); loaded up front rather than left to the kernel's on-demand request at mount.
boot_modules=(
  "crc32c_generic"
  "ext4"
  "loop"
  "nbd nbds_max=4"
  "ublk_drv"
)
# Real tools, at their Debian paths. busybox sh runs its own applet for a bare "dd", so guest
# scripts call these by full path (/usr/bin/dd, /usr/sbin/losetup...).
tools=(
  fio
  mke2fs mkfs.ext4 e2fsck fsck.ext4 dumpe2fs tune2fs   # e2fsprogs
  blockdev losetup blkdiscard mount umount lsblk findmnt # util-linux
  dd sync cmp sha256sum truncate stat timeout           # coreutils, diffutils
)

# --- inputs ------------------------------------------------------------------------------
# Modules: each name's line in modules.dep already lists its whole dependency chain.
moddep=$kernel_dir/modules/modules.dep
declare -A mods=()
for entry in "${boot_modules[@]}"; do
  name=${entry%% *}
  line=$(grep -E "(^|/)${name//_/[-_]}\.ko(\.xz|\.zst|\.gz)?:" "$moddep") ||
    { log "module $name not in $moddep"; exit 1; }
  for m in ${line/:/}; do mods[$m]=1; done
done

# Host files: busybox and the tools (their shared libraries are resolved when building).
files=(/usr/bin/busybox /etc/mke2fs.conf)
# /usr first: on Debian 12 /sbin is a link to /usr/sbin, and the staged tree has the same
# links, so either path works in the guest. Names are kept (mkfs.ext4 is a link to mke2fs that
# must keep its name: mke2fs picks the filesystem type from argv[0]).
mapfile -t -O 2 files < <(PATH=/usr/sbin:/usr/bin:/sbin:/bin type -P "${tools[@]}")
if ((${#files[@]} != ${#tools[@]} + 2)); then
  log "missing tools: want ${tools[*]}, found ${files[*]}"
  exit 1
fi

manifest=$(
  cat "$kernel_dir/package"
  printf 'boot %s\n' "${boot_modules[@]}"
  printf 'module %s\n' "${!mods[@]}" | sort
  stat -L -c 'file %n %s %Y' "${files[@]}"
  # Any package installed or upgraded (a library of a tool included) changes dpkg's status
  # file; cheaper than running ldd on every tool each time (0.1 s apiece).
  echo "dpkg $(stat -c '%s %Y' /var/lib/dpkg/status)"
  sha256sum "$here/build-initramfs.sh" "$here/guest-init.sh" "$here/lib.sh"
)
hash=$(sha256sum <<<"$manifest" | cut -c1-16)
out=$cache/initramfs/base-$hash.cpio
mkdir -p "$cache/initramfs"
exec 9>"$cache/initramfs/.lock"
flock 9
if [[ -f $out && -f $out.files ]]; then
  echo "$out"
  exit 0
fi

# --- build -------------------------------------------------------------------------------
log "building $out"
stage=$(mktemp -d "$cache/initramfs/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
vm_stage_skeleton "$stage"
mkdir -p "$stage"/{dev,proc,sys,tmp,run,root,mnt,etc/repld-vm,guest,opt/repld/bin}

# busybox, and a link for each applet where no real tool is staged (busybox --install -s at
# boot would cost time on every run).
vm_stage_file /usr/bin/busybox "$stage"
mapfile -t libs < <(for f in "${files[@]}"; do vm_elf_deps "$f"; done | sort -u)
for f in "${files[@]}" "${libs[@]}"; do vm_stage_file "$f" "$stage"; done
for applet in $(busybox --list-full); do
  [[ -e $stage/$applet || -L $stage/$applet ]] || ln -s /usr/bin/busybox "$stage/$applet"
done

# Modules, decompressed: busybox insmod/modprobe load plain .ko files only. modules.dep keeps
# the lines of the staged modules with the new names.
mdir=$stage/lib/modules/$kver
for m in "${!mods[@]}"; do
  src=$kernel_dir/modules/$m dst=$mdir/${m%.*}
  mkdir -p "$(dirname "$dst")"
  case $m in
    *.ko.xz) xz -dc "$src" >"$dst" ;;
    *.ko.zst) zstd -qdc "$src" >"$dst" ;;
    *.ko.gz) gzip -dc "$src" >"$dst" ;;
    *.ko) cp "$src" "$mdir/$m" ;;
  esac
done
grep -E "^($(printf '%s\n' "${!mods[@]}" | sed 's/[.+]/\\&/g' | paste -sd'|')):" "$moddep" |
  sed -E 's/\.ko\.(xz|zst|gz)/.ko/g' >"$mdir/modules.dep"
printf '%s\n' "${boot_modules[@]}" >"$stage/etc/repld-vm/modules"

install -m 0755 "$here/guest-init.sh" "$stage/init"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
printf 'root:x:0:\n' >"$stage/etc/group"
ln -s /proc/self/mounts "$stage/etc/mtab"
# The kernel opens /dev/console for /init before anything mounts devtmpfs.
mknod -m 600 "$stage/dev/console" c 5 1

# Uncompressed: under TCG the guest would take longer to inflate it than to copy it.
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort) >"$out.files.tmp"
(cd "$stage" && cpio -o -H newc -R 0:0 --quiet) <"$out.files.tmp" >"$out.tmp"
# The list of files lets run-vm.sh leave out of its archive the libraries the base has.
mv "$out.files.tmp" "$out.files"
mv "$out.tmp" "$out"
# Older bases are of no further use (their inputs changed), once no run can still be about to
# copy one: a run started by another checkout, or before an edit here, may have just been given one.
find "$cache/initramfs" -maxdepth 1 -name 'base-*' ! -name "base-$hash.*" -mmin +60 -delete
log "$(du -h "$out" | cut -f1) in $out"
echo "$out"
