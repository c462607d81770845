#!/usr/bin/env bash
# bench/suspend.sh [RUNS (default 5)] [MIB (default 256)] - `vessel suspend`, `resume` and
# `fork` of a background VM running a counting guest of MIB MiB, medians of RUNS; the
# reference in the same run is QEMU (KVM) saving the same guest to a file and loading it
# (libvirt's managed save: migrate to exec:cat, -incoming). VESSEL=path and QEMU=path pick
# the binaries (default: a release build, qemu-system-x86_64).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-5}
MIB=${2:-256}
. "$ROOT/bench/lib.sh"
qemu_and_vessel "$ROOT"
echo "suspend/resume/fork of a $MIB MiB guest, $RUNS runs; $(nproc) host CPUs, $(date -u +%F)"
python3 "$ROOT/bench/suspend.py" "$VESSEL" "$QEMU" "$TMP/counter" "$TMP" "$RUNS" "$MIB"
