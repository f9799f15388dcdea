#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test (unit and integration,
# with real NBD clients, a real ext4 mount through nbdfuse + loop).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh default
ctest --preset default "$@"
