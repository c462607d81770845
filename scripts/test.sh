#!/usr/bin/env bash
# test.sh - install what the test suite needs (Debian packages, one apt transaction), check
# that every tool is there afterwards, then run all of it: rustfmt, clippy and
# `cargo test --workspace --all-targets --no-fail-fast`. Extra arguments go to cargo test.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v cargo >/dev/null || { echo "test.sh: cargo is missing: install Rust from https://rustup.rs" >&2; exit 1; }
for c in rustfmt clippy; do
    cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$c"
done

# tool:package for everything the tests run. Network tests run udhcpc/nc/wget from
# busybox-static in network namespaces; the vhost-user tests boot Debian's cloud kernel under
# QEMU's software CPU (TCG) with scripts/make-guest.sh's initramfs and check images with
# debugfs; crates/debimage builds a Debian cloud image with mmdebstrap, mkfs.ext4 and sgdisk
# and boots it under TCG; scripts/kvm-unit-tests.sh builds the kvm-unit-tests suite (gcc,
# make, python3); crates/cloudinit's tests check seed disks with dosfstools, mtools and
# blkid, and read them with Debian's cloud-init (its python3 modules; its services are never
# started here); vessel ssh/cp run OpenSSH's client, and `vessel migrate --to ssh:` goes
# through OpenSSH's server (tests/common/sshd.rs runs its own sshd on a free loopback port;
# the package's service is never used); the ansible provisioner and vessel
# inventory are checked with ansible-core's ansible-playbook, the vagrant-vessel plugin with
# Debian's vagrant; tests/nested/containerd.rs runs containers under Debian's containerd 1.6 with
# vessel's runtime; the tests' CRI client (tests/common/cri.rs, crate k8s-cri) is generated
# from the CRI's protobuf definitions by protoc at build time; its pod network is the CNI
# bridge plugin's (containernetworking-plugins), which vessel's shim joins with iproute2's
# ip and tc under nsenter.
TOOLS="gcc:gcc make:make ld:binutils objcopy:binutils qemu-img:qemu-utils qemu-io:qemu-utils
       iasl:acpica-tools ip:iproute2 passt:passt curl:curl tar:tar file:file
       qemu-system-x86_64:qemu-system-x86 debugfs:e2fsprogs mke2fs:e2fsprogs python3:python3
       cpio:cpio lz4:lz4 zstd:zstd xz:xz-utils depmod:kmod dpkg-deb:dpkg flock:util-linux
       sha256sum:coreutils sgdisk:gdisk sfdisk:fdisk truncate:coreutils fsck.vfat:dosfstools mdir:mtools mcopy:mtools blkid:util-linux
       ssh-keygen:openssh-client ssh:openssh-client scp:openssh-client sshd:openssh-server mmdebstrap:mmdebstrap cloud-init:cloud-init
       ansible-playbook:ansible-core vagrant:vagrant rsync:rsync
       pip3:python3-pip containerd:containerd ctr:containerd protoc:protobuf-compiler
       /usr/lib/cni/bridge:containernetworking-plugins nsenter:util-linux tc:iproute2"
static_busybox() { file -L /bin/busybox 2>/dev/null | grep -q 'statically linked'; }

missing_packages() {
    local pair
    for pair in $TOOLS; do
        command -v "${pair%%:*}" >/dev/null || echo "${pair#*:}"
    done
    static_busybox || echo busybox-static
}

# qemu-utils and qemu-system-x86 come from one QEMU source package and must share its version:
# a machine may carry a newer qemu-utils (a backport) that Debian's qemu-system-x86 conflicts
# with, and apt would remove it to install the emulator. Ask for both at the emulator's version
# (the installed one, else the candidate) so apt resolves them together.
qemu_version() {
    local v
    v=$(dpkg-query -W -f '${Version}' qemu-system-x86 2>/dev/null || true)
    [ -n "$v" ] || v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    [ -n "$v" ] && [ "$v" != "(none)" ] || { echo "test.sh: apt knows no qemu-system-x86" >&2; exit 1; }
    echo "$v"
}

