# net-wget: DHCP lease, then fetch http://ROUTER:vessel.port/vessel.file (the router is
# the host's loopback under vessel's NAT) and report its sha256.
. /tests/lib.sh
dhcp eth0
url="http://$(cat /tmp/router):$(arg port)/$(arg file)"
wget -q -O /tmp/fetched "$url" || fail "wget $url failed"
result "fetched_bytes=$(wc -c < /tmp/fetched)"
result "sha256_fetched=$(sha256 /tmp/fetched)"
