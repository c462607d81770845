# blk-migrate: the disk is read again and again while the host live-migrates the guest from
# one QEMU to another, each with its own vessel vhost-user-blk backend on the same image.
# Each pass drops the page cache, fills it with 16 MiB from the device (only the backend
# writes those pages of guest RAM), waits a second and hashes the same range from the
# cache: a page the backend wrote but the migration did not carry hashes wrong on the
# destination. Passes alternate between the disk's two halves, so that a page the cache
# reuses holds other data from one pass to the next.
. /tests/lib.sh
wait_for /sys/block/vda 10
passes=$(arg passes)
i=0
while [ "$i" -lt "$passes" ]; do
    echo 3 >/proc/sys/vm/drop_caches
    skip=$((i % 2 * 16))
    dd if=/dev/vda of=/dev/null bs=1M skip=$skip count=16 2>/dev/null ||
        fail "pass $i: reading the disk failed"
    sleep 1
    result "pass$i=$(dd if=/dev/vda bs=1M skip=$skip count=16 2>/dev/null | sha256sum | cut -d' ' -f1)"
    i=$((i + 1))
done
