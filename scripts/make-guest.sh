#!/usr/bin/env bash
# make-guest.sh - build vessel's default guest from Debian's packages:
#   $OUT/bzImage            stock Debian cloud kernel (linux-image-*-cloud-amd64)
#   $OUT/vmlinux            its uncompressed ELF (PVH entry), when it can be extracted
#   $OUT/initramfs.cpio.gz  busybox-static + virtio modules + mkfs.ext4 (e2fsprogs, with its
#                           libraries) + an /init that prints "VESSEL-GUEST-READY <uptime>"
#                           and powers the VM off; it loads the modules when the VM has a
#                           virtio PCI device.
#   $OUT/initramfs-nested.cpio  busybox, the virtio-pci/blk/net/console/rng/vsock/balloon modules
#                           (unsigned, no BTF),
#                           the tests/guests/tcg/nested-*.sh scripts and the same /init,
#                           uncompressed, for nested hosts (docs/nested-kvm.md); fuse and
#                           virtiofs in /lib/modules/fs (listed in /etc/modules.fs), loaded
#                           by the test that mounts a share rather than by /init.
# Test scripts: every tests/guests/tcg/*.sh is shipped as /tests/NAME.sh; a kernel command
# line with `vessel.test=NAME` makes /init run it between "VESSEL-TEST-BEGIN NAME" and
# "VESSEL-TEST-PASS NAME" / "VESSEL-TEST-FAIL NAME ..." on the console, then power off;
# `vessel.test=A,B,...` runs several in turn in one boot.
# The build is skipped when $OUT/guest.stamp matches this script and the test scripts.
# Usage: OUT=dir scripts/make-guest.sh     (default OUT: guest/ in the repository)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/guest}
WORK=$OUT/work
TESTS=$ROOT/tests/guests/tcg
MODULES=${MODULES:-"virtio_pci virtio_blk virtio_net virtio_console virtio_rng vmw_vsock_virtio_transport virtio_balloon"}
NESTED_MODULES="virtio_pci virtio_blk virtio_net virtio_console virtio_rng vmw_vsock_virtio_transport virtio_balloon"
log() { echo "[make-guest] $*" >&2; }

missing=()
for tool in dpkg-deb cpio gzip depmod modprobe lz4 xz zstd python3 mke2fs ldd flock objcopy; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing build tools (missing: ${missing[*]})"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq busybox-static cpio kmod lz4 xz-utils zstd gzip file python3 \
        e2fsprogs libc-bin util-linux binutils >/dev/null
fi

