#!/usr/bin/env bash
# run-default-vm.sh - build vessel and boot the default guest (Debian cloud kernel +
# busybox initramfs) with 2 vCPUs and 512 MiB; the guest prints VESSEL-GUEST-READY and
# powers off. Extra arguments go to `vessel run`.
# On a nested host whose /dev/kvm is kvm_pvm (guest ring 0 emulated, docs/nested-kvm.md) it
# boots the nested-host profile instead: ELF vmlinux, the uncompressed nested initramfs, one
# vCPU, 256 MiB and scripts/nested-host.cmdline. That takes minutes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v cargo >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs" >&2; exit 1; }
"$ROOT/scripts/make-guest.sh"
cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin vessel --bin vessel-vmm
VESSEL=${CARGO_TARGET_DIR:-$ROOT/target}/release/vessel
if [ -d /sys/module/kvm_pvm ] && [ -s "$ROOT/guest/vmlinux" ]; then
    echo "run-default-vm: /dev/kvm is kvm_pvm (software nested KVM): booting the nested-host" \
        "profile of docs/nested-kvm.md, which takes minutes here" >&2
    exec "$VESSEL" run \
        --kernel "$ROOT/guest/vmlinux" --initrd "$ROOT/guest/initramfs-nested.cpio" \
        --cmdline "$(sed '/^#/d' "$ROOT/scripts/nested-host.cmdline" | tr '\n' ' ')" \
        --memory 256M --cpus 1 "$@"
fi
exec "$VESSEL" run \
    --kernel "$ROOT/guest/bzImage" --initrd "$ROOT/guest/initramfs.cpio.gz" \
    --cmdline "console=ttyS0 reboot=k panic=-1" --memory 512M --cpus 2 "$@"
