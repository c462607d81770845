#!/usr/bin/env bash
# passt-upload-repro.sh - show, without vessel, that the installed passt loses long uploads
# from its guest: a namespace behind `pasta` (passt's tap mode, the same TCP code vessel's
# NAT runs in socket mode) uploads 1 GiB to a listener on the host's loopback. With
# Debian 12's passt (0.0~git20230309) the connection is reset after some tens of MiB.
# Needs root, passt, python3. Exit status 0 when the whole upload arrives.
set -euo pipefail
NS=passt-repro-$$ PORT=${PORT:-5390} TMPD=$(mktemp -d)
cleanup() {
    [ -s "$TMPD/pasta.pid" ] && kill "$(cat "$TMPD/pasta.pid")" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    [ -n "${SINK:-}" ] && kill "$SINK" 2>/dev/null || true
    rm -rf "$TMPD"
}
trap cleanup EXIT
ip netns add "$NS"; ip -n "$NS" link set lo up
pasta -4 -q --runas 0 -P "$TMPD/pasta.pid" -m 1500 --netns "$NS" -a 10.0.2.15 -n 24 -g 10.0.2.2 --config-net 2>/dev/null
python3 - "$PORT" > "$TMPD/sink.out" <<'PY' & SINK=$!
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('127.0.0.1', int(sys.argv[1]))); l.listen(1)
c, _ = l.accept(); n = 0
while True:
    d = c.recv(1 << 20)
    if not d: break
    n += len(d)
print(n)
PY
sleep 1
status=0
ip netns exec "$NS" python3 - "$PORT" <<'PY' || status=$?
import socket, sys
s = socket.create_connection(('10.0.2.2', int(sys.argv[1])))
block = bytes(range(256)) * 4096
for _ in range(1024):
    s.sendall(block)
s.close()
PY
wait "$SINK" || true; SINK=
echo "passt $(dpkg-query -W -f '${Version}' passt 2>/dev/null): host received $(cat "$TMPD/sink.out") of $((1 << 30)) bytes"
exit "$status"
