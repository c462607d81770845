# blk-ro: a read-only disk reads (sha256 of its first MiB for the host to compare) and
# refuses writes.
. /tests/lib.sh
wait_for /sys/block/vda 10
result "size_sectors=$(cat /sys/block/vda/size)"
result "ro=$(cat /sys/block/vda/ro)"
[ "$(cat /sys/block/vda/ro)" = 1 ] || fail "the disk is not read-only"
dd if=/dev/vda of=/tmp/head bs=1M count=1 iflag=direct 2>/dev/null || fail "reading failed"
result "sha256_first_mib=$(sha256 /tmp/head)"
dd if=/dev/urandom of=/tmp/junk bs=4096 count=1 2>/dev/null
if dd if=/tmp/junk of=/dev/vda bs=4096 count=1 oflag=direct conv=fsync 2>/tmp/err; then
    fail "a write to the read-only disk succeeded"
fi
result "write_refused=$(head -n 1 /tmp/err)"
