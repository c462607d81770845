# net-hammer: DHCP lease, then endless downloads of http://ROUTER:vessel.port/vessel.file,
# for the host to kill QEMU in the middle of one. Prints VESSEL-HAMMER-RUNNING once data flows.
. /tests/lib.sh
dhcp eth0
url="http://$(cat /tmp/router):$(arg port)/$(arg file)"
i=0
while :; do
    wget -q -O /dev/null "$url" || fail "wget $url failed"
    i=$((i + 1))
    [ "$i" = 1 ] && echo "VESSEL-HAMMER-RUNNING"
done
