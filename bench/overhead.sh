#!/usr/bin/env bash
# bench/overhead.sh [N] [RUNS] - per-VM overhead: RSS of an idle 128 MiB PVH guest for
# vessel vs QEMU microvm (and Firecracker when FIRECRACKER=/path/to/firecracker is set,
# see ../shared/bench/firecracker.md), medians of RUNS (default 5); then N (default 100)
# idle 64 MiB vessel VMs started one after another: time until all guests are up, and
# their total RSS. The issue asks for N=1000 (needs about 5 GiB of free memory).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-100}
RUNS=${2:-5}
if ! command -v qemu-system-x86_64 >/dev/null; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get install -y -qq qemu-system-x86 >/dev/null
fi
cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin vessel --bin vessel-vmm >&2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
python3 "$ROOT/bench/tiny_pvh.py" "$TMP/idle-pvh" --idle
python3 "$ROOT/bench/overhead.py" "$ROOT/target/release/vessel" "$(command -v qemu-system-x86_64)" \
    "$TMP/idle-pvh" "$TMP" "$RUNS" "$N"
