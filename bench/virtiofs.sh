#!/usr/bin/env bash
# bench/virtiofs.sh [MIB (default 64)] [RUNS (default 1)] - sequential dd throughput of a MIB
# MiB file in the guest through a virtio-fs share (virtiofsd behind vessel's vhost-user-fs
# device) against the reference in the same boot: the same dd on vessel's virtio-blk disk.
# The guest is the stock Debian cloud kernel with the nested-host profile
# (tests/guests/tcg/nested-virtiofs.sh with vessel.ddmib=MIB): writes are `dd conv=fsync`
# from /dev/zero, reads follow `echo 3 > /proc/sys/vm/drop_caches`, 1 MiB blocks.
# Prints each run's four rates, then per measure the median and the virtio-fs/virtio-blk
# ratio of the medians. On a nested host (kvm_pvm) every guest exit is emulated: the
# figures there are lower bounds and dominated by exit cost, the ratio is what compares.
set -euo pipefail
MIB=${1:-64}
RUNS=${2:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
nested_guest "$ROOT"
CMDLINE="$(sed '/^#/d' "$ROOT/scripts/nested-host.cmdline" | tr '\n' ' ') vessel.test=nested-virtiofs vessel.ddmib=$MIB"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/virtiofs-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/rw" "$WORK/ro"
head -c 1M /dev/urandom > "$WORK/rw/host.bin"
echo "readonly content" > "$WORK/ro/ro.txt"
truncate -s $((MIB + 16))M "$WORK/disk.raw"
echo "dd of $MIB MiB, Debian $(cat "$GUEST/kernel.version"), $(nproc) host CPUs, $(date -u +%F)"
: > "$WORK/results"
for run in $(seq "$RUNS"); do
    rm -f "$WORK/rw/guest.txt" "$WORK/rw/dd.bin"
    start=$(date +%s)
    timeout 3600 "$VESSEL" run --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs-nested.cpio" \
        --memory 512M --cpus 1 --cmdline "$CMDLINE" --disk "path=$WORK/disk.raw,format=raw" \
        --share "$WORK/rw:hostdir" --share "$WORK/ro:rodir,readonly=on" > "$WORK/run-$run.log" 2>&1 ||
        { echo "run $run failed:" >&2; tail -30 "$WORK/run-$run.log" >&2; exit 1; }
    grep -q "VESSEL-TEST-PASS nested-virtiofs" "$WORK/run-$run.log" ||
        { echo "run $run: the guest test failed:" >&2; tail -30 "$WORK/run-$run.log" >&2; exit 1; }
    tr -d '\r' < "$WORK/run-$run.log" | sed -n 's/^VESSEL-RESULT \(fs\|blk\)_\(read\|write\)=\([0-9.]*\) MiB\/s.*/\1_\2 \3/p' |
        tee -a "$WORK/results" | sed "s/^/run $run (boot+test $(( $(date +%s) - start )) s): /"
done
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for name in ("fs_write", "blk_write", "fs_read", "blk_read"):
    vals = [float(r[1]) for r in rows if r[0] == name]
    med[name] = statistics.median(vals)
    print(f"{name:9} median of {len(vals)}: {med[name]:.1f} MiB/s")
for op in ("write", "read"):
    print(f"virtio-fs/virtio-blk {op}: {med['fs_' + op] / med['blk_' + op]:.2f}")
PY
