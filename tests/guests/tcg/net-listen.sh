# net-listen: DHCP lease, then one TCP connection on vessel.port served by net-reply.sh;
# prints VESSEL-LISTENING once the socket listens and the line the host sent afterwards.
. /tests/lib.sh
dhcp eth0
port=$(arg port)
nc -l -p "$port" -e /tests/net-reply.sh &
listener=$!
hexport=$(printf '%04X' "$port")
tries=0
# A listening socket on the port (state 0A), IPv4 or dual-stack IPv6.
until cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q ": 0*:$hexport 0*:0000 0A"; do
    tries=$((tries + 1))
    [ "$tries" -le 100 ] || fail "nc is not listening on $port"
    sleep 0.1
done
echo "VESSEL-LISTENING $port"
wait "$listener" || fail "nc failed"
result "guest_received=$(cat /tmp/received)"
