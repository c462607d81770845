#!/usr/bin/env bash
# bench/migration.sh [RUNS] - live migration of a 256 MiB counting guest between two
# vessel processes over a unix socket: total time of PUT /migration/send and downtime
# (pause -> the receiver confirms the VM runs), medians; the reference in the same run is
# a snapshot of the same guest: pause + PUT /snapshot/create, then PUT /snapshot/load
# (resume_vm) in a new VMM. VESSEL=path picks the binary (default: a release build).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-5}
. "$ROOT/bench/lib.sh"
VESSEL=$(vessel_release "$ROOT")
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
build_counter_guest "$ROOT" "$TMP/counter"
python3 "$ROOT/bench/migration.py" "$VESSEL" "$TMP/counter" "$TMP" "$RUNS"
