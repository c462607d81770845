# blk-hammer: endless direct writes and reads over the first 32 MiB, for the host to kill
# QEMU in the middle of them. Prints VESSEL-HAMMER-RUNNING once I/O flows.
. /tests/lib.sh
wait_for /sys/block/vda 10
dd if=/dev/urandom of=/tmp/chunk bs=1M count=4 2>/dev/null
i=0
while :; do
    dd if=/tmp/chunk of=/dev/vda bs=1M seek=$((i % 8 * 4)) oflag=direct 2>/dev/null ||
        fail "write failed"
    dd if=/dev/vda of=/dev/null bs=1M skip=$((i % 8 * 4)) count=4 iflag=direct 2>/dev/null ||
        fail "read failed"
    i=$((i + 1))
    [ "$i" = 1 ] && echo "VESSEL-HAMMER-RUNNING"
done
