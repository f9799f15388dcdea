#!/bin/sh
# Thin wrapper: run the NBD benchmark with the system Python (stdlib only).
# Usage: bench/run.sh [--runtime 5] [--runs 3] [--size 2G] [--targets ...] [--workloads ...] [--out FILE]
# See docs/benchmarks.md.
exec /usr/bin/python3 "$(dirname "$0")/nbd_bench.py" "$@"
