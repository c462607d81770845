# net-wget: DHCP lease, then fetch http://ROUTER:vessel.port/vessel.file (the router is
# the host's loopback under vessel's NAT) and report its sha256 and the transfer rate.
. /tests/lib.sh
dhcp eth0
url="http://$(cat /tmp/router):$(arg port)/$(arg file)"
start=$(now_us)
wget -q -O /tmp/fetched "$url" || fail "wget $url failed"
us=$(($(now_us) - start))
bytes=$(wc -c < /tmp/fetched)
result "fetched_bytes=$bytes"
result "fetch_rate=$(awk "BEGIN { printf \"%.1f MiB/s (%.3f s)\", $bytes / 1048576 * 1e6 / $us, $us / 1e6 }")"
result "sha256_fetched=$(sha256 /tmp/fetched)"
