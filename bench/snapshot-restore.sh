#!/usr/bin/env bash
# bench/snapshot-restore.sh [RUNS] [SIZES_MIB] - restore time of snapshots of counting
# guests (default 64 and 256 MiB): the PUT /snapshot/load call and process start -> guest
# running, medians, with the memory file mapped copy-on-write (default) vs copied
# (VESSEL_SNAPSHOT_MEMORY=copy) in the same invocation.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-20}
SIZES=${2:-64,256}
. "$ROOT/bench/lib.sh"
VESSEL=$(vessel_release "$ROOT")
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
build_counter_guest "$ROOT" "$TMP/counter"
python3 "$ROOT/bench/snapshot_restore.py" "$VESSEL" "$TMP/counter" "$TMP" "$RUNS" "$SIZES"
