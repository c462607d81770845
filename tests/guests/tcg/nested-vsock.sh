# nested-vsock: vessel's virtio-vsock through Linux's vsock drivers, both ways. The host
# listens at UDS_PATH_5000 and, once the guest's client has talked to it, connects to
# UDS_PATH with "CONNECT 6000" to reach the guest's listener. /bin/vsockt (a static C
# program, tests/guests/vsock/vsockt.c) comes in a second cpio the test appends.
. /tests/lib.sh
wait_for /dev/vsock 120
result "vsock_cid=$(vsockt cid)"
vsockt listen 6000 "pong from guest" > /tmp/listen.out &
listener=$!
tries=0
until grep -q listening /tmp/listen.out 2>/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -le 1200 ] || fail "the guest listener did not start"
    sleep 0.1
done
got=$(vsockt connect 2 5000 "hello from guest") || fail "guest to host failed"
result "vsock_client=$got"
wait "$listener" || fail "the guest listener failed"
result "vsock_server=$(sed -n 2p /tmp/listen.out)"
