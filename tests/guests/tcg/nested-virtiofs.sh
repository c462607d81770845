# nested-virtiofs: vessel's virtio-fs (virtiofsd serving the queues vessel's PCI transport
# hands it) through Linux's virtiofs driver. The host shares a directory as "hostdir" and
# another readonly as "rodir": the guest hashes a host file, writes one the host checks,
# and a write to the readonly share fails with EROFS. With vessel.ddmib=N it also times dd
# of an N MiB file through the share and through the virtio-blk disk /dev/vda.
. /tests/lib.sh
while read -r m; do insmod "/lib/modules/fs/$m" 2>/dev/null || true; done < /etc/modules.fs
grep -q virtiofs /proc/filesystems || fail "the virtiofs module did not load"
mkdir -p /mnt/rw /mnt/ro
tries=0
until mount -t virtiofs hostdir /mnt/rw 2>/tmp/mount.err; do
    tries=$((tries + 1))
    [ "$tries" -le 600 ] || fail "mount -t virtiofs hostdir: $(cat /tmp/mount.err)"
    sleep 0.1
done
mount -t virtiofs rodir /mnt/ro || fail "mount -t virtiofs rodir failed"
result "sha256_host=$(sha256 /mnt/rw/host.bin)"
echo "written by the guest" > /mnt/rw/guest.txt || fail "cannot write to the share"
result "ro_file=$(cat /mnt/ro/ro.txt)"
if echo nope 2>/tmp/ro.err > /mnt/ro/new.txt; then
    fail "the readonly share accepted a write"
fi
result "ro_write=$(cat /tmp/ro.err)"
mib=$(arg ddmib)
if [ -n "$mib" ]; then
    dd_rate fs_write "$mib" if=/dev/zero of=/mnt/rw/dd.bin bs=1M count="$mib" conv=fsync
    echo 3 > /proc/sys/vm/drop_caches
    dd_rate fs_read "$mib" if=/mnt/rw/dd.bin of=/dev/null bs=1M
    dd_rate blk_write "$mib" if=/dev/zero of=/dev/vda bs=1M count="$mib" conv=fsync
    echo 3 > /proc/sys/vm/drop_caches
    dd_rate blk_read "$mib" if=/dev/vda of=/dev/null bs=1M count="$mib"
fi
umount /mnt/rw
umount /mnt/ro