mapfile -t need < <(missing_packages | sort -u)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "test.sh: installing ${need[*]}" >&2
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    pkgs=()
    for p in "${need[@]}"; do
        case $p in qemu-utils|qemu-system-x86) ;; *) pkgs+=("$p") ;; esac
    done
    if printf '%s\n' "${need[@]}" | grep -qxE 'qemu-utils|qemu-system-x86'; then
        v=$(qemu_version)
        pkgs+=("qemu-system-x86=$v" "qemu-utils=$v")
    fi
    # The tests only import cloud-init's python modules: keep it from ever running at boot
    # on a machine where this script installed it.
    if printf '%s\n' "${pkgs[@]}" | grep -qx cloud-init; then
        $SUDO mkdir -p /etc/cloud && $SUDO touch /etc/cloud/cloud-init.disabled
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        --allow-downgrades "${pkgs[@]}" >/dev/null
fi
# Whatever was pre-installed and whatever apt did: every tool must be there now.
mapfile -t still < <(missing_packages | sort -u)
if [ ${#still[@]} -gt 0 ]; then
    for pair in $TOOLS; do
        command -v "${pair%%:*}" >/dev/null || echo "test.sh: ${pair%%:*} is missing (package ${pair#*:})" >&2
    done
    static_busybox || echo "test.sh: /bin/busybox is not the static one (package busybox-static)" >&2
    exit 1
fi
# Shared folders (virtio-fs) run the Rust virtiofsd; Debian 12 has none, so cargo builds it
# (pinned; ~1m45s on 2 cores) against libseccomp and libcap-ng.
VIRTIOFSD_VERSION=1.14.0
if ! command -v virtiofsd >/dev/null && [ -z "${VESSEL_VIRTIOFSD:-}" ]; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        libseccomp-dev libcap-ng-dev pkg-config >/dev/null
    cargo install virtiofsd --version "$VIRTIOFSD_VERSION" --locked
fi
command -v virtiofsd >/dev/null || [ -n "${VESSEL_VIRTIOFSD:-}" ] || { echo "test.sh: virtiofsd is missing" >&2; exit 1; }
[ -c /dev/kvm ] || echo "warning: /dev/kvm is missing; the tests that boot guests will fail" >&2
# /dev/kvm as Debian's udev rules leave it on a standard host (root:kvm, 0660), so that
# tests/confinement.rs can start a VMM as an unprivileged member of the kvm group. Only a
# device left root:root (as some nested hosts leave it) is changed.
if [ -c /dev/kvm ] && [ "$(id -u)" = 0 ] && [ "$(stat -c %G /dev/kvm)" = root ]; then
    getent group kvm >/dev/null || groupadd --system kvm
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

cd "$ROOT"
# tests/firecracker_python.rs drives vessel with the unmodified PyPI client (pinned); --target
# keeps it out of the system's python (and out of PEP 668's way).
[ -f target/fcpy/firecracker/api.py ] ||
    python3 -m pip install -q --disable-pip-version-check --target target/fcpy firecracker-python==0.0.5
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The TCG guest (kernel download + initramfs); the vhost-user tests fail rather than skip.
"$ROOT/scripts/make-guest.sh"
export VESSEL_REQUIRE_TCG=1
cargo test --workspace --all-targets --no-fail-fast "$@"
# The confinement tests that need the guest-reachable debug hook (a feature release builds
# never have): a forbidden system call stops the VMM with its name; landlock refuses a file.
cargo test --features test-hooks --test confinement_hooks
# Every fuzz target for 10 s from its seed corpus (docs/fuzzing.md): a crash fails the run
# and prints its reproducer's path. The ci build (no sanitizer) keeps the one build cheap.
FUZZ_BUILD=ci "$ROOT/scripts/fuzz.sh" 10
