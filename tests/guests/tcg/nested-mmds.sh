# nested-mmds: the guest reads the MMDS (V2) at 169.254.169.254 through vessel's virtio-net:
# a static address and a route for the MMDS on eth0 (no DHCP), then busybox nc sends
# `PUT /latest/api/token` and GETs with and without the token. The host PUT the document
# and checks the results.
. /tests/lib.sh
bb=/bin/busybox
wait_for /sys/class/net/eth0 300
$bb ip link set lo up
$bb ip link set eth0 up
$bb ip addr add 10.0.2.15/24 dev eth0
$bb ip route add 169.254.169.254/32 dev eth0
# http METHOD PATH [HEADER]: one request on its own connection; the whole response.
http() {
    { printf '%s %s HTTP/1.1\r\nHost: 169.254.169.254\r\n' "$1" "$2"
      [ -z "${3:-}" ] || printf '%s\r\n' "$3"
      printf '\r\n'; } | $bb nc -w 60 169.254.169.254 80 | $bb tr -d '\r'
}
status() { echo "$1" | $bb head -n 1; }
body() { echo "$1" | $bb sed '1,/^$/d'; }
r=$(http GET /latest/meta-data/instance-id) || fail "GET without a token: no answer"
result "mmds_no_token=$(status "$r")"
# The longest TTL the MMDS grants: each process this script starts takes seconds where ring 0
# is emulated, and a 300 s token expired before its GET in one CI run.
r=$(http PUT /latest/api/token "X-metadata-token-ttl-seconds: 21600") || fail "no token"
result "mmds_token_status=$(status "$r")"
token=$(body "$r")
[ -n "$token" ] || fail "empty token"
r=$(http GET /latest/meta-data/instance-id "X-metadata-token: $token") || fail "GET failed"
result "mmds_get_status=$(status "$r")"
result "mmds_instance_id=$(body "$r")"
r=$(http GET /latest/meta-data/ "X-metadata-token: $token") || fail "listing failed"
result "mmds_listing=$(body "$r" | $bb tr '\n' ',')"
# A port forward added while the VM runs (docs/networking.md): the host forwards a port to
# 8000 through vessel's relay and sends a line; nc answers it. The NIC is nat: passt's
# frames (its ARP reply for the gateway here) tell the relay the gateway's MAC.
$bb ip route add default via 10.0.2.2 dev eth0
$bb ping -c 1 -W 10 10.0.2.2 >/dev/null 2>&1 || true
printf '#!/bin/sh\nread -r line\necho "$line" > /tmp/received\necho "guest heard: $line"\n' > /tmp/reply.sh
$bb chmod 755 /tmp/reply.sh
$bb nc -l -p 8000 -e /tmp/reply.sh &
listener=$!
tries=0
# A listening socket on 8000 (state 0A), IPv4 or dual-stack IPv6 (busybox nc listens on ::).
until $bb cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | $bb grep -q ": 0*:1F40 0*:0000 0A"; do
    tries=$((tries + 1))
    [ "$tries" -le 600 ] || fail "nc is not listening on 8000"
    sleep 0.1
done
echo "VESSEL-LISTENING 8000"
wait "$listener" || fail "nc failed"
result "fwd_received=$($bb cat /tmp/received)"
