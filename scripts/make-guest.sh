#!/usr/bin/env bash
# make-guest.sh - build vessel's default guest from Debian's packages:
#   $OUT/bzImage            stock Debian cloud kernel (linux-image-*-cloud-amd64)
#   $OUT/vmlinux            its uncompressed ELF (PVH entry), when it can be extracted
#   $OUT/initramfs.cpio.gz  busybox-static + virtio modules + an /init that prints
#                           "VESSEL-GUEST-READY <uptime>" and powers the VM off
# Usage: OUT=dir scripts/make-guest.sh     (default OUT: guest/ in the repository)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/guest}
WORK=$OUT/work
MODULES=${MODULES:-"virtio_pci virtio_blk virtio_net virtio_console virtio_rng vmw_vsock_virtio_transport"}
log() { echo "[make-guest] $*" >&2; }

missing=()
for tool in dpkg-deb cpio gzip depmod modprobe lz4 xz zstd python3; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing build tools (missing: ${missing[*]})"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq busybox-static cpio kmod lz4 xz-utils zstd gzip file python3 >/dev/null
fi

mkdir -p "$OUT" "$WORK"
if [ -s "$OUT/bzImage" ] && [ -s "$OUT/initramfs.cpio.gz" ] && [ -z "${REBUILD:-}" ]; then
    log "guest already built in $OUT (REBUILD=1 to rebuild)"
    exit 0
fi

# The metapackage names the versioned kernel package of the current point release.
KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$KPKG" ] || { echo "cannot resolve linux-image-cloud-amd64 (apt-get update?)" >&2; exit 1; }
DEB=$(ls "$WORK/${KPKG}"_*.deb 2>/dev/null | head -1 || true)
if [ -z "$DEB" ]; then
    log "downloading $KPKG"
    (cd "$WORK" && apt-get download "$KPKG" >/dev/null 2>&1)
    DEB=$(ls "$WORK/${KPKG}"_*.deb | head -1)
fi
rm -rf "$WORK/pkg" && dpkg-deb -x "$DEB" "$WORK/pkg"
KVER=$(ls "$WORK/pkg/lib/modules" | head -1)
cp "$WORK/pkg/boot/vmlinuz-$KVER" "$OUT/bzImage"
echo "$KVER" > "$OUT/kernel.version"
depmod -b "$WORK/pkg" "$KVER"
log "kernel $KVER"

# vmlinux: find a compressed payload in the bzImage and keep the first one that is an ELF.
python3 - "$OUT/bzImage" "$WORK" <<'PY' && mv "$WORK/vmlinux" "$OUT/vmlinux" || log "no vmlinux extracted (bzImage still works)"
import subprocess, sys
img = open(sys.argv[1], 'rb').read()
for magic, cmd in [(b'\x02\x21\x4c\x18', ['lz4', '-dc']), (b'\x28\xb5\x2f\xfd', ['zstd', '-dcq']),
                   (b'\xfd7zXZ\x00', ['xz', '-dcq']), (b'\x1f\x8b\x08\x00', ['gzip', '-dcq'])]:
    at = img.find(magic)
    while at != -1:
        out = subprocess.run(cmd, input=img[at:], capture_output=True).stdout
        if out[:4] == b'\x7fELF':
            open(sys.argv[2] + '/vmlinux', 'wb').write(out)
            sys.exit(0)
        at = img.find(magic, at + 1)
sys.exit(1)
PY

IR=$WORK/initramfs
rm -rf "$IR" && mkdir -p "$IR"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,lib/modules}
cp /bin/busybox "$IR/bin/busybox"
for applet in $(/bin/busybox --list-full); do
    [ -e "$IR/$applet" ] || ln -s /bin/busybox "$IR/$applet"
done
: > "$IR/etc/modules.order"
for m in $MODULES; do modprobe -d "$WORK/pkg" -S "$KVER" --show-depends "$m"; done |
    awk '$1 == "insmod" {print $2}' |
    while read -r ko; do
        name=$(basename "$ko")
        [ -e "$IR/lib/modules/$name" ] && continue
        cp "$ko" "$IR/lib/modules/$name"
        echo "$name" >> "$IR/etc/modules.order"
    done
cat > "$IR/init" <<'INIT'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /etc/modules.order
read -r up _ < /proc/uptime
echo "VESSEL-GUEST-READY $up kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo)"
grep -q vessel.shell /proc/cmdline && exec sh
poweroff -f
INIT
chmod 755 "$IR/init"
(cd "$IR" && find . -print0 | sort -z | cpio --null -o -H newc --reproducible --quiet) | gzip -9n > "$OUT/initramfs.cpio.gz"
log "initramfs $(du -h "$OUT/initramfs.cpio.gz" | cut -f1), modules: $(tr '\n' ' ' < "$IR/etc/modules.order")"
