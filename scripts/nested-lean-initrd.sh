#!/usr/bin/env bash
# scripts/nested-lean-initrd.sh INITRD OUT.cpio - a lean initramfs for booting a Debian cloud
# image's root file system on a host whose /dev/kvm is kvm_pvm (docs/images.md, "Measured"):
# the host's static busybox, the virtio modules taken from the image's own INITRD with their
# signatures and BTF stripped (each would cost minutes of emulated ring 0 there), and an
# /init that loads them, mounts root= read-only and switches to the image's /sbin/init.
# Uncompressed, ~2.4 MiB, against the image's 50 MiB of initramfs-tools and modules.
# Use it for a VM made with `vessel create --image` by pointing `[boot] initrd` of its
# vm.toml at OUT.cpio.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 INITRD OUT.cpio" >&2; exit 2; }
INITRD=$(realpath "$1") OUT=$(realpath "$2")
file -L /bin/busybox | grep -q 'statically linked' || { echo "needs a static /bin/busybox (apt-get install busybox-static)" >&2; exit 1; }
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/full" "$WORK/lean"/{bin,dev,proc,sys,root,lib/modules}
# The image's initrd: one compressed cpio archive (initramfs-tools' default).
case $(head -c 4 "$INITRD" | od -An -tx1 | tr -d ' ') in
    1f8b*) unpack=(gzip -dc) ;;
    28b52ffd) unpack=(zstd -dcq) ;;
    fd377a58) unpack=(xz -dc) ;;
    02214c18) unpack=(lz4 -dc) ;;
    *) unpack=(cat) ;;
esac
"${unpack[@]}" < "$INITRD" | (cd "$WORK/full" && cpio -idm --quiet)
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net"
for m in $MODULES; do
    ko=$(find "$WORK/full/lib/modules" -name "$m.ko" | head -1)
    [ -n "$ko" ] || { echo "$m.ko is not in $INITRD" >&2; exit 1; }
    # objcopy rewrites the ELF: the appended signature goes with the .BTF section.
    objcopy --remove-section=.BTF "$ko" "$WORK/lean/lib/modules/$m.ko"
done
cp /bin/busybox "$WORK/lean/bin/busybox"
cat > "$WORK/lean/init" <<EOF
#!/bin/busybox sh
# Load the virtio modules, mount root= read-only, hand over to the image's systemd.
B=/bin/busybox
\$B mount -t proc proc /proc
\$B mount -t sysfs sysfs /sys
\$B mount -t devtmpfs devtmpfs /dev
echo "lean-initrd: loading virtio modules"
for m in $MODULES; do
    \$B insmod /lib/modules/\$m.ko || echo "lean-initrd: insmod \$m failed"
done
root=
for w in \$(\$B cat /proc/cmdline); do case \$w in root=*) root=\${w#root=} ;; esac; done
dev=
for i in \$(\$B seq 1 600); do
    dev=\$(\$B findfs "\$root" 2>/dev/null) && break
    \$B sleep 1
done
echo "lean-initrd: root \$root is \$dev"
\$B mount -t ext4 -o ro "\$dev" /root || { echo "lean-initrd: cannot mount \$dev"; exec \$B sh; }
\$B mount --move /dev /root/dev
\$B umount /proc /sys
exec \$B switch_root /root /sbin/init
EOF
chmod +x "$WORK/lean/init"
(cd "$WORK/lean" && find . | cpio -o -H newc --quiet) > "$OUT"
echo "$OUT: $(du -k "$OUT" | cut -f1) KiB"
