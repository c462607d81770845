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
QEMU=${QEMU:-qemu-system-x86_64}
command -v "$QEMU" > /dev/null || { echo "suspend.sh: no $QEMU (apt install qemu-system-x86)" >&2; exit 1; }
. "$ROOT/bench/lib.sh"
VESSEL=$(vessel_release "$ROOT")
TMP=$(mktemp -d)
trap 'pkill -f "state-dir $TMP/state" 2>/dev/null; rm -rf "$TMP"' EXIT
build_counter_guest "$ROOT" "$TMP/counter"
echo "suspend/resume/fork of a $MIB MiB guest, $RUNS runs; $(nproc) host CPUs, $(date -u +%F)"
python3 "$ROOT/bench/suspend.py" "$VESSEL" "$QEMU" "$TMP/counter" "$TMP" "$RUNS" "$MIB"
