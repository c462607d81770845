#!/usr/bin/env bash
# bench/nested-boot.sh [RUNS (default 5)] - time to the /init marker of the stock Debian cloud
# kernel on a nested host whose /dev/kvm is kvm_pvm (docs/nested-kvm.md): `vessel run` with
# the nested-host profile (ELF vmlinux, guest/initramfs-nested.cpio, 1 vCPU, 256M, the command
# line in scripts/nested-host.cmdline), against the reference in the same invocation: QEMU
# with its software CPU (TCG) on the same kernel, initramfs and command line. (QEMU on this
# KVM stops at the kernel's first `lock cmpxchg16b`.) Runs alternate, one at a time.
# Prints, per run, the guest's uptime at the marker and the wall time from exec to exit, then
# the medians and the vessel/QEMU-TCG ratio of the wall-time medians.
set -euo pipefail
RUNS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
command -v qemu-system-x86_64 >/dev/null || { echo "apt-get install qemu-system-x86" >&2; exit 1; }
GUEST=${VESSEL_GUEST_DIR:-$ROOT/guest}
OUT=$GUEST "$ROOT/scripts/make-guest.sh"
cargo build --release -q --bin vessel --bin vessel-vmm --manifest-path "$ROOT/Cargo.toml"
VESSEL=$CARGO_TARGET_DIR/release/vessel
CMDLINE=$(sed '/^#/d' "$ROOT/scripts/nested-host.cmdline" | tr '\n' ' ')
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/nested-boot.XXXXXX")
echo "logs: $LOGS"

# measure NAME RUN COMMAND...: run it, print "NAME RUN uptime wall" or fail with its log.
measure() {
    local name=$1 run=$2; shift 2
    local log=$LOGS/$name-$run.log start end up
    start=$(date +%s.%N)
    timeout 3600 "$@" > "$log" 2>&1 || { echo "$name run $run failed (exit $?): $log" >&2; tail -20 "$log" >&2; exit 1; }
    end=$(date +%s.%N)
    up=$(tr -d '\r' < "$log" | sed -n 's/^VESSEL-GUEST-READY \([0-9.]*\).*/\1/p')
    [ -n "$up" ] || { echo "$name run $run: no marker: $log" >&2; exit 1; }
    echo "$name $run $up $(echo "$end - $start" | bc)" | tee -a "$LOGS/results"
}

echo "Debian $(cat "$GUEST/kernel.version") to VESSEL-GUEST-READY, $(nproc) host CPUs, $(date -u +%F)"
echo "name run guest-uptime-at-marker-s wall-to-exit-s"
for run in $(seq "$RUNS"); do
    measure vessel "$run" "$VESSEL" run --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs-nested.cpio" \
        --memory 256M --cpus 1 --cmdline "$CMDLINE"
    measure qemu-tcg "$run" qemu-system-x86_64 -accel tcg -m 256 -smp 1 -nodefaults -display none \
        -serial stdio -no-reboot -kernel "$GUEST/bzImage" -initrd "$GUEST/initramfs-nested.cpio" \
        -append "$CMDLINE"
done
python3 - "$LOGS/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for name in ("vessel", "qemu-tcg"):
    up = [float(r[2]) for r in rows if r[0] == name]
    wall = [float(r[3]) for r in rows if r[0] == name]
    med[name] = statistics.median(wall)
    print(f"{name:9} median of {len(wall)}: marker at guest uptime {statistics.median(up):.1f} s, "
          f"wall to exit {med[name]:.1f} s (min {min(wall):.1f}, max {max(wall):.1f})")
print(f"vessel/QEMU-TCG wall-time ratio: {med['vessel'] / med['qemu-tcg']:.2f}")
PY
