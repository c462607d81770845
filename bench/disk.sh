#!/usr/bin/env bash
# Disk image benchmark: `vessel disk convert` against `qemu-img convert` on the same
# input in the same run, plus random 4 KiB reads through the DiskImage trait.
#
#   bench/disk.sh            # 1 GiB image, 5 runs per case
#   RUNS=3 SIZE_MB=256 bench/disk.sh
#
# The source is a raw image with 50 % random data (1 MiB data / 1 MiB hole).
# qemu-img convert writes with cache=unsafe by default (no flush at the end) while vessel
# always flushes, so qemu-img is timed both ways.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
SIZE_MB=${SIZE_MB:-1024}
READS=${READS:-50000}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vessel-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" --bin vessel --bin vessel-vmm
VESSEL=$CARGO_TARGET_DIR/release/vessel
command -v qemu-img >/dev/null || { echo "qemu-img not found (apt install qemu-utils)"; exit 1; }

SRC=$WORK/src.raw
echo "creating ${SIZE_MB} MiB raw image with 50% random data in $WORK"
python3 - "$SRC" "$SIZE_MB" <<'PY'
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    f.truncate(mib << 20)
    for i in range(0, mib, 2):
        f.seek(i << 20)
        f.write(os.urandom(1 << 20))
PY
sync

# time_cmd OUT -- CMD...: seconds taken by CMD (OUT removed first).
time_cmd() {
    local out=$1; shift
    rm -f "$out"
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# bench NAME SRC FMT: vessel vs qemu-img for converting SRC to FMT.
bench() {
    local name=$1 src=$2 fmt=$3 qfmt=$3
    [ "$fmt" = vhd ] && qfmt=vpc
    local v=() q=() qw=()
    for _ in $(seq "$RUNS"); do
        v+=("$(time_cmd "$WORK/out.v" "$VESSEL" disk convert "$src" "$WORK/out.v" -O "$fmt")")
        q+=("$(time_cmd "$WORK/out.q" qemu-img convert -O "$qfmt" "$src" "$WORK/out.q")")
        qw+=("$(time_cmd "$WORK/out.q" qemu-img convert -t writeback -O "$qfmt" "$src" "$WORK/out.q")")
    done
    local mv mq mqw
    mv=$(printf '%s\n' "${v[@]}" | median)
    mq=$(printf '%s\n' "${q[@]}" | median)
    mqw=$(printf '%s\n' "${qw[@]}" | median)
    printf '%-16s vessel %7.3fs  qemu-img %7.3fs (ratio %.2fx)  qemu-img -t writeback %7.3fs (ratio %.2fx)\n' \
        "$name" "$mv" "$mq" "$(echo "$mv / $mq" | bc -l)" "$mqw" "$(echo "$mv / $mqw" | bc -l)"
    qemu-img compare -q "$src" "$WORK/out.v" || echo "  MISMATCH: vessel output differs from the source"
}

echo "median of $RUNS runs each"
bench "raw -> qcow2" "$SRC" qcow2
QCOW=$WORK/src.qcow2
"$VESSEL" disk convert "$SRC" "$QCOW" -O qcow2
if "$VESSEL" disk create "$WORK/probe.vdi" --format vdi --size 1M 2>/dev/null; then
    bench "qcow2 -> vdi" "$QCOW" vdi
else
    echo "qcow2 -> vdi     skipped: vessel's VDI driver is not available in this build"
fi

echo "random ${READS} x 4 KiB reads through DiskImage (warm page cache; half the blocks are"
echo "holes: raw still issues a pread for them, qcow2 answers unallocated clusters without I/O):"
for img in "$SRC" "$QCOW"; do
    printf '  %s\n' "$("$VESSEL" disk bench-read "$img" --count "$READS")"
done