mkdir -p "$OUT" "$WORK"
# One build at a time (parallel test binaries, the README's script).
exec 9>"$OUT/.lock"
flock 9
STAMP=$(cat "$0" "$TESTS"/* 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ -s "$OUT/bzImage" ] && [ -s "$OUT/initramfs.cpio.gz" ] && [ -s "$OUT/initramfs-nested.cpio" ] &&
   [ -z "${REBUILD:-}" ] &&
   [ "$(cat "$OUT/guest.stamp" 2>/dev/null)" = "$STAMP" ]; then
    log "guest already built in $OUT (REBUILD=1 to rebuild)"
    exit 0
fi
rm -f "$OUT/guest.stamp"

# The metapackage names the versioned kernel package of the current point release.
kernel_package() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
KPKG=$(kernel_package)
if [ -z "$KPKG" ]; then
    log "apt-get update (no package lists yet)"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    KPKG=$(kernel_package)
fi
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

# busybox_root DIR [APPLET...]: a root with busybox, links for the applets named (all of
# them when none is) and an empty module list.
busybox_root() {
    local dir=$1; shift
    rm -rf "$dir" && mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,lib/modules}
    cp /bin/busybox "$dir/bin/busybox"
    for applet in $(/bin/busybox --list-full); do
        if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qxF "$(basename "$applet")"; then continue; fi
        [ -e "$dir/$applet" ] || ln -s /bin/busybox "$dir/$applet"
    done
    : > "$dir/etc/modules.order"
}
# add_modules DIR COPY MODULE...: the MODULEs and what they depend on into DIR/lib/modules,
# in load order (DIR/etc/modules.order); COPY SRC DST copies one.
add_modules() {
    local dir=$1 copy=$2; shift 2
    for m in "$@"; do modprobe -d "$WORK/pkg" -S "$KVER" --show-depends "$m"; done |
        awk '$1 == "insmod" {print $2}' |
        while read -r ko; do
            name=$(basename "$ko")
            [ -e "$dir/lib/modules/$name" ] && continue
            $copy "$ko" "$dir/lib/modules/$name"
            echo "$name" >> "$dir/etc/modules.order"
        done
}
# strip_module SRC DST: a module without its BTF section and appended signature.
strip_module() { objcopy --remove-section=.BTF "$1" "$2"; }
# pack DIR: DIR as a reproducible newc cpio on stdout.
pack() { (cd "$1" && find . -print0 | sort -z | cpio --null -o -H newc --reproducible --quiet); }

IR=$WORK/initramfs
busybox_root "$IR"
# shellcheck disable=SC2086 # MODULES is a list
add_modules "$IR" cp $MODULES
# mkfs.ext4: e2fsprogs' mke2fs (busybox's makes ext2 only) with the libraries ldd names.
# The busybox applet links go first: cp onto them would write through into busybox.
MKE2FS=$(command -v mke2fs)
for name in mke2fs mkfs.ext2 mkfs.ext4; do rm -f "$IR/sbin/$name" "$IR/usr/sbin/$name"; done
cp -L "$MKE2FS" "$IR/sbin/mke2fs"
ln -s mke2fs "$IR/sbin/mkfs.ext4"
for lib in $(ldd "$MKE2FS" | awk '/=> \//{print $3} /^[[:space:]]*\/[^ ]*ld-linux/{print $1}'); do
    mkdir -p "$IR$(dirname "$lib")"
    cp -L "$lib" "$IR$lib"
done
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$IR/etc/mke2fs.conf"
# Test scripts and udhcpc's event script (busybox's default path).
mkdir -p "$IR/tests" "$IR/etc/udhcpc" "$IR/mnt"
for t in "$TESTS"/*.sh; do [ -e "$t" ] && install -m 755 "$t" "$IR/tests/"; done
[ -f "$TESTS/udhcpc.script" ] && install -m 755 "$TESTS/udhcpc.script" "$IR/etc/udhcpc/default.script"
cat > "$IR/init" <<'INIT'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The virtio modules, when the VM has a virtio PCI device (vendor 0x1af4): module loading is
# ring-0 work that takes minutes where ring 0 is emulated (docs/nested-kvm.md).
# vessel.modules=a,b,... loads only those (names as in /etc/modules.order, without .ko).
only=$(sed -n 's/.*vessel\.modules=\([^ ]*\).*/\1/p' /proc/cmdline)
if grep -qsx 0x1af4 /sys/bus/pci/devices/*/vendor; then
    while read -r m; do
        case ",$only," in ",,"|*",${m%.ko},"*) insmod "/lib/modules/$m" 2>/dev/null ;; esac
    done < /etc/modules.order
fi
read -r up _ < /proc/uptime
echo "VESSEL-GUEST-READY $up kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo)"
grep -q vessel.shell /proc/cmdline && exec sh
# vessel.test=a,b,...: each test in turn, in one boot (a boot costs minutes on nested hosts).
tests=$(sed -n 's/.*vessel\.test=\([^ ]*\).*/\1/p' /proc/cmdline)
for test in $(echo "$tests" | tr , ' '); do
    echo "VESSEL-TEST-BEGIN $test"
    if [ ! -f "/tests/$test.sh" ]; then
        echo "VESSEL-TEST-FAIL $test no such test in /tests"
    elif sh "/tests/$test.sh"; then
        echo "VESSEL-TEST-PASS $test"
    else
        echo "VESSEL-TEST-FAIL $test exit status $?"
    fi
done
poweroff -f
INIT
chmod 755 "$IR/init"
pack "$IR" | gzip -9n > "$OUT/initramfs.cpio.gz"
# For nested hosts (docs/nested-kvm.md): busybox, links for what /init and a first look
# around need, and the same /init; uncompressed. There the kernel unpacks the initramfs in
# emulated ring 0: inflating gzip took minutes, and every file costs (busybox's ~400 applet
# links did); `busybox --install -s` in the guest makes the rest. No modprobe: without it the
# kernel's module requests fail at once instead of running a user-mode helper each.
# The virtio-pci, -blk, -net, -console, -rng, vsock and balloon modules go in without their signatures and BTF: checking a
# signature (software SHA-256 and RSA) took ~20 s per module there, and the first module
# with BTF makes the kernel parse the whole kernel's BTF (~100 s).
NESTED=$WORK/initramfs-nested
busybox_root "$NESTED" sh mount umount grep sed cat ls echo insmod poweroff reboot \
    uname dmesg ps mkdir dd sha256sum cut od tr sleep awk sync
cp -p "$IR/init" "$NESTED/init"
# shellcheck disable=SC2086 # NESTED_MODULES is a list
add_modules "$NESTED" strip_module $NESTED_MODULES
# fuse and virtiofs (kernel/fs/fuse), stripped the same way, for nested-virtiofs.sh.
FSMOD=$WORK/nested-fs-modules
rm -rf "$FSMOD" && mkdir -p "$FSMOD/lib/modules" "$FSMOD/etc" && : > "$FSMOD/etc/modules.order"
add_modules "$FSMOD" strip_module fuse virtiofs
mkdir -p "$NESTED/lib/modules/fs"
: > "$NESTED/etc/modules.fs"
while read -r m; do   # what /init loads already (virtio core) stays out
    [ -e "$NESTED/lib/modules/$m" ] && continue
    cp "$FSMOD/lib/modules/$m" "$NESTED/lib/modules/fs/$m"
    echo "$m" >> "$NESTED/etc/modules.fs"
done < "$FSMOD/etc/modules.order"
mkdir -p "$NESTED/tests"
for t in "$TESTS"/lib.sh "$TESTS"/nested-*.sh; do [ -e "$t" ] && install -m 755 "$t" "$NESTED/tests/"; done
pack "$NESTED" > "$OUT/initramfs-nested.cpio"
echo "$STAMP" > "$OUT/guest.stamp"
log "initramfs $(du -h "$OUT/initramfs.cpio.gz" | cut -f1), modules: $(tr '\n' ' ' < "$IR/etc/modules.order"), tests: $(cd "$IR/tests" && ls | tr '\n' ' ')"
