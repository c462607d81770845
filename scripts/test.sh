#!/usr/bin/env bash
# test.sh - install what the test suite needs (Debian packages) and run all of it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
need=()
for pair in gcc:gcc ld:binutils objcopy:binutils qemu-img:qemu-utils qemu-io:qemu-utils iasl:acpica-tools \
            ip:iproute2 passt:passt curl:curl tar:tar; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
# Network tests run udhcpc/nc/wget from busybox-static inside network namespaces.
file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || need+=(busybox-static file)
# The vhost-user tests boot Debian's cloud kernel under QEMU's software CPU (TCG) with the
# initramfs of scripts/make-guest.sh, and check images with debugfs (no GUI/firmware extras).
tcg=()
for pair in qemu-system-x86_64:qemu-system-x86 debugfs:e2fsprogs mke2fs:e2fsprogs python3:python3 \
            cpio:cpio lz4:lz4 zstd:zstd xz:xz-utils depmod:kmod dpkg-deb:dpkg flock:util-linux \
            sha256sum:coreutils; do
    command -v "${pair%%:*}" >/dev/null || tcg+=("${pair#*:}")
done
if [ $((${#need[@]} + ${#tcg[@]})) -gt 0 ]; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    [ ${#need[@]} -eq 0 ] || $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
    [ ${#tcg[@]} -eq 0 ] || $SUDO apt-get install -y -qq --no-install-recommends "${tcg[@]}" >/dev/null
fi
[ -c /dev/kvm ] || echo "warning: /dev/kvm is missing; the tests that boot guests will fail" >&2
cd "$ROOT"
# The TCG guest (kernel download + initramfs); the vhost-user tests fail rather than skip.
"$ROOT/scripts/make-guest.sh"
export VESSEL_REQUIRE_TCG=1
cargo test --workspace --all-targets "$@"
