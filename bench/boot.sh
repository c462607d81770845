#!/usr/bin/env bash
# bench/boot.sh [RUNS] - time from exec to exit of a guest that exits at its first
# instruction: vessel (confined and with --seccomp=off --landlock=off) vs QEMU microvm
# (installs qemu-system-x86 if missing); with FIRECRACKER=/path/to/firecracker
# (../shared/bench/firecracker.md) also vessel vs Firecracker on a guest that resets. Confinement cost: median paired difference vs 1 ms goal.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-20}
if ! command -v qemu-system-x86_64 >/dev/null; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get install -y -qq qemu-system-x86 >/dev/null
fi
cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin vessel --bin vessel-vmm >&2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
python3 "$ROOT/bench/tiny_pvh.py" "$TMP/tiny-pvh"
python3 "$ROOT/bench/tiny_pvh.py" "$TMP/tiny-pvh-reset" --reset
gcc -O2 -o "$TMP/measure" "$ROOT/bench/measure.c"
python3 "$ROOT/bench/boot.py" "$TMP/measure" "$ROOT/target/release/vessel" "$(command -v qemu-system-x86_64)" "$TMP/tiny-pvh" "$RUNS" "$TMP/tiny-pvh-reset"
