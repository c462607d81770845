# nested-reconnect: a disk, a TCP stream and console lines that outlive a suspend and resume
# and a live migration (tests/nested_moves.rs). The guest counts once a second: "tick N" in
# block N of its virtio-blk disk (synced), on the virtio-console ("console tick N"), and on a
# connection to the host's port vessel.port (through the nat NIC's gateway, the host's
# loopback reachable there). A resumed or migrated VM has a fresh passt that does not know
# the old connection: when it breaks, the guest connects again and counts on.
. /tests/lib.sh
bb=/bin/busybox
port=$(arg port)
[ -n "$port" ] || fail "no vessel.port= on the command line"
wait_for /sys/class/net/eth0 300
wait_for /dev/hvc0 300
wait_for /dev/vda 300
$bb ip link set lo up
$bb ip link set eth0 up
$bb ip addr add 10.0.2.15/24 dev eth0
$bb ip route add default via 10.0.2.2 dev eth0
# A connection nobody answers any more fails after a few retransmissions (seconds), not
# after the default 15 (about 15 minutes).
echo 4 > /proc/sys/net/ipv4/tcp_retries2
echo 0 > /tmp/n
count() {
    while :; do
        n=$(($($bb cat /tmp/n) + 1))
        echo "$n" > /tmp/n
        echo "tick $n" | $bb dd of=/dev/vda bs=512 seek="$n" conv=notrunc,fsync 2>/dev/null ||
            echo "VESSEL-ERROR disk write of tick $n failed" >/dev/console
        echo "console tick $n" > /dev/hvc0
        echo "tick $n"
        $bb sleep 1
    done
}
while :; do
    count | $bb nc 10.0.2.2 "$port" || true
    echo "VESSEL-RECONNECT after tick $($bb cat /tmp/n)"
    $bb sleep 1
done
