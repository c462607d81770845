#!/usr/bin/env bash
# install-containerd-runtime.sh - build and install vessel's containerd runtime
# (io.containerd.vessel.v2, docs/kubernetes.md):
#   $PREFIX/bin/containerd-shim-vessel-v2   the shim (containerd finds it on its PATH)
#   $PREFIX/bin/vessel, vessel-vmm          the VMM (or the binaries $VESSEL names, and vessel-vmm next to it)
#   $PREFIX/lib/vessel/vmlinux              Debian's cloud kernel, ELF (scripts/make-guest.sh)
#   $PREFIX/lib/vessel/initramfs.cpio       busybox + virtio/vsock modules (make-guest.sh's
#                                           initramfs-nested.cpio)
#   $PREFIX/lib/vessel/vessel-agent         the static guest agent
#   $CONFIG                                 the shim's configuration naming them
# then prints the lines containerd's config.toml needs.
# Environment: PREFIX (/usr/local), CONFIG (/etc/vessel/containerd-shim.toml),
# PROFILE (release or debug), VESSEL (an existing vessel binary: not built then),
# GUEST_DIR (where make-guest.sh builds the guest; guest/), CARGO_TARGET_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
CONFIG=${CONFIG:-/etc/vessel/containerd-shim.toml}
PROFILE=${PROFILE:-release}
GUEST_DIR=${GUEST_DIR:-$ROOT/guest}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
log() { echo "[install-containerd-runtime] $*" >&2; }
case $PROFILE in
    release) flags=(--release) dir=release ;;
    debug) flags=() dir=debug ;;
    *) echo "PROFILE must be release or debug, not $PROFILE" >&2; exit 1 ;;
esac

log "building the shim ($PROFILE)"
cargo build "${flags[@]}" --manifest-path "$ROOT/Cargo.toml" --target-dir "$TARGET" \
    -p shim --bin containerd-shim-vessel-v2
if [ -z "${VESSEL:-}" ]; then
    log "building vessel ($PROFILE)"
    cargo build "${flags[@]}" --manifest-path "$ROOT/Cargo.toml" --target-dir "$TARGET" --bin vessel --bin vessel-vmm
    VESSEL=$TARGET/$dir/vessel
fi
# Static, on the gnu target (no musl target needed); --target keeps the flag off build
# scripts and proc macros.
log "building vessel-agent, static ($PROFILE)"
RUSTFLAGS='-C target-feature=+crt-static' cargo build "${flags[@]}" \
    --manifest-path "$ROOT/Cargo.toml" --target-dir "$TARGET/agent-static" \
    --target x86_64-unknown-linux-gnu -p agent --bin vessel-agent
AGENT=$TARGET/agent-static/x86_64-unknown-linux-gnu/$dir/vessel-agent
file -L "$AGENT" | grep -q 'static' || { echo "$AGENT is not statically linked" >&2; exit 1; }
OUT=$GUEST_DIR "$ROOT/scripts/make-guest.sh"

LIB=$PREFIX/lib/vessel
mkdir -p "$PREFIX/bin" "$LIB" "$(dirname "$CONFIG")"
install -m 755 "$TARGET/$dir/containerd-shim-vessel-v2" "$PREFIX/bin/containerd-shim-vessel-v2"
# vessel runs each VM with vessel-vmm, which it finds next to itself.
VESSEL_VMM=$(dirname "$VESSEL")/vessel-vmm
[ -x "$VESSEL_VMM" ] || { echo "$VESSEL_VMM is missing (vessel-vmm is installed next to vessel)" >&2; exit 1; }
[ "$(realpath "$VESSEL")" = "$(realpath -m "$PREFIX/bin/vessel")" ] || install -m 755 "$VESSEL" "$PREFIX/bin/vessel"
[ "$(realpath "$VESSEL_VMM")" = "$(realpath -m "$PREFIX/bin/vessel-vmm")" ] || install -m 755 "$VESSEL_VMM" "$PREFIX/bin/vessel-vmm"
install -m 644 "$GUEST_DIR/vmlinux" "$LIB/vmlinux"
install -m 644 "$GUEST_DIR/initramfs-nested.cpio" "$LIB/initramfs.cpio"
install -m 755 "$AGENT" "$LIB/vessel-agent"
cat > "$CONFIG" <<CONF
# containerd-shim-vessel-v2 (docs/kubernetes.md)
vessel = "$PREFIX/bin/vessel"
kernel = "$LIB/vmlinux"
initrd = "$LIB/initramfs.cpio"
agent = "$LIB/vessel-agent"
memory_mib = 256
cpus = 1
CONF
log "installed in $PREFIX, configuration $CONFIG"
# Volumes (binds of host directories) and every pod's VM use virtio-fs: vessel runs
# virtiofsd ($VESSEL_VIRTIOFSD, else on containerd's PATH, else /usr/libexec/virtiofsd).
if [ -z "${VESSEL_VIRTIOFSD:-}" ] && ! command -v virtiofsd >/dev/null && [ ! -x /usr/libexec/virtiofsd ]; then
    log "warning: no virtiofsd: pods and containers with volumes will not start until it is installed (cargo install virtiofsd)"
fi
[ "$CONFIG" = /etc/vessel/containerd-shim.toml ] || log "containerd must run with VESSEL_SHIM_CONFIG=$CONFIG in its environment"
cat <<'SNIPPET'
# Add to containerd's config.toml (version = 2), then restart containerd. A runtimes table
# replaces containerd's built-in one: keep runc's (`containerd config default` lists it).
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vessel]
  runtime_type = "io.containerd.vessel.v2"
SNIPPET
