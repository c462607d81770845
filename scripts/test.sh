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
if [ ${#need[@]} -gt 0 ]; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -c /dev/kvm ] || echo "warning: /dev/kvm is missing; the tests that boot guests will fail" >&2
cd "$ROOT"
cargo test --workspace --all-targets "$@"
