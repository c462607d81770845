# blk-check: the disk works after a previous guest was killed mid-I/O: 16 MiB of random
# data written at 8 MiB and read back with direct I/O, then the whole disk is read.
. /tests/lib.sh
wait_for /sys/block/vda 10
result "size_sectors=$(cat /sys/block/vda/size)"
dd if=/dev/urandom of=/tmp/data bs=1M count=16 2>/dev/null
dd if=/tmp/data of=/dev/vda bs=1M seek=8 oflag=direct conv=fsync 2>/dev/null || fail "write failed"
dd if=/dev/vda of=/tmp/back bs=1M skip=8 count=16 iflag=direct 2>/dev/null || fail "read back failed"
[ "$(sha256 /tmp/data)" = "$(sha256 /tmp/back)" ] || fail "data read back differs"
result "sha256_check=$(sha256 /tmp/back)"
dd if=/dev/vda of=/dev/null bs=1M iflag=direct 2>/dev/null || fail "reading the whole disk failed"
