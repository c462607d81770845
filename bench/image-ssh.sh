#!/usr/bin/env bash
# bench/image-ssh.sh [--runs N] [--timeout SECS] [--memory SIZE] [--image-file PATH]
#                    [--cmdline-append WORDS] [--systems vessel,qemu-tcg]
# Time from `vessel create NAME --image IMG` to the first successful `vessel ssh NAME -- true`
# (issue 14's figure; goal on a hardware-KVM host: under 3 s for the Debian image), on vessel
# (`vessel start`), against the reference in the same invocation: QEMU with its software CPU
# (TCG) booting the same VM — the kernel, initrd and command line vessel extracted and wrote
# into the VM's definition, vessel's overlay and cloud-init seed served by `vessel
# vhost-user-blk`, its NAT by `vessel vhost-user-net` (as tests/image_ssh.rs). Runs alternate,
# one at a time. Prints per run the total and where the time went (create, VMM start, kernel
# to `Run /init`, initramfs to systemd, systemd to `Started ssh.service`, sshd to the first
# ssh: cloud-init's host keys and the connection), then the medians and the vessel/QEMU-TCG
# ratio of the total medians. Console lines are timed on the host's clock as they reach the
# serial log; the stamped consoles stay in the logs directory.
#
# The image: `vessel image build debian-12` (mmdebstrap, root), made once and kept in
# $VESSEL_BENCH_DIR (default target/bench-image-ssh), or --image-file PATH imported there.
# vessel is built in release mode unless $VESSEL names a binary.
# --timeout (default 600 s) bounds each run's wait for ssh. On a host whose /dev/kvm is
# kvm_pvm (software nested KVM) vessel applies its nested-host profile by itself and a boot
# to ssh takes many minutes (docs/images.md, "Measured"): give --timeout 3600 there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=5 TIMEOUT=600 MEMORY=1G IMAGE_FILE= APPEND= SYSTEMS=vessel,qemu-tcg
while [ $# -gt 0 ]; do
    case $1 in
        --runs) RUNS=$2 ;;
        --timeout) TIMEOUT=$2 ;;
        --memory) MEMORY=$2 ;;
        --image-file) IMAGE_FILE=$2 ;;
        --cmdline-append) APPEND=$2 ;;
        --systems) SYSTEMS=$2 ;;
        *) echo "usage: $0 [--runs N] [--timeout SECS] [--memory SIZE] [--image-file PATH] [--cmdline-append WORDS] [--systems vessel,qemu-tcg]" >&2; exit 2 ;;
    esac
    shift 2
done
command -v qemu-system-x86_64 >/dev/null || { echo "apt-get install qemu-system-x86" >&2; exit 1; }
command -v ssh >/dev/null || { echo "apt-get install openssh-client" >&2; exit 1; }
if [ -z "${VESSEL:-}" ]; then
    cargo build --release -q --bin vessel --bin vessel-vmm --manifest-path "$ROOT/Cargo.toml"
    VESSEL=${CARGO_TARGET_DIR:-$ROOT/target}/release/vessel
fi
DIR=${VESSEL_BENCH_DIR:-$ROOT/target/bench-image-ssh}
export XDG_DATA_HOME=$DIR/data
STATE=$DIR/state
mkdir -p "$XDG_DATA_HOME" "$STATE"
IMAGE=debian-12
if [ -n "$IMAGE_FILE" ]; then
    IMAGE=bench-import
    "$VESSEL" image rm "$IMAGE" >/dev/null 2>&1 || true
    "$VESSEL" image import "$IMAGE_FILE" --name "$IMAGE" >&2
elif [ ! -f "$XDG_DATA_HOME/vessel/images/$IMAGE/manifest.toml" ]; then
    echo "building the image once: vessel image build $IMAGE (kept in $XDG_DATA_HOME)" >&2
    "$VESSEL" image build "$IMAGE" >&2
fi
# VMs left by an interrupted invocation.
for vm in "$STATE"/bench-*; do
    [ -d "$vm" ] || continue
    "$VESSEL" --state-dir "$STATE" stop --force "$(basename "$vm")" >/dev/null 2>&1 || true
    "$VESSEL" --state-dir "$STATE" rm "$(basename "$vm")" >/dev/null 2>&1 || rm -rf "$vm"
done
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/image-ssh.XXXXXX")
kvm=hardware; [ -e /sys/module/kvm_pvm ] && kvm="kvm_pvm (software nested KVM)"
echo "create --image $IMAGE to first ssh: $RUNS runs, $(nproc) host CPUs, /dev/kvm $kvm, $(date -u +%F)"
echo "logs: $LOGS"
python3 "$ROOT/bench/image_ssh.py" --vessel "$VESSEL" --state-dir "$STATE" \
    --data-home "$XDG_DATA_HOME" --logs "$LOGS" --image "$IMAGE" --memory "$MEMORY" \
    --cmdline-append "$APPEND" --runs "$RUNS" --timeout "$TIMEOUT" --systems "$SYSTEMS"
