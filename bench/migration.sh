#!/usr/bin/env bash
# bench/migration.sh [RUNS] - live migration of a 256 MiB counting guest between two
# vessel processes over a unix socket: total time of PUT /migration/send and downtime
# (pause -> the receiver confirms the VM runs), medians; the reference in the same run is
# a snapshot of the same guest: pause + PUT /snapshot/create, then PUT /snapshot/load
# (resume_vm) in a new VMM. VESSEL=path picks the binary (default: a release build).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-5}
if [ -z "${VESSEL:-}" ]; then
    cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin vessel >&2
    VESSEL=$ROOT/target/release/vessel
fi
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
CFLAGS=(-m32 -c -ffreestanding -fno-pic -fno-pie -fno-stack-protector
    -fno-asynchronous-unwind-tables -nostdlib -O2)
G=$ROOT/tests/guests
gcc "${CFLAGS[@]}" "$G/multiboot_header.S" -o "$TMP/h.o"
gcc "${CFLAGS[@]}" "$G/counter_guest.c" -o "$TMP/c.o"
ld -m elf_i386 -nostdlib -z noexecstack --no-warn-rwx-segments -T "$G/multiboot.ld" \
    -o "$TMP/counter" "$TMP/h.o" "$TMP/c.o"
python3 "$ROOT/bench/migration.py" "$VESSEL" "$TMP/counter" "$TMP" "$RUNS"
