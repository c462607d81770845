#!/bin/sh
# virtio-blk model vs O_DIRECT pread on the same raw file, in one process (no KVM):
# 4 KiB random reads and 128 KiB sequential reads, queue depth 32.
# Usage: bench/virtio-blk.sh [file-size-MiB] [seconds-per-round] [rounds]
set -eu
SIZE_MIB=${1:-1024}
SECS=${2:-3}
ROUNDS=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release -q -p virtio --example blk_bench --manifest-path "$ROOT/Cargo.toml"
BIN=$CARGO_TARGET_DIR/release/examples/blk_bench
# Not tmpfs: O_DIRECT needs a real file system.
DIR=$(mktemp -d "${BENCH_DIR:-/var/tmp}/virtio-blk-bench.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
IMG=$DIR/disk.raw
# Real data (not a sparse file), so reads hit the disk rather than holes.
dd if=/dev/urandom of="$IMG" bs=1M count="$SIZE_MIB" status=none
sync
"$BIN" "$IMG" rand4k "$SECS" "$ROUNDS"
"$BIN" "$IMG" seq128k "$SECS" "$ROUNDS"
