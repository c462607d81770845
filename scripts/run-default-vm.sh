#!/usr/bin/env bash
# run-default-vm.sh - build vessel and boot the default guest (Debian cloud kernel +
# busybox initramfs) with 2 vCPUs and 512 MiB; the guest prints VESSEL-GUEST-READY and
# powers off. Extra arguments go to `vessel run`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v cargo >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs" >&2; exit 1; }
"$ROOT/scripts/make-guest.sh"
cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin vessel
exec "$ROOT/target/release/vessel" run \
    --kernel "$ROOT/guest/bzImage" --initrd "$ROOT/guest/initramfs.cpio.gz" \
    --cmdline "console=ttyS0 reboot=k panic=-1" --memory 512M --cpus 2 "$@"
