# blk-bench: sequential direct-I/O throughput of /dev/vda (bench/vhost-user.sh): 1 MiB
# blocks over vessel.mib MiB (default 64; the data and its read-back copy live in the
# initramfs, at most half the 512 MiB guest RAM), then 4 KiB blocks over a sixteenth of that.
# The data is random and read back into tmpfs and compared, so a backend that completes
# requests without doing them produces an error, not a figure. vessel.rounds=N repeats.
. /tests/lib.sh
wait_for /sys/block/vda 10
mib=$(arg mib)
mib=${mib:-64}
small=$((mib / 16))
[ "$small" -gt 0 ] || small=1
rounds=$(arg rounds)
rounds=${rounds:-1}
dd if=/dev/urandom of=/tmp/data bs=1M count="$mib" 2>/dev/null || fail "no random data"
want=$(sha256 /tmp/data)
head -c $((small << 20)) /tmp/data > /tmp/small
want_small=$(sha256 /tmp/small)
round=1
while [ "$round" -le "$rounds" ]; do
    dd_rate "write_1m[$round]" "$mib" if=/tmp/data of=/dev/vda bs=1M oflag=direct
    dd_rate "read_1m[$round]" "$mib" if=/dev/vda of=/tmp/back bs=1M count="$mib" iflag=direct
    [ "$(sha256 /tmp/back)" = "$want" ] || fail "1 MiB reads returned other data"
    rm /tmp/back
    dd_rate "write_4k[$round]" "$small" if=/tmp/small of=/dev/vda bs=4k seek=256 oflag=direct
    dd_rate "read_4k[$round]" "$small" if=/dev/vda of=/tmp/back bs=4k skip=256 \
        count=$((small * 256)) iflag=direct
    [ "$(sha256 /tmp/back)" = "$want_small" ] || fail "4 KiB reads returned other data"
    rm /tmp/back
    round=$((round + 1))
done
