#!/usr/bin/env bash
# iperf3 through vessel's NAT vs passt's own tap mode (pasta), same run, same host.
# A namespace stands in for the guest: with vessel, its tap eth0 is relayed to vessel's
# nat backend (a passt helper over its socket); with the reference, pasta drives the
# namespace's tap directly. Each at MTU 65520 (vessel's NAT offers it with
# VIRTIO_NET_F_MTU; passt's default) and at 1500 (a guest that ignores the offer). The iperf3 server listens on the host's loopback, reached
# through the gateway address 10.0.2.2 in both set-ups (vessel's NAT opts in with
# --host-loopback, i.e. --nic nat,host-loopback=on).
# Needs root, iproute2, passt, iperf3, busybox-static. Usage: [RUNS=3] bench/net.sh [SECONDS]
# Prints the median of RUNS runs per cell (set-ups alternate within each run).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
RUNS=${RUNS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p net --example netns_nat
BIN=$CARGO_TARGET_DIR/release/examples/netns_nat
V=vbench-vessel-$$ W=vbench-vessel1500-$$ P=vbench-pasta-$$ Q=vbench-pasta1500-$$
cleanup() {
    exec 3>&- 2>/dev/null || true
    for ns in $V $W $P $Q; do
        ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del $ns 2>/dev/null || true
    done
    for pidfile in "$TMPD"/*.pid; do [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true; done
    rm -rf "$TMPD"
    [ -n "${SERVER:-}" ] && kill $SERVER 2>/dev/null || true
    [ -n "${RELAY:-}" ] && kill $RELAY 2>/dev/null || true
    [ -n "${RELAY2:-}" ] && kill $RELAY2 2>/dev/null || true
}
TMPD=$(mktemp -d)
trap cleanup EXIT
iperf3 -s -B 127.0.0.1 -p 5211 >/dev/null 2>&1 & SERVER=$!

ip netns add $V; ip -n $V link set lo up
coproc RELAYPROC { "$BIN" $V --host-loopback; }
RELAY=$RELAYPROC_PID
read -r ready <&"${RELAYPROC[0]}"
ip -n $V link set eth0 mtu 65520 up
ip -n $V addr add 10.0.2.15/24 dev eth0
ip -n $V route add default via 10.0.2.2
ip netns add $W; ip -n $W link set lo up
coproc RELAYPROC2 { "$BIN" $W --host-loopback; }
RELAY2=$RELAYPROC2_PID
read -r ready <&"${RELAYPROC2[0]}"
ip -n $W link set eth0 up
ip -n $W addr add 10.0.2.15/24 dev eth0
ip -n $W route add default via 10.0.2.2

ip netns add $P; ip -n $P link set lo up
pasta -4 -q --runas 0 -P "$TMPD/p.pid" --netns $P -a 10.0.2.15 -n 24 -g 10.0.2.2 --config-net 2>/dev/null
# The same with the MTU vessel's NAT gives its guest (1500).
ip netns add $Q; ip -n $Q link set lo up
pasta -4 -q --runas 0 -P "$TMPD/q.pid" -m 1500 --netns $Q -a 10.0.2.15 -n 24 -g 10.0.2.2 --config-net 2>/dev/null
sleep 1

rate() { # netns, extra iperf3 args -> Gbit/s (receiver side)
    ip netns exec "$1" iperf3 -c 10.0.2.2 -p 5211 -t "$SECS" -J ${2:-} |
        python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
ratio() { python3 -c "print('%.2f' % ($1/$2))"; }
median() { python3 -c "import statistics,sys; print('%.2f' % statistics.median(map(float, sys.argv[1:])))" "$@"; }
printf '%-16s %12s %12s %7s %12s %12s %7s\n' "Gbit/s" vessel-65520 pasta-65520 ratio vessel-1500 pasta-1500 ratio
for dir in "guest->host:" "host->guest:-R"; do
    name=${dir%%:*} args=${dir#*:}
    vs=() ps=() ws=() qs=()
    for _ in $(seq "$RUNS"); do
        vs+=("$(rate $V "$args")") ps+=("$(rate $P "$args")")
        ws+=("$(rate $W "$args")") qs+=("$(rate $Q "$args")")
    done
    echo "  $name runs: vessel-65520 ${vs[*]} | pasta-65520 ${ps[*]} | vessel-1500 ${ws[*]} | pasta-1500 ${qs[*]}" >&2
    v=$(median "${vs[@]}") p=$(median "${ps[@]}") w=$(median "${ws[@]}") q=$(median "${qs[@]}")
    printf '%-16s %12s %12s %7s %12s %12s %7s\n' "$name" "$v" "$p" "$(ratio $v $p)" "$w" "$q" "$(ratio $w $q)"
done
