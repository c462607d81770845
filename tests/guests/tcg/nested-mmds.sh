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
r=$(http PUT /latest/api/token "X-metadata-token-ttl-seconds: 300") || fail "no token"
result "mmds_token_status=$(status "$r")"
token=$(body "$r")
[ -n "$token" ] || fail "empty token"
r=$(http GET /latest/meta-data/instance-id "X-metadata-token: $token") || fail "GET failed"
result "mmds_get_status=$(status "$r")"
result "mmds_instance_id=$(body "$r")"
r=$(http GET /latest/meta-data/ "X-metadata-token: $token") || fail "listing failed"
result "mmds_listing=$(body "$r" | $bb tr '\n' ',')"
