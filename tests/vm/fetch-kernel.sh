#!/usr/bin/env bash
# Fetches Debian's bookworm-backports kernel (6.12 series: bookworm's own 6.1 has no ublk_drv)
# and unpacks it into the VM cache, without touching the machine's apt configuration: apt runs
# with a private sources list, lists directory and package cache under the VM cache.
#
# Usage: tests/vm/fetch-kernel.sh   prints the kernel directory: vmlinuz, vmlinux (PVH entry),
#                                   config, modules/ (lib/modules/<version>), kernel-version
# Env:   REPLD_VM_CACHE    cache directory (default /var/cache/repld-vm)
#        REPLD_VM_REFRESH  1: ask the archive for a newer kernel even when one is cached
#
# A cached kernel is used as is: the second run does no network work at all.
set -euo pipefail

cache=${REPLD_VM_CACHE:-/var/cache/repld-vm}
series=6.12
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
log() { echo "fetch-kernel: $*" >&2; }

mkdir -p "$cache"
# Two test runs may start at once; the second waits and then finds the kernel cached.
exec 9>"$cache/.fetch.lock"
flock 9

if [[ ${REPLD_VM_REFRESH:-0} != 1 && -f $cache/kernel/vmlinuz && -d $cache/kernel/modules ]]; then
  readlink -f "$cache/kernel"
  exit 0
fi

# The mirror: the URI of the machine's own bookworm stanza (not debian-security), so the fetch
# goes where apt already goes; deb.debian.org when there is none.
mirror=
for f in /etc/apt/sources.list.d/*.sources; do
  [[ -f $f ]] || continue
  mirror=$(awk '
    /^[[:space:]]*$/ { if (uri != "" && suites ~ /(^| )bookworm( |$)/) { print uri; exit } uri = ""; suites = "" }
    /^URIs:/   { uri = $2 }
    /^Suites:/ { $1 = ""; suites = $0 " " }
    END        { if (uri != "" && suites ~ /(^| )bookworm( |$)/) print uri }' "$f" | head -n1)
  [[ -n $mirror ]] && break
done
mirror=${mirror:-http://deb.debian.org/debian}
log "mirror $mirror, suite bookworm-backports"

apt_dir=$cache/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
echo "deb [signed-by=$keyring] $mirror bookworm-backports main" >"$apt_dir/sources.list"
# Everything apt reads or writes besides dpkg's status file points into $apt_dir. The sandbox
# user is root because _apt cannot write into a root-owned cache under /var/cache.
apt_opts=(
  -o "Dir::Etc::SourceList=$apt_dir/sources.list"
  -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir/cache"
  -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
  -o Acquire::Languages=none
  -o APT::Architectures=amd64
  -o APT::Sandbox::User=root
)
apt-get "${apt_opts[@]}" -qq update >&2

# The newest linux-image-6.12.*-amd64-unsigned in the index (names carry the ABI, e.g.
# linux-image-6.12.95+deb12-amd64-unsigned); the unsigned image holds the same kernel as the
# signed one without the EFI signature. The pattern leaves out the -rt- and -cloud- flavours
# (cloud lacks many drivers).
pkg=$(apt-cache "${apt_opts[@]}" pkgnames linux-image- |
  grep -E "^linux-image-${series//./\\.}\.[0-9]+(\+[^-]+)?-amd64-unsigned$" | sort -V | tail -n1 || true)
[[ -n $pkg ]] || { log "no linux-image-$series.*-amd64-unsigned in bookworm-backports"; exit 1; }
kver=${pkg#linux-image-}
kver=${kver%-unsigned}
if [[ -f $cache/kernel-$kver/vmlinuz ]]; then
  log "$pkg already unpacked"
else
  log "downloading $pkg"
  # apt-get download takes just this package (none of its dependencies), into the cwd.
  (cd "$apt_dir/debs" && rm -f ./*.deb && apt-get "${apt_opts[@]}" -qq download "$pkg" >&2)
  deb=$(ls "$apt_dir"/debs/*.deb)
  tmp=$cache/.unpack-$kver
  rm -rf "$tmp"
  mkdir -p "$tmp/root"
  dpkg-deb -x "$deb" "$tmp/root"
  # The package ships no modules.dep (its postinst runs depmod); make it here, from the
  # unpacked tree, without touching the host's /lib/modules.
  depmod -b "$tmp/root" "$kver"
  out=$tmp/kernel
  mkdir -p "$out"
  mv "$tmp/root/boot/vmlinuz-$kver" "$out/vmlinuz"
  mv "$tmp/root/boot/config-$kver" "$out/config"
  # The whole module tree stays (build-initramfs.sh picks what a guest loads); modules/ is
  # lib/modules/<kver>, so the initramfs need not know the version to find them.
  mv "$tmp/root/lib/modules/$kver" "$out/modules"
  # vmlinux: the kernel ELF inside the bzImage (a zstd frame), booted by qemu through its PVH
  # entry. Saves about a second a boot under TCG: no decompression, no real-mode setup.
  # zstd fails on the bzImage's bytes after the frame, after writing the whole kernel.
  if grep -q '^CONFIG_PVH=y' "$out/config"; then
    for off in $(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "$out/vmlinuz" | cut -d: -f1); do
      { tail -c +$((off + 1)) "$out/vmlinuz" | zstd -dcq; } >"$out/vmlinux" 2>/dev/null || true
      cmp -s -n 4 "$out/vmlinux" <(printf '\177ELF') && break
      rm -f "$out/vmlinux"
    done
  fi
  echo "$kver" >"$out/kernel-version"
  dpkg-deb -f "$deb" Package Version >"$out/package"
  rm -rf "$cache/kernel-$kver"
  mv "$out" "$cache/kernel-$kver"
  rm -rf "$tmp" "$deb"
fi
# Switch the "kernel" link atomically: a concurrent reader sees the old or the new kernel.
ln -sfn "kernel-$kver" "$cache/kernel.new"
mv -T "$cache/kernel.new" "$cache/kernel"
log "kernel $kver in $cache/kernel-$kver"
readlink -f "$cache/kernel"
