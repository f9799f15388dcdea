#!/usr/bin/env bash
# packaging.deb: what an operator installs from this build.
#   1. `cmake --install` into a staging root (prefix /usr, DESTDIR), as the package does;
#   2. `cpack -G DEB`, then the .deb's file list and control fields (dpkg-deb);
#   3. the units as the .deb ships them, checked by `systemd-analyze verify --root` against the
#      .deb's own files (ExecStart's binary, Documentation='s man pages), with a broken copy
#      that must fail, so that a checker that passes everything is caught;
#   4. every man page: `groff -man -ww -z` with no warning, and `man -l` on the installed one.
# Usage: test_package.sh BUILD_DIR SOURCE_DIR. Needs cmake/cpack, dpkg-dev, file, systemd,
# groff-base, man-db (scripts/install-deps.sh). Leaves nothing behind but the build's own
# install_manifest.txt.
set -euo pipefail
build=$(realpath "$1")
source=$(realpath "$2")
export LC_ALL=C.UTF-8

tmp=$(mktemp -d /tmp/repld-packaging.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# The man pages and example configs the source holds: each must reach the package.
mapfile -t pages < <(cd "$source/man" && ls)
mapfile -t examples < <(cd "$source/configs" && ls -- *.toml)
((${#pages[@]} == 3)) || fail "expected 3 man pages in man/, found: ${pages[*]}"
((${#examples[@]} > 0)) || fail "no example configs in configs/"

# --- 1. install ------------------------------------------------------------------------------
staging=$tmp/install
DESTDIR=$staging cmake --install "$build" --prefix /usr >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log" >&2; echo "FAIL: cmake --install" >&2; exit 1; }
for f in usr/sbin/repld usr/sbin/replctl lib/systemd/system/repld@.service \
         lib/systemd/system/repld.target usr/share/doc/repld/README.md; do
  [[ -f $staging/$f ]] || fail "cmake --install did not install $f"
done
[[ -d $staging/etc/repld ]] || fail "cmake --install did not create etc/repld"
grep -qx 'ExecStart=/usr/sbin/repld --config /etc/repld/%i.toml' \
  "$staging/lib/systemd/system/repld@.service" || fail "installed unit: ExecStart is not /usr/sbin/repld"
# A plain install elsewhere (prefix /opt/repld) points the unit at that prefix's sbin.
DESTDIR=$tmp/install-opt cmake --install "$build" --prefix /opt/repld >"$tmp/install-opt.log" 2>&1 ||
  { cat "$tmp/install-opt.log" >&2; echo "FAIL: cmake --install --prefix /opt/repld" >&2; exit 1; }
grep -qx 'ExecStart=/opt/repld/sbin/repld --config /etc/repld/%i.toml' \
  "$tmp/install-opt/lib/systemd/system/repld@.service" ||
  fail "with --prefix /opt/repld the unit's ExecStart does not name /opt/repld/sbin/repld"
pass "cmake --install"

# --- 2. the Debian package ---------------------------------------------------------------------
cpack -G DEB -B "$tmp/cpack" --config "$build/CPackConfig.cmake" >"$tmp/cpack.log" 2>&1 ||
  { cat "$tmp/cpack.log" >&2; echo "FAIL: cpack -G DEB" >&2; exit 1; }
mapfile -t debs < <(ls "$tmp"/cpack/repld_*.deb 2>/dev/null)
((${#debs[@]} == 1)) || { echo "FAIL: cpack made no single repld_*.deb: ${debs[*]}" >&2; exit 1; }
deb=${debs[0]}
echo "package: $(basename "$deb")"

dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./||; s|/$||' >"$tmp/contents"
expected=(usr/sbin/repld usr/sbin/replctl
          lib/systemd/system/repld@.service lib/systemd/system/repld.target
          etc/repld usr/share/doc/repld/README.md usr/share/doc/repld/docs/config.md)
for page in "${pages[@]}"; do
  expected+=("usr/share/man/man${page##*.}/$page.gz")
done
for example in "${examples[@]}"; do
  expected+=("usr/share/doc/repld/examples/$example")
done
for f in "${expected[@]}"; do
  grep -qxF "$f" "$tmp/contents" || fail "the package lacks $f"
done
# Nothing of the build machine's paths, nothing under /usr/local.
if grep -E '^usr/local|/build/' "$tmp/contents"; then fail "the package holds build paths"; fi

field() { dpkg-deb -f "$deb" "$1"; }
[[ $(field Package) == repld ]] || fail "Package is '$(field Package)', not repld"
[[ $(field Section) == admin ]] || fail "Section is '$(field Section)', not admin"
[[ $(field Priority) == optional ]] || fail "Priority is '$(field Priority)', not optional"
[[ -n $(field Maintainer) ]] || fail "no Maintainer"
depends=$(field Depends)
[[ $depends == *liburing* ]] || fail "Depends lacks liburing: '$depends'"
echo "Depends: $depends"

dpkg-deb -e "$deb" "$tmp/control"
[[ -x $tmp/control/postinst ]] || fail "no executable postinst"
grep -q 'systemctl daemon-reload' "$tmp/control/postinst" || fail "postinst does not reload systemd"
sh -n "$tmp/control/postinst" || fail "postinst is not valid sh"
[[ ! -e $tmp/control/conffiles ]] || fail "the package declares conffiles: $(cat "$tmp/control/conffiles")"

root=$tmp/root
dpkg-deb -x "$deb" "$root"
version=$("$root/usr/sbin/repld" --version) || fail "the packaged repld does not run"
[[ $version == "repld $(field Version)" ]] || fail "repld --version says '$version', the package $(field Version)"
"$root/usr/sbin/replctl" --version >/dev/null || fail "the packaged replctl does not run"
for bin in repld replctl; do
  if readelf -d "$root/usr/sbin/$bin" | grep -E 'RPATH|RUNPATH'; then fail "$bin has an RPATH"; fi
done
pass "cpack -G DEB"

# --- 3. the units --------------------------------------------------------------------------------
# --root makes systemd-analyze load units and check ExecStart='s binary inside the package's tree;
# it also needs the system's own units the ours refer to (sysinit.target, network-online.target,
# multi-user.target...), copied in under /usr/lib so that they cannot shadow the package's
# /lib/systemd/system. MANPATH points Documentation='s man: check at the package's pages.
mkdir -p "$root/usr/lib/systemd/system"
cp -a /lib/systemd/system/. "$root/usr/lib/systemd/system/"
rm -f "$root"/usr/lib/systemd/system/repld@.service "$root"/usr/lib/systemd/system/repld.target
verify() {  # prints what systemd-analyze said; fails when it said anything or failed
  local out rc=0
  out=$(MANPATH=$root/usr/share/man systemd-analyze verify --root="$root" "$@" 2>&1) || rc=$?
  [[ -n $out ]] && printf '%s\n' "$out"
  [[ $rc -eq 0 && -z $out ]]
}
if verify repld@www.service repld.target; then
  pass "systemd-analyze verify repld@www.service repld.target"
else
  fail "systemd-analyze verify found problems in the packaged units"
fi
# The negative controls: a misspelt value (only a warning to systemd-analyze: its exit code stays
# 0, so the output must be read), and a missing binary.
units=$root/lib/systemd/system
failures_before=$failures
sed 's/^Type=notify$/Type=notfy/' "$units/repld@.service" >"$units/repldbroken@.service"
if verify repldbroken@www.service >/dev/null; then
  fail "systemd-analyze verify accepted Type=notfy: the unit check checks nothing"
fi
sed 's|^ExecStart=/usr/sbin/repld |ExecStart=/usr/sbin/repld-missing |' "$units/repld@.service" \
  >"$units/repldbroken@.service"
if verify repldbroken@www.service >/dev/null; then
  fail "systemd-analyze verify accepted a missing ExecStart binary"
fi
rm "$units/repldbroken@.service"
((failures == failures_before)) && pass "systemd-analyze verify rejects broken copies"
# [Install]: enabling an instance (offline, in the package's tree) wires it into repld.target and
# repld.target into multi-user.target, so that it starts at boot.
systemctl --root="$root" enable repld@www.service >"$tmp/enable.log" 2>&1 ||
  fail "systemctl --root enable repld@www.service: $(cat "$tmp/enable.log")"
wants=$root/etc/systemd/system
[[ $(readlink "$wants/repld.target.wants/repld@www.service") == /lib/systemd/system/repld@.service ]] ||
  fail "enable repld@www did not link it into repld.target.wants"
[[ $(readlink "$wants/multi-user.target.wants/repld.target") == /lib/systemd/system/repld.target ]] ||
  fail "enable repld@www did not enable repld.target (Also=)"
pass "systemctl enable repld@www (offline)"

# --- 4. man pages --------------------------------------------------------------------------------
for page in "${pages[@]}"; do
  warnings=$(groff -man -ww -z "$source/man/$page" 2>&1) || fail "groff failed on man/$page"
  [[ -z $warnings ]] && pass "groff -man -ww -z man/$page" ||
    fail "groff warnings in man/$page:"$'\n'"$warnings"
  installed=$root/usr/share/man/man${page##*.}/$page.gz
  if out=$(MANWIDTH=80 man -l "$installed" 2>"$tmp/man.err") && [[ ! -s $tmp/man.err ]] &&
     grep -q '^NAME' <<<"$out" && grep -qF "${page%.*} - " <<<"$out"; then
    pass "man -l $page.gz ($(wc -l <<<"$out") lines)"
  else
    fail "man -l $page.gz: $(cat "$tmp/man.err")"
  fi
done

if ((failures > 0)); then
  echo "packaging: $failures check(s) failed" >&2
  exit 1
fi
echo "packaging: all checks passed"
