# blk-bench: sequential direct-I/O throughput of /dev/vda (bench/vhost-user.sh): 1 MiB
# blocks over vessel.mib MiB (default 128), then 4 KiB blocks over a sixteenth of that;
# written first, so reads hit allocated data in every image format.
. /tests/lib.sh
wait_for /sys/block/vda 10
mib=$(arg mib)
mib=${mib:-128}
small=$((mib / 16))
[ "$small" -gt 0 ] || small=1
dd_rate write_1m "$mib" if=/dev/zero of=/dev/vda bs=1M count="$mib" oflag=direct
dd_rate read_1m "$mib" if=/dev/vda of=/dev/null bs=1M count="$mib" iflag=direct
dd_rate write_4k "$small" if=/dev/zero of=/dev/vda bs=4k count=$((small * 256)) oflag=direct
dd_rate read_4k "$small" if=/dev/vda of=/dev/null bs=4k count=$((small * 256)) iflag=direct
