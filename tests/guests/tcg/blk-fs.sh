# blk-fs: the disk's size, raw direct-I/O throughput, then mkfs.ext4, 64 MiB of random
# data into /mnt/f, sync, remount and re-read. The host dumps /f from the image afterwards
# and compares the sha256 with sha256_remount. vessel.mib=N changes the 64 MiB.
. /tests/lib.sh
wait_for /sys/block/vda 10
result "size_sectors=$(cat /sys/block/vda/size)"
result "ro=$(cat /sys/block/vda/ro)"
mib=$(arg mib)
mib=${mib:-64}
dd_rate dd_write "$mib" if=/dev/zero of=/dev/vda bs=1M count="$mib" oflag=direct
dd_rate dd_read "$mib" if=/dev/vda of=/dev/null bs=1M count="$mib" iflag=direct
mkfs.ext4 -q -F /dev/vda || fail "mkfs.ext4 failed"
mount -t ext4 /dev/vda /mnt || fail "mount failed"
dd if=/dev/urandom of=/mnt/f bs=1M count="$mib" 2>/dev/null || fail "writing /mnt/f failed"
written=$(sha256 /mnt/f)
sync
umount /mnt
echo 3 > /proc/sys/vm/drop_caches
mount -t ext4 -o ro /dev/vda /mnt || fail "remount failed"
reread=$(sha256 /mnt/f)
umount /mnt
result "sha256_written=$written"
result "sha256_remount=$reread"
[ "$written" = "$reread" ] || fail "the file read back after remount differs"
