# nested-vsock-bench: round-trip latency and stream throughput from the guest to host
# servers through vessel's virtio-vsock, and for reference in the same boot the same
# measures through vessel's virtio-net (TCP to the NAT's router: the host's loopback).
# bench/vsock.sh runs it: vessel.rounds=N round trips, vessel.mib=M MiB per stream, three
# streams each way; vessel.port=P is the host's echo port (P+1 the sink) on both paths.
. /tests/lib.sh
wait_for /dev/vsock 300
wait_for /sys/class/net/eth0 300
# A static address, as passt would lease it (the nested initramfs has only the busybox
# links its /init needs: udhcpc's event script found no `ip` there).
bb=/bin/busybox
$bb ip link set lo up
$bb ip link set eth0 up
$bb ip addr add 10.0.2.15/24 dev eth0
$bb ip route add default via 10.0.2.2 dev eth0
router=10.0.2.2
rounds=$(arg rounds)
mib=$(arg mib)
port=$(arg port)
for path in "vsock vsock:2" "tcp tcp:$router"; do
    set -- $path
    out=$(vsockt rr "$2:$port" "$rounds") || fail "$1 round trips failed"
    result "$1_rr $out"
    for i in 1 2 3; do
        out=$(vsockt stream "$2:$((port + 1))" "$mib") || fail "$1 stream $i failed"
        result "$1_stream $out"
    done
done
