# blk-fs: the disk's size; 64 MiB of random data written to the raw disk and read back with
# direct I/O (timed: the dd figures), compared; then mkfs.ext4, the same data into /mnt/f,
# sync, remount and re-read. The host dumps /f from the image afterwards and compares its
# sha256 with sha256_remount. vessel.mib=N changes the 64 MiB.
. /tests/lib.sh
wait_for /sys/block/vda 10
result "size_sectors=$(cat /sys/block/vda/size)"
result "ro=$(cat /sys/block/vda/ro)"
mib=$(arg mib)
mib=${mib:-64}
dd if=/dev/urandom of=/tmp/data bs=1M count="$mib" 2>/dev/null || fail "no random data"
written=$(sha256 /tmp/data)
dd_rate dd_write "$mib" if=/tmp/data of=/dev/vda bs=1M oflag=direct
dd_rate dd_read "$mib" if=/dev/vda of=/tmp/back bs=1M count="$mib" iflag=direct
[ "$(sha256 /tmp/back)" = "$written" ] || fail "data read back from the raw disk differs"
rm /tmp/back
/sbin/mkfs.ext4 -q -F /dev/vda || fail "mkfs.ext4 failed"
mount -t ext4 /dev/vda /mnt || fail "mount failed"
cp /tmp/data /mnt/f || fail "writing /mnt/f failed"
sync
umount /mnt
echo 3 > /proc/sys/vm/drop_caches
mount -t ext4 -o ro /dev/vda /mnt || fail "remount failed"
reread=$(sha256 /mnt/f)
umount /mnt
result "sha256_written=$written"
result "sha256_remount=$reread"
[ "$written" = "$reread" ] || fail "the file read back after remount differs"
