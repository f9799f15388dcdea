#!/usr/bin/env bash
# Installs, from Debian's archive, whatever repld needs to build, test and benchmark that this
# machine does not have yet. Safe to run again: it installs nothing when all is present.
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config git
  liburing-dev libasio-dev libspdlog-dev libtomlplusplus-dev libcli11-dev libgtest-dev
  # HMAC-SHA256 and random challenges (OpenSSL), CRC32C (ISA-L), status/control JSON
  libssl-dev libisal-dev nlohmann-json3-dev
  # real NBD clients and peers for tests and benchmarks
  libnbd-bin python3 python3-libnbd qemu-utils nbdkit fio
  # mount test: nbdfuse -> loop -> ext4
  fuse3 e2fsprogs util-linux
  # durability test (block-layer tracepoints) and stacks of a hung daemon
  linux-perf gdb
  # VM tests (tests/vm): a 6.12 kernel with ublk_drv and nbd booted under qemu (TCG) from a
  # busybox initramfs. cpio packs it; xz/zstd unpack the kernel's compressed modules; depmod
  # (kmod) writes the modules.dep the kernel package leaves to its postinst; the keyring
  # verifies the private bookworm-backports index that fetch-kernel.sh downloads
  qemu-system-x86 busybox-static cpio xz-utils zstd kmod debian-archive-keyring
  # packaging test (tests/packaging): cpack's DEB generator finds ELF files with file and
  # computes Depends with dpkg-shlibdeps (dpkg-dev); systemd-analyze checks the units; groff
  # and man check the man pages
  dpkg-dev file systemd groff-base man-db
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root (or with sudo)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
