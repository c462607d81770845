# blk-bench: sequential direct-I/O throughput of /dev/vda (bench/vhost-user.sh): 1 MiB
# blocks over vessel.mib MiB (default 64; the data and its read-back copy live in the
# initramfs, at most half the 512 MiB guest RAM), then 4 KiB blocks over a sixteenth of that.
# The data is random and read back into tmpfs and compared, so a backend that completes
# requests without doing them produces an error, not a figure.
. /tests/lib.sh
wait_for /sys/block/vda 10
mib=$(arg mib)
mib=${mib:-64}
small=$((mib / 16))
[ "$small" -gt 0 ] || small=1
dd if=/dev/urandom of=/tmp/data bs=1M count="$mib" 2>/dev/null || fail "no random data"
dd_rate write_1m "$mib" if=/tmp/data of=/dev/vda bs=1M oflag=direct
dd_rate read_1m "$mib" if=/dev/vda of=/tmp/back bs=1M count="$mib" iflag=direct
[ "$(sha256 /tmp/back)" = "$(sha256 /tmp/data)" ] || fail "1 MiB reads returned other data"
rm /tmp/back
head -c $((small << 20)) /tmp/data > /tmp/small
rm /tmp/data
dd_rate write_4k "$small" if=/tmp/small of=/dev/vda bs=4k seek=256 oflag=direct
dd_rate read_4k "$small" if=/dev/vda of=/tmp/back bs=4k skip=256 count=$((small * 256)) iflag=direct
[ "$(sha256 /tmp/back)" = "$(sha256 /tmp/small)" ] || fail "4 KiB reads returned other data"
