#!/bin/sh
# virtio-blk's rate limiter in one process (no KVM), over an in-memory disk at queue depth
# 32 of 4 KiB reads: the cost of a limiter that does not limit (medians of alternating
# rounds of no limiter / the limiter every VMM disk gets / buckets never short, as ratios
# to no limiter), then how close a 10 MiB/s disk limit and a 50 Mbit/s NIC transmit
# limit hold over 10 s.
# Usage: bench/rate-limit.sh [seconds-per-round] [rounds] [limit-MiB/s] [limit-seconds]
set -eu
SECS=${1:-0.5}
ROUNDS=${2:-9}
RATE=${3:-10}
RATE_SECS=${4:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release -q -p virtio --example rate_limit_bench --manifest-path "$ROOT/Cargo.toml"
BIN=$CARGO_TARGET_DIR/release/examples/rate_limit_bench
"$BIN" overhead "$SECS" "$ROUNDS"
"$BIN" rate "$RATE" "$RATE_SECS"
"$BIN" net-rate 50 "$RATE_SECS"
