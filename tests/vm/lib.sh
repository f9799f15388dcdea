# shellcheck shell=bash
# Helpers shared by build-initramfs.sh and run-vm.sh (sourced, not run).

# Creates Debian 12's merged-/usr layout in a staging tree: /bin, /sbin, /lib and /lib64 are
# links into /usr, so a host path such as /lib/x86_64-linux-gnu/libc.so.6 lands where the
# guest's loader looks. The per-run archive needs the same links: the kernel replaces an entry
# whose type differs, so a real "lib" directory in it would hide the base archive's libraries.
vm_stage_skeleton() {
  local stage=$1 d
  mkdir -p "$stage"/usr/{bin,sbin,lib,lib64}
  for d in bin sbin lib lib64; do
    ln -sfn "usr/$d" "$stage/$d"
  done
}

# vm_stage_file SRC STAGE [DEST]: copies SRC (following links) to DEST inside the stage,
# by default to SRC's own path. Returns early when DEST is already staged.
vm_stage_file() {
  local src=$1 stage=$2 dest=${3:-$1}
  [[ -e $stage$dest ]] && return 0
  mkdir -p "$stage$(dirname "$dest")"
  cp -L "$src" "$stage$dest"
}

# vm_elf_deps FILE: the shared libraries FILE loads (the dynamic loader included), one path a
# line; nothing for a static binary.
vm_elf_deps() {
  # "libx.so => /path (addr)" and the loader's own "/lib64/ld-linux-x86-64.so.2 (addr)";
  # linux-vdso has no file. ldd fails on static binaries: no libraries then.
  { ldd "$1" 2>/dev/null || true; } | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
}
