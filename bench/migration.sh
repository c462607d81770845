#!/usr/bin/env bash
# bench/migration.sh [RUNS (default 3)] [MIB (default 1024)] [FILL (default 16)] - live
# migration of an idle and of a memory-dirtying counting guest of MIB MiB (the dirtying one
# rewrites FILL MiB of its memory without pause) between two vessel processes over a unix
# socket: total time of PUT /migration/send, downtime (pause -> the receiver runs) and MiB
# sent, medians; the reference in the same run is QEMU (KVM) migrating the same guest the
# same way. VESSEL=path and QEMU=path pick the binaries (default: a release build,
# qemu-system-x86_64). On a nested host (kvm_pvm) this guest writes its memory at about
# 1 MiB/s, so "dirtying" dirties little there; filling FILL MiB takes FILL seconds or so.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-3}
MIB=${2:-1024}
FILL=${3:-16}
. "$ROOT/bench/lib.sh"
qemu_and_vessel "$ROOT"
python3 "$ROOT/bench/migration.py" "$VESSEL" "$QEMU" "$TMP/counter" "$TMP" "$RUNS" "$MIB" "$FILL"
