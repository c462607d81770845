#!/usr/bin/env bash
# bench/snapshot-restore.sh [RUNS] [SIZES_MIB] - restore time of snapshots of counting
# guests (default 64 and 256 MiB): the PUT /snapshot/load call and process start -> guest
# running, medians, with the memory file mapped copy-on-write (default) vs copied
# (VESSEL_SNAPSHOT_MEMORY=copy) in the same invocation.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-20}
SIZES=${2:-64,256}
cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin vessel >&2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
G="$ROOT/tests/guests"
CFLAGS="-m32 -ffreestanding -fno-pic -fno-pie -fno-stack-protector -fno-asynchronous-unwind-tables -nostdlib -O2"
gcc $CFLAGS -c "$G/multiboot_header.S" -o "$TMP/header.o"
gcc $CFLAGS -c "$G/counter_guest.c" -o "$TMP/counter.o"
ld -m elf_i386 -nostdlib -z noexecstack --no-warn-rwx-segments -T "$G/multiboot.ld" \
    -o "$TMP/counter" "$TMP/header.o" "$TMP/counter.o"
python3 "$ROOT/bench/snapshot_restore.py" "$ROOT/target/release/vessel" "$TMP/counter" "$TMP" "$RUNS" "$SIZES"
