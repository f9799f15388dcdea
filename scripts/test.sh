#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test (unit and integration,
# with real NBD clients, a real ext4 mount through nbdfuse + loop).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh default
# The simulator's three protocols side by side (one process each, no shared state: a core each
# on this 2-core machine), then everything else one at a time (the integration tests share
# namespaces, mounts and ports).
ctest --preset default -L sim -j2 "$@"
ctest --preset default -LE sim "$@"
# The same suites once more against an AddressSanitizer + UBSan build of the daemon (the
# simulator with fewer seeds: it is 40 times slower there, and the default pass ran 3000).
# Both builds carry line tables only (-g1, CMakePresets.json): enough for backtraces and
# sanitizer reports, and a third less compile time than full debug info. Not
# the VM tests and the package (label vm, packaging): they ran in the default pass, and they keep
# the whole run within 40 minutes (REPLD_ASAN_ALL=1 runs them here too).
scripts/build.sh asan
asan_skip=(-LE "vm|packaging|sim")
[[ "${REPLD_ASAN_ALL:-0}" == 1 ]] && asan_skip=(-LE sim)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
REPLD_SIM_SEEDS=${REPLD_SIM_SEEDS:-30} REPLD_QSIM_SEEDS=${REPLD_QSIM_SEEDS:-300} \
  ctest --test-dir build/asan --output-on-failure -L sim -j2 "$@"
ctest --test-dir build/asan --output-on-failure "${asan_skip[@]}" "$@"
